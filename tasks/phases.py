"""One thin Prefect task per phase: cache key, transient retries, and the phase's MLflow run."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task

from phases.config import LifecycleConfig
from phases.errors import LifecycleError
from phases.metrics import MlflowSink
from phases.refs import PhaseRef
from phases.registry import run_phase
from tasks import lineage
from tasks.caching import phase_cache_key

# Failures worth another try: the tracking store or a filesystem hiccup, never a bad
# config, bad data or a crashed training job (those fail the same way again).
TRANSIENT = (ConnectionError, TimeoutError, sqlite3.OperationalError)


def _retry_transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, TRANSIENT) and not isinstance(exc, LifecycleError)


@dataclass(frozen=True)
class LineageContext:
    home: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str] = field(default_factory=dict)


def _run(phase: str, key: str, cfg: LifecycleConfig, inputs: dict[str, PhaseRef], ctx: LineageContext) -> tuple[PhaseRef, bool]:
    logger = get_run_logger()
    mlf = lineage.client(Path(ctx.home))
    section = cfg.section(phase).model_dump(mode="json")
    run_id = lineage.start_child(mlf, ctx.experiment_id, ctx.parent_run_id, phase, section, ctx.tags, key)
    logger.info("%s: MLflow run %s", phase, run_id)
    try:
        lineage.log_inputs(mlf, run_id, inputs)
        extra = {"lineage": {"mlflow_run_id": run_id, **ctx.tags}}
        ref, reused = run_phase(phase, cfg, inputs, Path(ctx.home), MlflowSink(run_id, lineage.tracking_uri(Path(ctx.home))), extra=extra)
        if ref.key != key:
            raise RuntimeError(f"{phase}: output key {ref.key} differs from the planned key {key}")
        lineage.finish_child(mlf, run_id, ref, reused)
        logger.info("%s: %s %s", phase, "reused" if reused else "published", ref.uri)
        return ref, reused
    except BaseException as e:
        lineage.fail_run(mlf, run_id, e)
        raise


def _phase_task(phase: str, name: str, retries: int = 2):
    @task(
        name=name,
        cache_key_fn=phase_cache_key,
        persist_result=True,
        retries=retries,
        retry_delay_seconds=5,
        retry_condition_fn=_retry_transient,
    )
    def run(phase: str, key: str, cfg: LifecycleConfig, inputs: dict[str, PhaseRef], ctx: LineageContext) -> tuple[PhaseRef, bool]:
        return _run(phase, key, cfg, inputs, ctx)

    run.__doc__ = f"Run (or reuse) the {phase} phase."
    return run


prepare_data = _phase_task("data", "prepare_data")
prepare_model = _phase_task("model", "prepare_model")
pretrain_model = _phase_task("pretrain", "pretrain_model")
align_model = _phase_task("align", "align_model")
run_inference = _phase_task("inference", "run_inference")
evaluate_model = _phase_task("evaluate", "evaluate_model")

TASKS = {
    "data": prepare_data,
    "model": prepare_model,
    "pretrain": pretrain_model,
    "align": align_model,
    "inference": run_inference,
    "evaluate": evaluate_model,
}
