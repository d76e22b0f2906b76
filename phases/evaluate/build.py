"""Phase 6: the lm-eval suite on the aligned model and its baselines, memorization and
contamination probes, and validation perplexity.

Steps, in order (each failure names its cause before the next costs anything):
1. the suite: our task files built from held-out data (:mod:`phases.evaluate.suite`), every
   configured task loaded and rendered through lm-eval — a bad task fails here, before any
   model is loaded;
2. contamination: 13-gram overlap of every task's items with the pretraining and alignment
   training sets (:mod:`phases.evaluate.contamination`); the policy flags them, drops them
   from scoring (``clean``) or fails the run;
3. scores: lm-eval on the aligned model and, as references on the same items, the untrained
   initialisation (same architecture and seed as pretraining) and the pretrained model;
4. memorization: greedy extraction of training sequences the pretraining run saw, weighted
   toward documents whose duplicates the data phase removed, and configured canaries
   (:mod:`phases.evaluate.memorization`);
5. token-level validation perplexity on the model phase's ``val.bin``.

Published under ``out``: ``suite/`` (task YAMLs naming their data relatively, and the data),
``scored.json`` (tasks, the items scored, the suite fingerprint: what the promotion gate
needs to score the champion on the same items), ``results.json`` (one row per model, task
and metric, with stderr), ``results.md``, ``lm_eval/<model>.json`` (lm-eval's results),
``contamination.json``, ``memorization.json``, ``perplexity.json``. The promotion itself
is a registry step after the phase (``tasks/promotion.py``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from phases.config import EvaluateConfig
from phases.errors import ConfigError, DataError
from phases.evaluate import suite as S
from phases.evaluate.perplexity import perplexity, read_packed
from phases.metrics import MetricsSink
from phases.refs import PhaseRef

log = logging.getLogger("lifecycle.evaluate")
CANDIDATE = "aligned"


def validation_perplexity(model_dir: Path, packed_dir: Path, cfg: EvaluateConfig) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    rows = read_packed(packed_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return perplexity(model, rows, batch_size=cfg.batch_size, max_batches=cfg.perplexity_batches)


def untrained_model(pretrain_dir: Path, dst: Path) -> Path:
    """The pretraining run's initial weights, saved with its tokenizer: its exported architecture
    (``config.json``) drawn after its seed, as the pretraining entry point does
    (``torch.manual_seed(seed)``, then the model is built)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from phases.storage import read_manifest

    try:
        seed = int(read_manifest(pretrain_dir)["config"]["seed"])
    except (FileNotFoundError, KeyError):
        raise DataError(
            f"{pretrain_dir} has no manifest naming its pretrain.seed: pass a pretraining output, or set evaluate.baselines=false"
        ) from None
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(pretrain_dir), dtype=torch.float32).save_pretrained(dst)
    for f in Path(pretrain_dir).glob("*"):
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, Path(dst) / f.name)
    return Path(dst)


def prepare(cfg: EvaluateConfig, data_dir: Path, align_dir: Path, suite_dir: Path, work: Path):
    """Steps 1-2: the suite written and loaded, contamination checked. Returns
    ``(task_manager, tasks, samples, contamination_report, scored_info)``."""
    from phases.evaluate import contamination as C

    info = S.build_suite(cfg, data_dir=data_dir, align_dir=align_dir, suite=suite_dir)
    names = info["tasks"]
    tm = S.task_manager([S.runnable(suite_dir, work / "suite"), *cfg.task_dirs])
    tasks = S.load_tasks(tm, names)
    t0 = time.monotonic()
    reports = C.scan(S.items(tasks), (text for _, text in C.training_texts(data_dir, align_dir)), n=cfg.contamination_ngram)
    outcome = C.apply_policy(reports, cfg.contamination_policy)  # raises under "fail"
    outcome["reports"] = reports
    log.info("evaluate: contamination check of %d tasks in %.1f s: %s", len(tasks), time.monotonic() - t0, outcome["summary"])
    for name in outcome["unscored"]:  # every item contaminated: nothing to score under "clean"
        log.warning("evaluate: %s not scored: every item overlaps the training data", name)
        tasks.pop(name)
    if not tasks:
        raise DataError("contamination_policy=clean leaves no task with a clean item: add tasks or use contamination_policy=flag")
    samples = S.all_samples(tasks, None)
    samples.update(outcome.get("samples") or {})
    samples = {k: v[: cfg.limit] for k, v in samples.items()}
    scored = {
        "tasks": list(tasks),
        "samples": samples,
        "unscored": outcome["unscored"],
        "suite": S.fingerprint(suite_dir, cfg.task_dirs),
        "policy": cfg.contamination_policy,
    }
    return tm, tasks, samples, outcome, scored


