"""One thin Prefect task per phase: transient retries and the phase's MLflow run.

Reuse is decided in one place, the phase's keyed output directory (phases.storage): the
task always runs, gets its config section, its input refs and the key the flow planned,
and either builds the output or finds it finished. A reused phase ends in Prefect's state
``Reused`` (a kind of Completed) and gets one MLflow child run tagged
``lifecycle.reused=true``. No Prefect result is persisted: nothing is pickled to disk.
"""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.states import Completed

from phases.config import Section
from phases.errors import LifecycleError
from phases.metrics import MlflowSink
from phases.refs import PhaseRef
from phases.registry import BY_NAME, PHASES, run_phase
from tasks import lineage
from tasks.progress import progress_artifact

# Failures worth another try: the network or the tracking store, never a bad config, bad data, a
# full disk, a failed Spark job or a crashed training job (LifecycleErrors: they fail the same way
# again). MLflow's client already retries a lost connection and 429/5xx answers itself
# (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 with exponential backoff: about 4 minutes); when it gives up it
# raises an MlflowException over requests' error, so the chain of causes is what is looked at.
TRANSIENT = (ConnectionError, TimeoutError)
# Modules whose exceptions wrap the one that says why (MLflow over requests over urllib3, SQLAlchemy over sqlite3).
WRAPPERS = ("mlflow", "sqlalchemy", "requests", "urllib3")
RETRY_DELAYS_S = [5, 30]
# Phases whose step-by-step progress becomes a Prefect progress artifact (tasks/progress.py).
TRAINING = ("pretrain", "align")
# Task names say what the task does (the Prefect UI lists them).
VERBS = {
    "data": "prepare_data",
    "model": "prepare_model",
    "pretrain": "pretrain_model",
    "align": "align_model",
    "inference": "run_inference",
    "evaluate": "evaluate_model",
}


