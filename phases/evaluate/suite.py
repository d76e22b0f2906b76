"""The lm-eval suite: task files built from held-out data, checked, then scored through lm-eval.

Our task YAMLs live in ``lm_eval_tasks/`` beside this module (templates with metrics and
versions); :func:`build_suite` writes their data files from the data phase's validation
split and the align phase's held-out chats, plus a complete YAML per task, into a suite
folder whose YAMLs name their data *relatively* (the folder is part of a published output,
its fingerprint must not depend on where it was staged). :func:`runnable` copies the YAMLs
with absolute data paths into a temporary folder for lm-eval (``datasets`` resolves
relative paths against the working directory). Any other lm-eval task runs too when its
YAML sits in one of ``evaluate.task_dirs`` and names local data files.

:func:`load_tasks` loads every configured task through lm-eval's ``TaskManager`` and renders
each item, so a missing task, a bad YAML or data that does not fit its template fails with
one message *before* a model is loaded; the rendered texts feed the contamination check.
:func:`score` runs ``lm_eval.simple_evaluate`` (HF backend, CPU unless CUDA) on one model
and :func:`flatten` turns its results into rows that MLflow can take (lm-eval's keys carry a
filter suffix, ``acc,none``, which MLflow rejects).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from phases.config import EvaluateConfig
from phases.errors import ConfigError, DataError
from phases.evaluate.tasks import build_questions

log = logging.getLogger("lifecycle.evaluate")

TEMPLATES = Path(__file__).with_name("lm_eval_tasks")
HELDOUT, INSTRUCT_MC, INSTRUCT_GEN, PPL = "lifecycle_heldout_mc", "lifecycle_instruct_mc", "lifecycle_instruct_gen", "lifecycle_ppl"
OURS = (HELDOUT, INSTRUCT_MC, INSTRUCT_GEN, PPL)
README_HINT = "see the README, 'Evaluate on your own or standard lm-eval tasks'"


def template(name: str) -> dict[str, Any]:
    return yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text())


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_task(suite: Path, name: str, config: dict[str, Any]) -> None:
    (suite / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def instruct_items(align_dir: Path, *, limit: int, num_choices: int, seed: int) -> list[dict[str, Any]]:
    """Held-out chats of the align phase as ``{id, prompt, answer, choices, label}``.

    The prompt is the conversation up to the last assistant turn, rendered with the aligned
    model's chat template (``add_generation_prompt``); the choices are the true answer and
    the answers of other held-out chats, in a seeded order.
    """
    from transformers import AutoTokenizer

    path = Path(align_dir) / "sft_eval.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing: the instruction tasks need the align phase's held-out chats; drop them from evaluate.tasks")
    chats = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chats = [c for c in chats if c.get("messages") and c["messages"][-1].get("role") == "assistant"]
    answers = sorted({c["messages"][-1]["content"].strip() for c in chats})
    if len(answers) < num_choices:
        raise DataError(f"{path} has {len(answers)} distinct answers, fewer than evaluate.num_choices={num_choices}: lower it")
    tokenizer = AutoTokenizer.from_pretrained(align_dir)
    rng = random.Random(seed)
    items = []
    for chat in rng.sample(chats, min(limit, len(chats))):
        answer = chat["messages"][-1]["content"].strip()
        prompt = tokenizer.apply_chat_template(chat["messages"][:-1], tokenize=False, add_generation_prompt=True)
        choices = rng.sample([a for a in answers if a != answer], num_choices - 1)
        label = rng.randrange(num_choices)
        choices.insert(label, answer)
        items.append({"id": str(chat.get("id", len(items))), "prompt": prompt, "answer": answer, "choices": choices, "label": label})
    return items


def ppl_items(docs: Sequence[Mapping[str, Any]], *, per_source: int, chars: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Per source, up to ``per_source`` validation documents (seeded, id order first), cut to ``chars``."""
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for d in sorted(docs, key=lambda d: str(d["id"])):
        by_source.setdefault(str(d.get("source") or "unknown"), []).append(d)
    rng = random.Random(seed)
    return {
        src: [{"id": str(d["id"]), "source": src, "text": d["text"][:chars]} for d in rng.sample(group, min(per_source, len(group)))]
        for src, group in sorted(by_source.items())
    }


