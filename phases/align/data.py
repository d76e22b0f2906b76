"""The alignment data sets: validated, quarantined, split; from the corpus recipe or user JSONL.

Two kinds of rows, both in TRL's conversational format:
- SFT: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` (a plain
  ``{"prompt": str, "completion": str}`` row is accepted and turned into that);
- preference: ``{"prompt": [user turns], "chosen": [assistant turn], "rejected": [assistant turn]}``
  (plain strings are accepted for each field).

A row that cannot train is not silently dropped by the trainer: it goes to ``quarantine.jsonl``
with its reason (missing field, empty assistant turn, longer than ``max_length``, chosen equal
to rejected) and is counted. A data set left with no usable row raises :class:`DataError`
naming the file and the reasons, before any training starts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from phases.align.recipes import is_held_out
from phases.errors import DataError

ROLES = {"system", "user", "assistant"}


@dataclass
class Split:
    """A validated data set: train and held-out rows, and what was quarantined (with reasons)."""

    name: str
    source: str
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        reasons = Counter(q["reason"].split(":", 1)[0] for q in self.quarantined)
        return {
            "train": len(self.train),
            "eval": len(self.eval),
            "quarantined": len(self.quarantined),
            **{f"quarantined.{k}": v for k, v in sorted(reasons.items())},
        }


def read_jsonl(path: str | Path) -> list[Any]:
    """Rows of a JSONL file; a line that is not JSON becomes a ``{"__bad_json__": line}`` marker."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{path}: no such file; set align.sft_data / align.preference_data to a JSONL file, or leave it unset for the corpus recipe")
    rows: list[Any] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({"__bad_json__": line[:200]})
    return rows


def _turns(value: Any, role: str) -> list[dict[str, str]] | None:
    """A field as a list of chat turns (a bare string becomes one turn of ``role``); None if malformed."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(t, dict) and t.get("role") in ROLES and isinstance(t.get("content"), str) for t in value):
        return [{"role": t["role"], "content": t["content"]} for t in value]
    return None


def normalize_sft(row: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(row, dict) or "__bad_json__" in row:
        return None, "not a JSON object"
    if "messages" not in row:
        if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        else:
            return None, "missing field: messages (or prompt and completion)"
    else:
        messages = _turns(row["messages"], "user")
        if messages is None:
            return None, "missing field: messages must be a list of {role, content} turns"
    assistant = [t for t in messages if t["role"] == "assistant"]
    if not assistant:
        return None, "empty assistant turn: no assistant message"
    if any(not t["content"].strip() for t in assistant):
        return None, "empty assistant turn"
    return {"id": str(row.get("id") or messages[0]["content"]), "messages": messages}, None


def normalize_preference(row: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(row, dict) or "__bad_json__" in row:
        return None, "not a JSON object"
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        return None, f"missing field: {', '.join(missing)}"
    prompt = _turns(row["prompt"], "user")
    chosen, rejected = _turns(row["chosen"], "assistant"), _turns(row["rejected"], "assistant")
    if prompt is None or chosen is None or rejected is None:
        return None, "missing field: prompt, chosen and rejected must be strings or lists of {role, content} turns"
    if any(not t["content"].strip() for t in chosen + rejected):
        return None, "empty assistant turn"
    if chosen == rejected:
        return None, "chosen equals rejected"
    return {"id": str(row.get("id") or prompt[-1]["content"]), "prompt": prompt, "chosen": chosen, "rejected": rejected}, None


def sft_lengths(tokenizer, row: dict[str, Any]) -> int:
    return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])


def preference_lengths(tokenizer, row: dict[str, Any]) -> int:
    return max(
        len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True, return_dict=True)["input_ids"]) for k in ("chosen", "rejected")
    )


def prepare(
    name: str,
    rows: list[Any],
    source: str,
    normalize: Callable[[Any], tuple[dict[str, Any] | None, str | None]],
    length: Callable[[Any, dict[str, Any]], int],
    tokenizer,
    max_length: int,
    eval_fraction: float,
) -> Split:
    """Validate every row, quarantine the bad ones, split the rest by a hash of the row id."""
    split = Split(name, source)
    for line, raw in enumerate(rows, start=1):
        row, reason = normalize(raw)
        if row is not None:
            n = length(tokenizer, row)
            if n > max_length:
                row, reason = None, f"longer than max_length: {n} tokens > align.max_length={max_length}"
        if row is None:
            split.quarantined.append({"dataset": name, "source": source, "line": line, "reason": reason, "row": raw})
            continue
        (split.eval if is_held_out(row["id"], eval_fraction) else split.train).append(row)
    if not split.train and not split.eval:
        reasons = Counter(q["reason"] for q in split.quarantined)
        detail = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3)) or "the file is empty"
        raise DataError(f"{source}: no usable {name} rows out of {len(rows)} ({detail}); fix the rows or point align.{name}_data elsewhere")
    # A small data set may hash entirely to one side: move one row so both splits exist.
    if not split.eval and len(split.train) >= 2:
        split.eval.append(split.train.pop())
    if not split.train and len(split.eval) >= 2:
        split.train.append(split.eval.pop())
    if not split.train or not split.eval:
        raise DataError(f"{source}: only {len(split.train) + len(split.eval)} usable {name} row; at least 2 are needed (one to train, one held out)")
    return split


def write_quarantine(path: Path, splits: list[Split]) -> int:
    rows = [q for s in splits for q in s.quarantined]
    with Path(path).open("w") as f:
        for q in rows:
            f.write(json.dumps(q, ensure_ascii=False, default=str) + "\n")
    return len(rows)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with Path(path).open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
