"""Scaling-law sweep: train k model sizes on one token budget, fit L(N), publish the fit.

Each size runs the ordinary phases (data -> model -> pretrain) through
``phases.registry.run_phase``, so outputs are keyed and reused like the pipeline's, and
every pretrain run is an MLflow child run of one sweep run. The fit (JSON) goes to
``$LIFECYCLE_HOME/scaling/fit.json`` for the model phase's planner (``model.loss_law``)
and, with a plot, to the sweep's MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

from prefect import flow

from flows.env import configure
from phases.config import LifecycleConfig, load_config
from phases.metrics import MlflowSink
from phases.pretrain.scaling import ScalingPoint, fit_power_law, plot_fit, save_fit
from phases.refs import PhaseRef
from phases.registry import run_phase, sources_ref
from tasks import lineage

# The "lifecycle" logger namespace reaches the Prefect run logs (flows.env sets
# PREFECT_LOGGING_EXTRA_LOGGERS) and also works when the flow's function is called plainly.
log = logging.getLogger("lifecycle.sweep")


def size_overrides(hidden: int) -> list[str]:
    """A width-scaled variant of the preset: 32-wide heads, MLP 2.75x (the tiny preset's ratio)."""
    heads = max(1, hidden // 32)
    intermediate = max(8, int(round(2.75 * hidden / 8)) * 8)
    return [f"model.hidden_size={hidden}", f"model.num_heads={heads}", f"model.intermediate_size={intermediate}"]


def steps_for(cfg: LifecycleConfig, tokens: int) -> int:
    p = cfg.pretrain
    per_step = p.micro_batch_size * p.grad_accum * p.num_gpus * p.num_nodes * cfg.model.seq_len
    return max(2, tokens // per_step)


def point_config(config: str, overrides: list[str], hidden: int, tokens: int) -> LifecycleConfig:
    cfg = load_config(config, [*overrides, *size_overrides(hidden)])
    steps = steps_for(cfg, tokens)
    warmup = min(cfg.pretrain.warmup_steps, steps // 10)
    return load_config(
        config,
        [*overrides, *size_overrides(hidden), f"pretrain.max_steps={steps}", f"pretrain.warmup_steps={warmup}", f"pretrain.eval_every={steps}"],
    )


def train_point(cfg: LifecycleConfig, home: Path, mlf, exp_id: str, parent: str, tags: dict) -> ScalingPoint:
    """data -> model -> pretrain for one size (earlier phases reused); the pretrain run is a child run."""
    refs: dict[str, PhaseRef] = {"sources": sources_ref(cfg)}
    refs["data"], _ = run_phase("data", cfg.data, {"sources": refs["sources"]}, home)
    refs["model"], _ = run_phase("model", cfg.model, {"data": refs["data"]}, home)
    section = cfg.pretrain.model_dump(mode="json")
    run_id = lineage.start_child(mlf, exp_id, parent, "pretrain", section, tags, f"sweep-h{cfg.model.hidden_size}")
    try:
        ref, _ = run_phase("pretrain", cfg.pretrain, {"model": refs["model"]}, home, sink=MlflowSink(run_id, lineage.tracking_uri(home)))
    except BaseException as e:
        lineage.fail_run(mlf, run_id, e)
        raise
    mlf.set_terminated(run_id, "FINISHED")
    return ScalingPoint(
        parameters=int(refs["model"].summary["parameters"]), tokens=int(ref.summary["tokens_seen"]), loss=float(ref.summary["val_loss"])
    )


@flow(name="scaling-sweep", log_prints=True)
def scaling_sweep(
    config: str = "tiny",
    sizes: list[int] | None = None,
    tokens: int = 200_000,
    overrides: list[str] | None = None,
    fit_path: str | None = None,
    trainer: Callable[..., ScalingPoint] | None = None,
) -> dict:
    """Train one model per hidden width in ``sizes`` on ``tokens`` training tokens each; fit L(N).

    ``overrides`` apply to every size (dotted, as on the CLI); ``fit_path`` defaults to
    ``$LIFECYCLE_HOME/scaling/fit.json``. ``trainer`` replaces :func:`train_point` (tests).
    """
    sizes = list(sizes or [64, 96, 128])
    home = configure()
    base = load_config(config, overrides or [])
    mlf = lineage.client(home)
    exp_id = lineage.experiment_id(mlf, base.experiment, home)
    tags = {**lineage.base_tags(base, None, lineage.git_commit()), "lifecycle.kind": "scaling-sweep"}
    parent = mlf.create_run(exp_id, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags).info.run_id
    mlf.log_batch(parent, params=_params(config, sizes, tokens, overrides or []))
    try:
        points = []
        for hidden in sizes:
            cfg = point_config(config, overrides or [], hidden, tokens)
            point = (trainer or train_point)(cfg, home, mlf, exp_id, parent, tags)
            points.append(point)
            _log_point(mlf, parent, hidden, point)
            log.info("size hidden=%d: N=%d, loss=%.4f", hidden, point.parameters, point.loss)
        fit = fit_power_law(points)
        path = save_fit(fit, Path(fit_path) if fit_path else home / "scaling" / "fit.json")
        _log_fit(mlf, parent, fit, path)
    except BaseException as e:
        lineage.fail_run(mlf, parent, e)
        raise
    mlf.set_terminated(parent, "FINISHED")
    log.info("fit: L(N) = %.4f + %.4g * N^-%.4f -> %s", fit.E, fit.A, fit.alpha, path)
    return {"run_id": parent, "fit_path": str(path), "E": fit.E, "A": fit.A, "alpha": fit.alpha, "points": [p.__dict__ for p in points]}


def _params(config: str, sizes: list[int], tokens: int, overrides: list[str]):
    from mlflow.entities import Param

    return [
        Param("config", config),
        Param("sizes", ",".join(map(str, sizes))),
        Param("tokens", str(tokens)),
        Param("overrides", " ".join(overrides) or "-"),
    ]


def _log_point(mlf, run_id: str, hidden: int, point: ScalingPoint) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlf.log_batch(
        run_id,
        metrics=[
            Metric("sweep/loss", point.loss, now, point.parameters),
            Metric(f"sweep/loss_h{hidden}", point.loss, now, 0),
            Metric(f"sweep/parameters_h{hidden}", float(point.parameters), now, 0),
        ],
    )


def _log_fit(mlf, run_id: str, fit, path: Path) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlf.log_batch(run_id, metrics=[Metric(f"fit/{k}", float(getattr(fit, k)), now, 0) for k in ("E", "A", "alpha")])
    mlf.log_artifact(run_id, str(path), "scaling")
    with tempfile.TemporaryDirectory() as d:
        mlf.log_artifact(run_id, str(plot_fit(fit, Path(d) / "scaling_fit.png")), "scaling")