def build_suite(cfg: EvaluateConfig, *, data_dir: Path, align_dir: Path, suite: Path) -> dict[str, Any]:
    """Write the data files and complete YAMLs of our configured tasks into ``suite``.

    Returns ``{"tasks": [lm-eval task names, per-source ones expanded], "items": {task: n}}``.
    """
    from phases.data.io import read_split

    suite = Path(suite)
    suite.mkdir(parents=True, exist_ok=True)
    wanted = [t for t in cfg.tasks if t in OURS]
    built: dict[str, int] = {}
    if HELDOUT in wanted or PPL in wanted:
        docs = read_split(data_dir, "validation")
        if not docs:
            raise DataError(f"the validation split under {data_dir} is empty: raise data.val_fraction or add documents")
    if HELDOUT in wanted:
        questions = build_questions(
            docs,
            num_examples=cfg.num_examples,
            num_choices=cfg.num_choices,
            context_chars=cfg.context_chars,
            continuation_chars=cfg.continuation_chars,
            seed=cfg.seed,
        )
        built[HELDOUT] = _write_jsonl(suite / "heldout_mc.jsonl", questions)
        _write_task(suite, HELDOUT, template(HELDOUT))
    if INSTRUCT_MC in wanted or INSTRUCT_GEN in wanted:
        items = instruct_items(align_dir, limit=cfg.instruct_examples, num_choices=cfg.num_choices, seed=cfg.seed)
        n = _write_jsonl(suite / "instruct.jsonl", items)
        for name in (INSTRUCT_MC, INSTRUCT_GEN):
            if name in wanted:
                built[name] = n
                _write_task(suite, name, template(name))
    if PPL in wanted:
        base = template(PPL)
        for src, rows in ppl_items(docs, per_source=cfg.perplexity_docs, chars=cfg.perplexity_chars, seed=cfg.seed).items():
            name = f"{PPL}_{_slug(src)}"
            built[name] = _write_jsonl(suite / f"ppl_{_slug(src)}.jsonl", rows)
            _write_task(suite, name, {"task": name, **base, "dataset_kwargs": {"data_files": {"test": f"ppl_{_slug(src)}.jsonl"}}})
    names = [n for t in cfg.tasks for n in ([k for k in built if k.startswith(PPL + "_")] if t == PPL else [t])]
    return {"tasks": names, "items": built}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in s)


def fingerprint(suite: Path, task_dirs: Sequence[str] = ()) -> str:
    """A digest of every task file (ours and the configured extra folders): equal digests mean
    the same items under the same templates, so scores are comparable."""
    h = hashlib.sha256()
    for root in (Path(suite), *map(Path, task_dirs)):
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def runnable(suite: Path, dst: Path) -> Path:
    """Copies of the suite's YAMLs naming their data files absolutely (lm-eval reads these)."""
    suite, dst = Path(suite).resolve(), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in suite.glob("*.yaml"):
        config = yaml.safe_load(f.read_text())
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        config["dataset_kwargs"] = {**config.get("dataset_kwargs", {}), "data_files": {k: str(suite / v) for k, v in files.items()}}
        (dst / f.name).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return dst


def task_manager(include: Sequence[Path | str]):
    from lm_eval.tasks import TaskManager

    # include_defaults=False: indexing lm-eval's thousands of built-in YAMLs takes seconds and
    # their data is on the hub, which is unreachable; a standard task runs from a copy of its
    # YAML in evaluate.task_dirs that names local files.
    missing = [str(p) for p in include if not Path(p).is_dir()]
    if missing:
        raise ConfigError(f"evaluate.task_dirs: {missing} not a folder; give folders of lm-eval task YAMLs")
    with contextlib.redirect_stdout(io.StringIO()):
        return TaskManager(include_path=[str(p) for p in include], include_defaults=False)


def _tasks_in(obj: Any) -> dict[str, Any]:
    """lm-eval's loaded tasks ({name: Task} or nested {group: {...}}) flattened to {name: Task}."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_tasks_in(value))
        elif value is not None:
            out[getattr(value, "task_name", None) or getattr(value.config, "task", str(key))] = value
    return out


def load_tasks(tm, names: Sequence[str]) -> dict[str, Any]:
    """Every configured task loaded and every item rendered: ``{task: Task}``, or one clear error."""
    known = set(tm.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        broken = unparsable(tm.include_path or [])
        why = f"; these YAMLs do not parse (lm-eval skips them): {'; '.join(broken)}" if broken else ""
        raise ConfigError(
            f"evaluate.tasks: {unknown} not found; known: {sorted(known)[:20]}{why}. "
            f"Put a task's YAML in a folder of evaluate.task_dirs ({README_HINT})"
        )
    tasks: dict[str, Any] = {}
    for name in names:
        try:
            tasks.update(_tasks_in(tm.load_task_or_group([name])))
        except FileNotFoundError as e:
            raise DataError(f"task {name}: a data file is missing ({_short(e)}); fix dataset_kwargs.data_files in its YAML") from None
        except Exception as e:
            what = "its data does not fit its template" if type(e).__name__ == "UndefinedError" else "it does not load"
            raise DataError(f"task {name}: {what} ({type(e).__name__}: {_short(e)}); check its YAML and data ({README_HINT})") from None
    for name, task in tasks.items():
        docs = list(task.eval_docs)
        if not docs:
            raise DataError(f"task {name} has no items: its data file is empty")
        for i, doc in enumerate(docs):
            try:
                render(task, doc)
            except Exception as e:
                raise DataError(
                    f"task {name}, item {i}: its data does not fit the task's template ({type(e).__name__}: {_short(e)}); "
                    f"the item has fields {sorted(doc)}"
                ) from None
    return tasks


class _AnyTagLoader(yaml.SafeLoader):
    """Parses lm-eval YAMLs (``!function module.fn`` tags) only to find syntax errors."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def unparsable(dirs: Sequence[Path | str]) -> list[str]:
    """``file: error`` for each YAML under ``dirs`` that does not parse."""
    bad = []
    for d in dirs:
        for f in sorted(Path(d).rglob("*.yaml")):
            try:
                yaml.load(f.read_text(), Loader=_AnyTagLoader)  # noqa: S506 (a SafeLoader subclass)
            except yaml.YAMLError as e:
                bad.append(f"{f}: {' '.join(str(e).split())[:200]}")
    return bad


