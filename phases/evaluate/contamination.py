"""Benchmark contamination: word n-gram overlap between evaluation items and the training data.

As GPT-3 and lm-eval's decontamination do (lm-eval 0.4 cannot call its own from
``simple_evaluate``): text is lowercased, ASCII punctuation is deleted (``"don't"`` ->
``"dont"``), and the rest is split on whitespace; an item is contaminated when it shares at
least one ``n``-gram (13 words by default) with any training document. An item shorter than
``n`` words has no n-gram, so, as in lm-eval, it is never flagged: it is counted ``unchecked``.

The n-grams are kept as word tuples, not hashed to integers: the index lives in memory only
(nothing is persisted, so hash stability across processes does not matter), tuples cannot
collide, and they hash in C, which keeps the single pass over the training side fast. Were the
index ever persisted, hash ``" ".join(gram)`` with ``hashlib.blake2b(digest_size=8)`` instead.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phases.errors import ConfigError, DataError

POLICIES = ("flag", "clean", "fail")
MAX_EXAMPLES = 3
_PUNCTUATION = string.punctuation.encode()

Ngram = tuple[str, ...]


class ContaminationError(DataError):
    """Evaluation items overlap the training data and ``evaluate.contamination_policy`` is ``fail``."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report  # the JSON-safe report, so the caller can still write contamination.json


def words(text: str) -> list[str]:
    """The normalised words of ``text``: lowercased, punctuation deleted, split on whitespace."""
    # bytes.translate is ~9x faster than str.translate; ASCII bytes never occur inside a
    # multi-byte UTF-8 sequence, so deleting them cannot break the decode.
    return text.lower().encode("utf-8", "surrogatepass").translate(None, _PUNCTUATION).decode("utf-8", "surrogatepass").split()


def _windows(seq: list[str], n: int) -> Iterator[Ngram]:
    return zip(*(seq[i:] for i in range(n)))


def ngrams(text: str, n: int = 13) -> set[Ngram]:
    """The distinct word ``n``-grams of ``text`` (empty when it has fewer than ``n`` words)."""
    return set(_windows(words(text), n))


@dataclass(frozen=True)
class TaskReport:
    """What the scan found for one task. ``rate`` is over the checked items (0.0 if none)."""

    task: str
    n: int
    doc_indices: tuple[int, ...]  # every item's doc index, in the order given
    checked: int
    contaminated: tuple[int, ...]  # sorted doc indices of contaminated items
    examples: tuple[dict[str, Any], ...] = ()  # up to 3 {doc_index, ngram, origin}
    origins: dict[str, int] = field(default_factory=dict)  # contaminated items per training origin

    @property
    def items(self) -> int:
        return len(self.doc_indices)

    @property
    def unchecked(self) -> int:
        return self.items - self.checked

    @property
    def rate(self) -> float:
        return len(self.contaminated) / self.checked if self.checked else 0.0

    def clean_indices(self) -> list[int]:
        """Doc indices of the items not contaminated (unchecked ones included), sorted."""
        bad = set(self.contaminated)
        return sorted(i for i in self.doc_indices if i not in bad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.n,
            "items": self.items,
            "checked": self.checked,
            "unchecked": self.unchecked,
            "contaminated": len(self.contaminated),
            "rate": self.rate,
            "contaminated_indices": list(self.contaminated),
            "examples": [dict(e) for e in self.examples],
            "origins": dict(self.origins),
        }


def _index(items: Mapping[str, Sequence[tuple[int, str]]], n: int) -> tuple[dict[Ngram, list[tuple[str, int]]], dict[str, int]]:
    """n-gram -> [(task, doc_index)] over the task side, and the checked count per task."""
    index: dict[Ngram, list[tuple[str, int]]] = {}
    checked: dict[str, int] = {}
    for task, pairs in items.items():
        seen: set[int] = set()
        checked[task] = 0
        for doc_index, text in pairs:
            if not isinstance(doc_index, int) or doc_index < 0 or doc_index in seen:
                raise DataError(
                    f"task {task!r}: doc index {doc_index!r} is repeated, negative or not an int; give each item its index in the eval docs"
                )
            if not isinstance(text, str):
                raise DataError(f"task {task!r} doc {doc_index}: text is {type(text).__name__}; render the item (context + target) to a str")
            seen.add(doc_index)
            grams = ngrams(text, n)
            checked[task] += bool(grams)
            for gram in grams:
                index.setdefault(gram, []).append((task, doc_index))
    return index, checked