def is_transient(exc: BaseException | None) -> bool:
    """Whether another attempt may succeed: a lost connection, a timeout, a server answering "try
    later" after MLflow's own retries, a locked SQLite database. Anything else fails once."""
    import requests

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, LifecycleError):
            return False
        if isinstance(exc, (*TRANSIENT, requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        if isinstance(exc, sqlite3.OperationalError):  # "unable to open", "readonly database": not worth a retry
            return "locked" in str(exc) or "busy" in str(exc)
        if type(exc).__module__.split(".")[0] not in WRAPPERS:
            return False
        exc = exc.__cause__ or exc.__context__
    return False


def _retry_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


@dataclass(frozen=True)
class LineageContext:
    home: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str] = field(default_factory=dict)


def run_in_child_run(
    phase: str, section: Section, inputs: dict[str, PhaseRef], key: str, ctx: LineageContext, reuse_only: bool = False
) -> tuple[PhaseRef, bool]:
    """Build or reuse one phase's output inside its own MLflow child run."""
    logger = get_run_logger()
    mlf = lineage.client(Path(ctx.home))
    run_id = lineage.start_child(mlf, ctx.experiment_id, ctx.parent_run_id, phase, section.model_dump(mode="json"), ctx.tags, key)
    logger.info("%s: MLflow run %s", phase, run_id)
    try:
        lineage.log_inputs(mlf, run_id, inputs)
        sink = MlflowSink(run_id, lineage.tracking_uri(Path(ctx.home)))
        with progress_artifact(phase) if phase in TRAINING else nullcontext():
            ref, reused = run_phase(
                phase,
                section,
                inputs,
                Path(ctx.home),
                key=key,
                sink=sink,
                extra={"lineage": {"mlflow_run_id": run_id, **ctx.tags}},
                reuse_only=reuse_only,
            )
        if phase in AFTER_BUILD and not reused:  # a reused output was registered by the run that built it
            AFTER_BUILD[phase](section, ref, run_id, ctx)
        lineage.finish_child(mlf, run_id, ref, reused)
    except BaseException as e:
        try:
            lineage.fail_run(mlf, run_id, e)
        except Exception as lost:  # the tracking server may be what is gone: the phase's own error decides the retry
            logger.warning("%s: could not mark MLflow run %s failed, it may stay RUNNING (%s: %s)", phase, run_id, type(lost).__name__, lost)
        raise
    logger.info("%s: %s %s", phase, "reused" if reused else "published", ref.uri)
    publish_summary(phase, ref, reused, run_id, ctx)
    return ref, reused


def publish_summary(phase: str, ref: PhaseRef, reused: bool, run_id: str, ctx: LineageContext) -> None:
    """A markdown artifact in the Prefect UI: the phase's headline figures and where its MLflow run is."""
    from prefect.artifacts import create_markdown_artifact

    spec = BY_NAME[phase]
    rows = "\n".join(f"| {k} | {_fmt(ref.summary.get(k))} |" for k in spec.headline)
    link = lineage.run_link(Path(ctx.home), ctx.experiment_id, run_id)
    create_markdown_artifact(
        key=f"{phase}-summary",
        description=f"{phase}: {'reused' if reused else 'built'} {ref.key}",
        markdown=f"### {phase} ({'reused' if reused else 'built'})\n\nMLflow run: {link}\n\nOutput: `{ref.uri}`\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n",
    )


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def register_model(section: Section, ref: PhaseRef, run_id: str, ctx: LineageContext) -> None:
    """The aligned model becomes a new version of ``align.register_as`` with alias ``challenger``;
    the evaluation phase decides promotion. The version carries the lineage back to the run."""
    from tasks.model_registry import register_aligned_model

    logger = get_run_logger()
    uri = lineage.tracking_uri(Path(ctx.home))
    version = register_aligned_model(uri, run_id, ref.path, section.register_as, alias="challenger")
    mlf = lineage.client(Path(ctx.home))
    for k, v in {
        **ctx.tags,
        "lifecycle.parent_run_id": ctx.parent_run_id,
        "lifecycle.output_uri": ref.uri,
        "lifecycle.fingerprint": ref.fingerprint,
    }.items():
        mlf.set_model_version_tag(section.register_as, version, k, v)
    mlf.set_tag(run_id, "lifecycle.registered_model", f"models:/{section.register_as}/{version}")
    logger.info("align: registered models:/%s/%s (alias challenger)", section.register_as, version)


def promote_model(section: Section, ref: PhaseRef, run_id: str, ctx: LineageContext) -> None:
    """The evaluation gate: alias champion moves to the evaluated model when it beats the champion."""
    from prefect.artifacts import create_markdown_artifact

    from tasks import promotion

    if not section.promote:
        get_run_logger().info("evaluate: promotion off (evaluate.promote=false)")
        return
    decision = promotion.promote(section, ref, run_id, lineage.client(Path(ctx.home)))
    get_run_logger().info("evaluate: promotion %s: %s", decision["outcome"], decision["reason"])
    create_markdown_artifact(key="promotion", description=f"promotion: {decision['outcome']}", markdown=promotion.markdown(decision))


# Steps after a phase built its output, inside its MLflow run.
AFTER_BUILD = {"align": register_model, "evaluate": promote_model}


def _phase_task(phase: str):
    @task(name=VERBS[phase], persist_result=False, retries=2, retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=_retry_transient)
    def run(section: Section, inputs: dict[str, PhaseRef], key: str, ctx: LineageContext, reuse_only: bool = False):
        ref, reused = run_in_child_run(phase, section, inputs, key, ctx, reuse_only)
        if reused:
            return Completed(name="Reused", message=f"reused {ref.uri}", data=(ref, True))
        return ref, False

    run.__doc__ = f"Run (or reuse) the {phase} phase."
    return run


TASKS = {spec.name: _phase_task(spec.name) for spec in PHASES}