def render(task, doc) -> str:
    """What a task shows and asks of one item, as text: context plus the correct target."""
    text = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if not isinstance(target, int) or not 0 <= target < len(choices):
            raise ValueError(f"target {target!r} is not an index into {len(choices)} choices")
        target = choices[target]
    elif isinstance(target, list):
        target = " ".join(map(str, target))
    if not isinstance(text, str) or not isinstance(target, str):
        raise ValueError(f"renders to {type(text).__name__} / {type(target).__name__}, not text")
    return f"{text} {target}".strip()


def items(tasks: Mapping[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Per task, ``(doc_index, rendered text)`` of every item: the contamination check's input."""
    return {name: [(i, render(task, doc)) for i, doc in enumerate(task.eval_docs)] for name, task in tasks.items()}


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else ""


def score(model_dir: Path, tokenizer_dir: Path, tm, names: Sequence[str], cfg: EvaluateConfig, samples: Mapping[str, list[int]]) -> dict[str, Any]:
    """lm-eval's results (JSON-safe, without per-sample logs) for one model on the given tasks."""
    import os

    import lm_eval
    import torch
    from lm_eval.utils import handle_non_serializable

    # lm-eval bootstraps stderrs (chrf, perplexities) in a multiprocessing pool forked from this
    # process: forked from a multi-threaded Prefect worker it deadlocked (seen 2026-12-01, the
    # pool's child stuck on a lock). Its own switch runs the same resampling in-process.
    os.environ["DISABLE_MULTIPROC"] = "1"

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(Path(model_dir).resolve()), "tokenizer": str(Path(tokenizer_dir).resolve()), "dtype": "float32"},
        tasks=list(names),
        num_fewshot=cfg.num_fewshot,
        task_manager=tm,
        device="cuda" if torch.cuda.is_available() else "cpu",  # beside model_args, not inside (lm-eval 0.4.13)
        batch_size=cfg.batch_size,
        samples={k: list(v) for k, v in samples.items()},  # the items to score (limit and the clean subset)
        bootstrap_iters=cfg.bootstrap_iters,
        log_samples=False,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    if results is None:  # only non-zero ranks get None; we run one process
        raise RuntimeError("lm-eval returned no results")
    return json.loads(
        json.dumps(
            {k: results[k] for k in ("results", "versions", "n-samples", "higher_is_better", "configs") if k in results},
            default=handle_non_serializable,
        )
    )


def flatten(results: Mapping[str, Any], model: str) -> list[dict[str, Any]]:
    """One row per (task, metric): value, stderr, items scored, task version, direction."""
    rows = []
    for task, metrics in sorted(results.get("results", {}).items()):
        better = results.get("higher_is_better", {}).get(task, {})
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in sorted(metrics.items()):
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric = key.split(",")[0]
            stderr = metrics.get(key.replace(",", "_stderr,", 1))
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "metric": metric,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "n": n,
                    "version": results.get("versions", {}).get(task),
                    "higher_is_better": better.get(metric),
                }
            )
    return rows


def lookup(rows: Sequence[Mapping[str, Any]], model: str, task_metric: str) -> Mapping[str, Any] | None:
    task, metric = task_metric.split("/", 1)
    return next((r for r in rows if r["model"] == model and r["task"] == task and r["metric"] == metric), None)


def mlflow_metrics(rows: Sequence[Mapping[str, Any]], prefix: str = "eval") -> dict[str, float]:
    """``eval/<model>/<task>/<metric>`` (and ``..._stderr``): names MLflow accepts."""
    out = {}
    for r in rows:
        name = f"{prefix}/{r['model']}/{r['task']}/{r['metric']}"
        out[name] = r["value"]
        if r["stderr"] is not None:
            out[name + "_stderr"] = r["stderr"]
    return out


def table_markdown(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> str:
    """Task x metric rows, one column per model: ``value ± stderr``."""
    keys = sorted({(r["task"], r["metric"]) for r in rows})
    by = {(r["model"], r["task"], r["metric"]): r for r in rows}

    def cell(m, t, k):
        r = by.get((m, t, k))
        if r is None:
            return ""
        return f"{r['value']:.4g}" + (f" ± {r['stderr']:.2g}" if r["stderr"] is not None else "")

    head = "| task | metric | n | " + " | ".join(models) + " |\n|---|---|---|" + "---|" * len(models) + "\n"
    body = "".join(
        f"| {t} | {k} | {next((by[(m, t, k)]['n'] for m in models if (m, t, k) in by), '')} | " + " | ".join(cell(m, t, k) for m in models) + " |\n"
        for t, k in keys
    )
    return head + body


def all_samples(tasks: Mapping[str, Any], limit: int | None) -> dict[str, list[int]]:
    return {name: list(range(len(task.eval_docs)))[:limit] for name, task in tasks.items()}
