"""Phase 6: lm-eval on a held-out multiple-choice task, plus validation perplexity.

The task is built from the data phase's validation split (:mod:`phases.evaluate.tasks`)
and run through lm-eval's Python API against the aligned model; perplexity is measured
on the model phase's packed ``val.bin`` (:mod:`phases.evaluate.perplexity`).

Published under ``out``: ``task/`` (``mc.jsonl`` and a YAML naming it relatively, so the
output's fingerprint does not depend on the staging path), ``report.json`` (lm-eval's
results dict) and ``perplexity.json``. lm-eval itself reads a YAML copy in a temporary
folder that names the absolute path of ``mc.jsonl``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml

from phases.config import EvaluateConfig
from phases.errors import DataError
from phases.evaluate.perplexity import perplexity, read_packed
from phases.evaluate.tasks import TASK_NAME, YAML_FILE, build_questions, task_config, write_task
from phases.metrics import MetricsSink
from phases.refs import PhaseRef


def run_lm_eval(model_dir: Path, data_file: Path, batch_size: int) -> dict[str, Any]:
    """lm-eval's results for the local task on the model at ``model_dir`` (JSON-safe)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    with tempfile.TemporaryDirectory(prefix="lm-eval-task-") as task_dir:
        (Path(task_dir) / YAML_FILE).write_text(yaml.safe_dump(task_config(Path(data_file).resolve()), sort_keys=False))
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={Path(model_dir).resolve()},dtype=float32",
            tasks=[TASK_NAME],
            # include_defaults=False: scanning lm-eval's thousands of built-in YAMLs takes
            # seconds and is useless here; only our task folder is indexed.
            task_manager=TaskManager(include_path=task_dir, include_defaults=False),
            device="cpu",  # beside model_args, not inside it (lm-eval 0.4.13)
            batch_size=batch_size,
            log_samples=False,  # per-sample records would only bloat report.json
        )
    if results is None:  # only non-zero ranks get None; we run a single process
        raise RuntimeError("lm-eval returned no results")
    # lm-eval's own serializer turns numpy scalars and sets into JSON values (as its CLI does).
    return json.loads(json.dumps(results, default=handle_non_serializable))


def mc_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Accuracy figures of our task from lm-eval's results (keys carry a filter suffix: ``acc,none``)."""
    task = results["results"][TASK_NAME]
    out = {"mc_acc": float(task["acc,none"]), "mc_acc_norm": float(task["acc_norm,none"])}
    for key in ("acc_stderr,none", "acc_norm_stderr,none"):
        if isinstance(task.get(key), (int, float)):
            out["mc_" + key.split(",")[0]] = float(task[key])
    return out


def evaluated_count(results: dict[str, Any], default: int) -> int:
    samples = results.get("n-samples", {}).get(TASK_NAME, {})
    return int(samples.get("effective", default))


def validation_perplexity(model_dir: Path, packed_dir: Path, cfg: EvaluateConfig) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    rows = read_packed(packed_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return perplexity(model, rows, batch_size=cfg.batch_size, max_batches=cfg.perplexity_batches)


def build(cfg: EvaluateConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    from phases.data.io import read_split
    from phases.env import offline_env

    offline_env()
    out, model_dir = Path(out), inputs["align"].path
    docs = read_split(inputs["data"].path, "validation")
    if not docs:
        raise DataError(f"the validation split under {inputs['data'].path} is empty: raise data.val_fraction or add documents")
    questions = build_questions(
        docs,
        num_examples=cfg.num_examples,
        num_choices=cfg.num_choices,
        context_chars=cfg.context_chars,
        continuation_chars=cfg.continuation_chars,
        seed=cfg.seed,
    )
    data_file, _ = write_task(questions, out / "task")

    results = run_lm_eval(model_dir, data_file, cfg.batch_size)
    (out / "report.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    ppl = validation_perplexity(model_dir, inputs["model"].path, cfg)
    (out / "perplexity.json").write_text(json.dumps(ppl, indent=2, sort_keys=True))

    mc = mc_metrics(results)
    chance = 1.0 / cfg.num_choices
    sink.log_metrics({**{f"eval/{k}": v for k, v in mc.items()}, "eval/val_perplexity": ppl["perplexity"], "eval/chance_acc": chance})
    sink.log_dict(results.get("results", {}), "eval/lm_eval_results.json")
    return {
        "mc_acc": mc["mc_acc"],
        "mc_acc_norm": mc["mc_acc_norm"],
        "val_perplexity": ppl["perplexity"],
        "chance_acc": chance,
        "num_examples": evaluated_count(results, len(questions)),
    }