def scan(items: Mapping[str, Sequence[tuple[int, str]]], training_texts: Iterable[str | tuple[str, str]], n: int = 13) -> dict[str, TaskReport]:
    """Flag every item sharing an ``n``-gram with a training text; one pass over ``training_texts``.

    ``items``: per task, ``(doc_index, text)`` pairs. ``training_texts``: strings, or
    ``(origin, text)`` pairs as :func:`training_texts` yields. Memory is bounded by the task
    side (its n-gram index) plus one training document at a time.
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"contamination n-gram size n={n!r} must be a positive int (13 as GPT-3 and lm-eval use)")
    index, checked = _index(items, n)
    keys = index.keys()
    flagged: dict[tuple[str, int], None] = {}
    examples: dict[str, list[dict[str, Any]]] = {t: [] for t in items}
    origins: dict[str, dict[str, set[int]]] = {t: {} for t in items}
    for entry in training_texts:
        if not index:
            break
        origin, text = entry if isinstance(entry, tuple) else ("training", entry)
        seq = words(text)
        if len(seq) < n:
            continue
        for gram in keys & _windows(seq, n):  # set intersection in C: the hot loop
            for task, doc_index in index[gram]:
                origins[task].setdefault(origin, set()).add(doc_index)
                if (task, doc_index) not in flagged:
                    flagged[(task, doc_index)] = None
                    if len(examples[task]) < MAX_EXAMPLES:
                        examples[task].append({"doc_index": doc_index, "ngram": " ".join(gram), "origin": origin})
    reports = {}
    for task, pairs in items.items():
        bad = sorted(i for i, _ in pairs if (task, i) in flagged)
        found = {o: len(s) for o, s in sorted(origins[task].items())}
        reports[task] = TaskReport(task, n, tuple(i for i, _ in pairs), checked[task], tuple(bad), tuple(examples[task]), found)
    return reports


def _messages_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno} is not JSON ({e.msg}); rerun the align phase or fix that line") from e


def training_texts(data_dir: Path, align_dir: Path | None = None) -> Iterator[tuple[str, str]]:
    """``(origin, text)`` of the training data: the data phase's train split (``pretrain:<source>``)
    and, with ``align_dir``, ``sft_train.jsonl`` (``align:sft``) and ``preference_train.jsonl``
    (``align:preference``, prompt + chosen + rejected), message contents joined by newlines.
    Absent align files are skipped; an absent ``align_dir`` is an error."""
    from phases.data.io import read_split

    for row in read_split(Path(data_dir), "train"):
        yield f"pretrain:{row.get('source') or 'unknown'}", row.get("text") or ""
    if align_dir is None:
        return
    align_dir = Path(align_dir)
    if not align_dir.is_dir():
        raise DataError(f"align output {align_dir} is not a directory: pass the align phase's output directory, or align_dir=None")
    sft, pref = align_dir / "sft_train.jsonl", align_dir / "preference_train.jsonl"
    if sft.is_file():
        for row in _jsonl(sft):
            yield "align:sft", _messages_text(row.get("messages"))
    if pref.is_file():
        for row in _jsonl(pref):
            yield "align:preference", "\n".join(_messages_text(row.get(k)) for k in ("prompt", "chosen", "rejected"))


def _describe(r: TaskReport) -> str:
    ex = f" (e.g. doc {r.examples[0]['doc_index']}: {r.examples[0]['ngram']!r} in {r.examples[0]['origin']})" if r.examples else ""
    return f"{r.task}: {len(r.contaminated)}/{r.checked} checked items ({r.rate:.1%}){ex}"


def apply_policy(reports: Mapping[str, TaskReport], policy: str, tasks: Iterable[str] | None = None) -> dict[str, Any]:
    """Act on a scan by ``evaluate.contamination_policy`` over ``tasks`` (default: all scanned).

    Returns ``{"policy", "contaminated_tasks", "samples", "summary", "report"}``: ``samples`` is
    ``None`` (evaluate everything) unless the policy is ``clean`` and some task is contaminated;
    then ``{task: sorted clean doc indices}`` for the contaminated tasks only, as lm-eval's
    ``simple_evaluate(samples=...)`` takes (tasks missing from it are evaluated in full).
    ``report`` is JSON-safe, for ``contamination.json``. Under ``clean``, a task left with no
    clean item is listed in ``unscored`` (and left out of ``samples``): the caller drops it from
    scoring, since lm-eval reads an empty selection as "every item".
    """
    if policy not in POLICIES:
        raise ConfigError(f"evaluate.contamination_policy={policy!r} is not one of {', '.join(POLICIES)}")
    names = list(reports) if tasks is None else list(tasks)
    missing = [t for t in names if t not in reports]
    if missing:
        raise ConfigError(f"tasks {missing} were not scanned for contamination (scanned: {sorted(reports)}); scan every configured task")
    bad = sorted(t for t in names if reports[t].contaminated)
    summary = f"{len(bad)} of {len(names)} tasks contaminated" + (": " + "; ".join(_describe(reports[t]) for t in bad) if bad else "")
    report = {"policy": policy, "contaminated_tasks": bad, "tasks": {t: reports[t].to_dict() for t in names}}
    samples: dict[str, list[int]] | None = None
    unscored: list[str] = []
    if bad and policy == "fail":
        raise ContaminationError(
            f"benchmark contamination: {summary}. Set evaluate.contamination_policy=clean to evaluate only the clean items, "
            "or flag to report it and evaluate everything",
            report,
        )
    if bad and policy == "clean":
        samples = {t: reports[t].clean_indices() for t in bad}
        unscored = sorted(t for t, idx in samples.items() if not idx)
        samples = {t: idx for t, idx in samples.items() if idx}
        if unscored:
            summary += f"; not scored (no clean item): {', '.join(unscored)}"
        report["samples"], report["unscored"] = samples, unscored
    return {"policy": policy, "contaminated_tasks": bad, "samples": samples, "summary": summary, "report": report, "unscored": unscored}


def report_markdown(reports: Mapping[str, TaskReport]) -> str:
    """A Markdown table (task | items | checked | contaminated | rate) for an MLflow/Prefect artifact."""
    n = next(iter(reports.values())).n if reports else 13
    lines = [f"Benchmark contamination ({n}-gram overlap with the training data)", "", "| task | items | checked | contaminated | rate |"]
    lines.append("|---|---:|---:|---:|---:|")
    lines += [f"| {r.task} | {r.items} | {r.checked} | {len(r.contaminated)} | {r.rate:.1%} |" for r in reports.values()]
    return "\n".join(lines) + "\n"
