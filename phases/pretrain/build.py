"""Phase 3, pretraining: launch DeepSpeed on the packed sequences of the model phase.

:func:`build` checks the inputs, decides whether the run resumes from a checkpoint
(:mod:`phases.pretrain.checkpoint`; checkpoints live in ``$LIFECYCLE_HOME/checkpoints/pretrain/<run id>``,
outside the staging ``out``, so a killed run resumes), writes ``training_args.json`` (the
run's whole specification) into the output directory, and starts the DeepSpeed launcher as
a supervised subprocess (:func:`phases.process.run_supervised`) that runs
:mod:`phases.pretrain.entry` on every rank. Rank 0 writes the model, tokenizer, per-step
metrics and a summary into ``out``; :func:`build` adds the model card and returns the summary.

The launcher always runs out of process, even for one CPU rank: the same code path as a
multi-GPU or multi-node run, a crash or hang cannot take the orchestrator down with it, and
a timeout or cancellation kills the whole process group.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from phases.config import PretrainConfig
from phases.env import OFFLINE
from phases.errors import LaunchError
from phases.metrics import MetricsSink
from phases.model import artifact
from phases.pretrain import checkpoint
from phases.pretrain.dsconfig import deepspeed_config, for_budget
from phases.pretrain.export import write_model_card
from phases.process import run_supervised
from phases.refs import PhaseRef
from phases.storage import readable_by_all

log = logging.getLogger("lifecycle.pretrain")

ENTRY_MODULE = "phases.pretrain.entry"
SUMMARY_KEYS = ("first_loss", "final_loss", "val_loss", "val_perplexity", "tokens_per_s", "steps", "tokens_seen", "world_size")
REPO_ROOT = Path(__file__).resolve().parents[2]


def build(cfg: PretrainConfig, inputs: dict[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    """Train from scratch on ``inputs["model"]``; fill ``out`` with an HF model + tokenizer."""
    model_dir = inputs["model"].path.resolve()
    artifact.check(model_dir)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    world_size = cfg.num_gpus * cfg.num_nodes
    budgeted = for_budget(cfg, artifact.read_plan(model_dir), int(artifact.read_packed(model_dir)["seq_len"]), world_size)
    if budgeted is not cfg:
        log.info(
            "pretrain: the compute budget plans %s tokens: %d steps (instead of pretrain.max_steps=%d)",
            f"{artifact.read_plan(model_dir)['tokens']:,}",
            budgeted.max_steps,
            cfg.max_steps,
        )
        cfg = budgeted
    ds_config = deepspeed_config(cfg, world_size)  # fail on a bad config here, not in N ranks
    data_fp = inputs["model"].fingerprint
    plan = checkpoint.plan_resume(
        cfg, checkpoint.checkpoint_dir(cfg, model_dir, out), data_fp, checkpoint.file_digest(model_dir / "tokenizer" / "tokenizer.json")
    )
    log.info("pretrain: %s (checkpoints in %s)", _describe(plan), plan["dir"])
    args_path = out / "training_args.json"
    args_path.write_text(
        json.dumps(
            {"pretrain": cfg.model_dump(mode="json"), "deepspeed": ds_config, "model_dir": str(model_dir), "out": str(out), "checkpoint": plan},
            indent=2,
            sort_keys=True,
        )
    )
    sink.log_dict(ds_config, "deepspeed_config.json")
    cmd = launcher_command(cfg, ["--args", str(args_path)], free_port())
    run_supervised(cmd, child_env(sink), cwd=Path.cwd(), timeout_s=cfg.timeout_s, logger=log, log_path=out / "train.log")
    summary = read_summary(out)
    if not sink.subprocess_env():
        # The child logged to metrics.jsonl only (it cannot reach an in-memory or file
        # sink of this process): replay it, so every sink sees the per-step series.
        replay_metrics(out / "metrics.jsonl", sink)
    write_model_card(out, cfg, summary, data_fp, model_dir)
    readable_by_all(out)  # transformers writes model.safetensors 0600; build() may be called outside materialize()
    log.info("pretrain done: %s", ", ".join(f"{k}={summary[k]:.4g}" for k in SUMMARY_KEYS))
    return summary


def _describe(plan: dict[str, Any]) -> str:
    if plan["mode"] == "resume":
        return f"resuming from checkpoint {plan['tag']}"
    if plan["mode"] == "warm":
        return f"warm-starting on new data from checkpoint {plan['tag']} (generation {plan['generation']})"
    if plan.get("replaced"):
        return f"training from scratch on new data (replacing the old data's checkpoint {plan['replaced']})"
    return "training from scratch"


def launcher_command(cfg: PretrainConfig, entry_args: list[str], master_port: int) -> list[str]:
    """The ``deepspeed`` launcher command line (pure).

    ``python -m deepspeed.launcher.runner`` is the ``deepspeed`` console script without
    relying on PATH, and runs in this interpreter's environment. ``--module`` makes each
    rank run ``python -u -m phases.pretrain.entry`` (deepspeed/launcher/launch.py), so the
    entry is found through the installed package, not a file path.
    """
    cmd = [
        sys.executable,
        "-u",
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(cfg.num_gpus),
        "--num_nodes",
        str(cfg.num_nodes),
        "--master_port",
        str(master_port),
    ]
    if cfg.hostfile:
        # Multi-node: the runner ssh-es (pdsh) to the hosts and exports only MLFLOW*/PYTHON*
        # variables; put HF_HUB_OFFLINE=1 and the like into ~/.deepspeed_env on those hosts.
        cmd += ["--hostfile", str(cfg.hostfile)]
    return cmd + ["--module", ENTRY_MODULE, *entry_args]


def child_env(sink: MetricsSink) -> dict[str, str]:
    """This process's environment plus what every rank needs: offline hubs, unbuffered
    output (lines reach the log as they happen), the import path, the sink's run."""
    env = dict(os.environ)
    env.update(OFFLINE, PYTHONUNBUFFERED="1")
    # The package is normally installed; the path also makes a plain checkout work.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(sink.subprocess_env())
    return env


def free_port() -> int:
    """A TCP port free right now for the rendezvous (another run on this host may hold 29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_summary(out: Path) -> dict[str, Any]:
    path = out / "summary.json"
    if not path.is_file():
        raise LaunchError(f"training exited 0 but wrote no {path}; see {out / 'train.log'}", returncode=0)
    summary = json.loads(path.read_text())
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise LaunchError(f"{path} lacks {', '.join(missing)}", returncode=0)
    return summary


def replay_metrics(path: Path, sink: MetricsSink) -> None:
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "metrics" in rec:
            sink.log_metrics(rec["metrics"], step=rec.get("step"))
