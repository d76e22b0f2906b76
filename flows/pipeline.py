"""The six-phase pipeline as one Prefect flow."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.env import configure
from flows.parameters import ConfigChoice, Overrides, PhaseName, assignments
from phases.config import PHASE_NAMES, load_config
from phases.errors import LifecycleError
from phases.refs import PhaseRef
from phases.registry import PHASES, finished_output, sources_ref, why_built
from phases.storage import MANIFEST, is_complete, output_dir
from tasks import crash, lineage
from tasks.phases import TASKS, LineageContext

__all__ = ["PhaseFailed", "PhaseName", "lifecycle_pipeline", "plan", "rebuilding"]


class PhaseFailed(LifecycleError):
    """The flow's failure names the phase and its reason (the flow run's state message shows it)."""

    def __init__(self, phase: str, state) -> None:
        error = state.result(raise_on_failure=False)
        why = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or state.name)
        super().__init__(f"phase {phase} failed: {why}")
        self.phase, self.error = phase, error


@flow(name="llm-lifecycle", log_prints=True, persist_result=False)
def lifecycle_pipeline(
    config: ConfigChoice = "tiny",
    overrides: Overrides = {},  # noqa: B006 (never mutated; the UI form needs an object as the default)
    phases: list[PhaseName] = PHASE_NAMES,
    force: bool = False,
) -> dict:
    """Run the selected phases (default: all six), reusing finished outputs of the others.

    Args:
        config: A preset of infra/configs (tiny is the embedded CPU default) or the path of a YAML file on the worker, which may say `base: tiny` and override only what differs.
        overrides: Settings that replace the config's, by dotted key, typed by the config schema: `{"pretrain.max_steps": 20}`; list items by index: `{"data.sources.0.max_docs": 50}`.
        phases: The phases to run. Earlier phases' finished outputs are reused (the run fails, naming the phase, if one was never finished); phases nothing selected reads are skipped.
        force: Rebuild the selected phases even when their output for this config is finished. The old output stays in place until the new one is published over it, and comes back if the rebuild fails.
    """
    logger = get_run_logger()
    home = configure()
    cfg = load_config(config, assignments(overrides))
    selected = [p for p in PHASE_NAMES if p in (phases or PHASE_NAMES)]
    mlf = lineage.client(home)
    exp_id = lineage.experiment_id(mlf, cfg.experiment, home)
    tags = {**lineage.base_tags(cfg, str(flow_run.id) if flow_run.id else None, lineage.git_commit()), **crash.owner_tags()}
    crash.close_orphans(mlf, exp_id)  # runs a killed earlier run left RUNNING
    parent = lineage.start_parent(mlf, exp_id, cfg, tags, selected)
    ctx = LineageContext(home=str(home), experiment_id=exp_id, parent_run_id=parent, tags=tags)
    logger.info("MLflow parent run %s (experiment %s, %s)", parent, cfg.experiment, lineage.shown_tracking_uri(home))
    create_markdown_artifact(
        key="mlflow-parent-run",
        description="This flow run's MLflow parent run",
        markdown=f"MLflow parent run: {lineage.run_link(home, exp_id, parent)}, config hash `{cfg.digest()}`",
    )

    refs: dict[str, PhaseRef] = {"sources": sources_ref(cfg)}
    results: dict[str, dict] = {}
    try:
        for spec in _needed(selected):
            inputs = {n: refs[n] for n in spec.inputs}
            section = cfg.section(spec.name)
            key = spec.key(section, inputs)
            why = "--force" if force and spec.name in selected else None
            if why is None and spec.name in selected and finished_output(spec.name, key, home) is None:
                why = why_built(spec.name, section, inputs, home)
                logger.info("%s: building (%s)", spec.name, why)
            with rebuilding(home, spec.name, key) if force and spec.name in selected else contextlib.nullcontext():
                # Phases before the selected ones are only reused: they fail if never finished.
                state = TASKS[spec.name](section, inputs, key, ctx, reuse_only=spec.name not in selected, return_state=True)
                if state.is_failed() or state.is_crashed():
                    raise PhaseFailed(spec.name, state)
                ref, reused = state.result()
            refs[spec.name] = ref
            results[spec.name] = {"uri": ref.uri, "reused": reused, "headline": {k: ref.summary.get(k) for k in spec.headline}}
            if not reused:
                results[spec.name]["why"] = why
            logger.info("%s: %s %s", spec.name, "reused" if reused else f"built ({why})", results[spec.name]["headline"])
    except BaseException as e:
        lineage.fail_run(mlf, parent, e)
        raise
    _log_parent_headlines(mlf, parent, results)
    mlf.set_terminated(parent, "FINISHED")
    return {"parent_run_id": parent, "experiment_id": exp_id, "tracking_uri": lineage.shown_tracking_uri(home), "home": str(home), "phases": results}


@contextlib.contextmanager
def rebuilding(home: Path, phase: str, key: str):
    """``force``: set a finished output's manifest aside, so that the phase builds it again.

    A directory without a manifest is not done (phases.storage): the phase's task builds a new
    one in a staging directory under the output's lock and publishes it over the old one, whose
    files stay readable until then. If the rebuild fails, the manifest comes back and the old
    output is whole again. A run that reaches the output in between waits on the lock and reuses
    the new output.
    """
    final = output_dir(home, phase, key)
    aside = final / f".{MANIFEST}.forced"  # hidden: left out of the directory's digests
    if is_complete(final):
        os.replace(final / MANIFEST, aside)
    try:
        yield
    except BaseException:
        if aside.is_file() and not is_complete(final):
            os.replace(aside, final / MANIFEST)
        raise


def _log_parent_headlines(mlf, parent: str, results: dict) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{phase}/{k}", float(v), now, 0)
        for phase, r in results.items()
        for k, v in r["headline"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    if metrics:
        mlf.log_batch(parent, metrics=metrics)


def _needed(selected: list[str]):
    """The selected phases and, transitively, the phases they read (in pipeline order): a phase
    nothing selected depends on is skipped (``--phases align,evaluate`` skips inference)."""
    by_name = {spec.name: spec for spec in PHASES}
    needed, todo = set(), list(selected)
    while todo:
        name = todo.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        todo.extend(by_name[name].inputs)
    return [spec for spec in PHASES if spec.name in needed]


def plan(cfg, home: Path, selected: list[str]) -> list[dict]:
    """What each phase would do: run, reuse a finished output, or fail for lack of one."""
    refs: dict[str, PhaseRef] = {"sources": sources_ref(cfg)}
    rows = []
    unknown_upstream = False
    for spec in PHASES:
        if spec not in _needed(selected):
            rows.append({"phase": spec.name, "action": "skip", "key": "-"})
            continue
        if unknown_upstream:
            rows.append({"phase": spec.name, "action": "run" if spec.name in selected else "missing", "key": "(after upstream runs)"})
            continue
        inputs = {n: refs[n] for n in spec.inputs}
        key = spec.key(cfg.section(spec.name), inputs)
        ref = finished_output(spec.name, key, home)
        if ref is not None:
            refs[spec.name] = ref
            rows.append({"phase": spec.name, "action": "reuse", "key": key, "uri": ref.uri})
        else:
            unknown_upstream = True
            rows.append({"phase": spec.name, "action": "run" if spec.name in selected else "missing", "key": key})
    return rows