def score_models(models: Mapping[str, tuple[Path, Path]], tm, tasks, samples, cfg: EvaluateConfig, out: Path | None) -> list[dict[str, Any]]:
    """Step 3 for each ``label: (model_dir, tokenizer_dir)``; lm-eval's results go to ``out/lm_eval``."""
    rows: list[dict[str, Any]] = []
    for i, (label, (model_dir, tok_dir)) in enumerate(models.items(), 1):
        t0 = time.monotonic()
        log.info("evaluate: scoring %s (%d/%d) on %d tasks", label, i, len(models), len(tasks))
        results = S.score(model_dir, tok_dir, tm, list(tasks), cfg, samples)
        if out is not None:
            (out / "lm_eval").mkdir(exist_ok=True)
            (out / "lm_eval" / f"{label}.json").write_text(json.dumps(results, indent=2, sort_keys=True))
        rows += S.flatten(results, label)
        log.info("evaluate: %s scored in %.0f s", label, time.monotonic() - t0)
    return rows


def build(cfg: EvaluateConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phases.env import offline_env
    from phases.evaluate import contamination as C
    from phases.evaluate import memorization as M

    offline_env()
    out = Path(out)
    data_dir, model_dir = inputs["data"].path, inputs["model"].path
    align_dir, pretrain_dir = inputs["align"].path, inputs["pretrain"].path
    with tempfile.TemporaryDirectory(prefix="lifecycle-eval-") as tmp:
        work = Path(tmp)
        tm, tasks, samples, outcome, scored = prepare(cfg, data_dir, align_dir, out / "suite", work)
        if cfg.primary.split("/", 1)[0] not in tasks:  # before any model is loaded
            raise ConfigError(f"evaluate.primary={cfg.primary!r}: task {cfg.primary.split('/', 1)[0]!r} is not in the suite {sorted(tasks)}")
        (out / "contamination.json").write_text(json.dumps(outcome["report"], indent=2, sort_keys=True))
        (out / "scored.json").write_text(json.dumps(scored, indent=2, sort_keys=True))
        models = {CANDIDATE: (align_dir, align_dir)}
        if cfg.baselines:
            models["pretrained"] = (pretrain_dir, pretrain_dir)
            untrained = untrained_model(pretrain_dir, work / "untrained")
            models["untrained"] = (untrained, untrained)
        rows = score_models(models, tm, tasks, samples, cfg, out)

        mem: dict[str, Any] = {}
        if cfg.memorization_samples or cfg.canaries:
            tokenizer = AutoTokenizer.from_pretrained(align_dir)
            for label in ("pretrained", CANDIDATE) if cfg.baselines else (CANDIDATE,):
                model = AutoModelForCausalLM.from_pretrained(models[label][0], dtype=torch.float32).eval()
                mem[label] = M.memorization_report(
                    model,
                    tokenizer,
                    model_dir,
                    pretrain_dir,
                    data_dir,
                    samples=cfg.memorization_samples,
                    prefix_tokens=cfg.memorization_prefix,
                    suffix_tokens=cfg.memorization_suffix,
                    canaries=list(cfg.canaries),
                    seed=cfg.seed,
                    batch_size=cfg.batch_size,
                )
    (out / "memorization.json").write_text(json.dumps(mem, indent=2, sort_keys=True))
    (out / "results.json").write_text(json.dumps(rows, indent=2, sort_keys=True))
    (out / "results.md").write_text(S.table_markdown(rows, list(models)) + "\n\n" + C.report_markdown(outcome["reports"]) + "\n")
    ppl = validation_perplexity(align_dir, model_dir, cfg)
    (out / "perplexity.json").write_text(json.dumps(ppl, indent=2, sort_keys=True))

    metrics = S.mlflow_metrics(rows)
    metrics["eval/aligned/val_perplexity"] = ppl["perplexity"]
    for name, r in outcome["report"]["tasks"].items():
        metrics[f"contamination/{name}/rate"] = r["rate"]
    for label, report in mem.items():
        if report.get("samples"):
            metrics[f"memorization/{label}/exact_match_rate"] = report["exact_match_rate"]
            metrics[f"memorization/{label}/token_match_rate"] = report["token_match_rate"]
    sink.log_metrics(metrics)
    sink.log_dict({"rows": rows}, "eval/results.json")
    sink.log_dict(outcome["report"], "eval/contamination.json")
    sink.log_dict(mem, "eval/memorization.json")
    sink.log_artifact(out / "results.md", "eval")
    return summary(rows, cfg, ppl, outcome, mem, scored, guards(cfg, align_dir, outcome))


def guards(cfg: EvaluateConfig, align_dir: Path, outcome: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What must hold for the aligned model to be promoted, whatever its score.

    capability: the align phase's perplexity rise stayed within its max_ppl_rise (general
    capability kept). contamination: the primary task's score is not inflated by items seen
    in training (under ``clean`` they were not scored; under ``flag`` a contaminated primary
    task blocks promotion).
    """
    out: dict[str, dict[str, Any]] = {}
    cap = Path(align_dir) / "capability.json"
    if cap.is_file():
        c = json.loads(cap.read_text())
        rise = c["table"][-1]["rise"] if c.get("table") else 0.0
        out["capability"] = {"ok": rise <= c["max_ppl_rise"], "detail": f"perplexity rise {rise:+.1%} after alignment (max {c['max_ppl_rise']:.0%})"}
    else:
        out["capability"] = {"ok": True, "detail": "the align phase recorded no capability check"}
    task = cfg.primary.split("/", 1)[0]
    rate = outcome["report"]["tasks"].get(task, {}).get("rate", 0.0)
    ok = rate == 0.0 or cfg.contamination_policy == "clean"
    how = "contaminated items not scored" if cfg.contamination_policy == "clean" and rate else "flagged"
    out["contamination"] = {"ok": ok, "detail": f"{task}: {rate:.1%} of items overlap the training data" + (f" ({how})" if rate else "")}
    return out


def summary(rows, cfg: EvaluateConfig, ppl, outcome, mem, scored, guards) -> dict[str, Any]:
    primary = S.lookup(rows, CANDIDATE, cfg.primary)
    base = S.lookup(rows, "untrained", cfg.primary)
    out = {
        "primary": cfg.primary,
        "primary_value": primary["value"] if primary else None,
        "primary_stderr": primary["stderr"] if primary else None,
        "untrained_value": base["value"] if base else None,
        "val_perplexity": ppl["perplexity"],
        "contaminated_tasks": outcome["contaminated_tasks"],
        "memorized_rate": mem.get(CANDIDATE, {}).get("exact_match_rate"),
        "suite": scored["suite"],
        "tasks": len(scored["tasks"]),
        "guards": guards,
    }
    if primary is None:
        raise_missing_primary(cfg, rows)
    return out


def raise_missing_primary(cfg: EvaluateConfig, rows) -> None:
    have = sorted({f"{r['task']}/{r['metric']}" for r in rows if r["model"] == CANDIDATE})
    raise ConfigError(f"evaluate.primary={cfg.primary!r} is not among the scored metrics: {have}")
