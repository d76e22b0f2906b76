"""``lifecycle evaluate --model URI``: score any model on the current suite, as its own flow.

To re-score an old champion on a new suite, or a model from elsewhere against ours. The
suite is built from the finished data and align outputs of the config (the pipeline must
have run once); the model is resolved first (a directory, ``models:/NAME@ALIAS`` or
``models:/NAME/VERSION``), so a wrong URI fails before anything is built or loaded. The run
is an MLflow run of its own in the config's experiment (``lifecycle.kind=evaluate-model``)
with metrics ``eval/<label>/<task>/<metric>``; a registered version also gets its scores
as tags, which the promotion gate reuses when the suite is the same. Nothing is promoted.
The suite and results stay under ``$LIFECYCLE_HOME/evaluations/<run id>/``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.env import configure
from phases.config import load_config
from phases.errors import DataError
from phases.refs import PhaseRef
from phases.registry import PHASES, finished_output, sources_ref
from tasks import lineage

NEEDS = ("data", "model", "pretrain", "align")


def upstream(cfg, home: Path) -> dict[str, PhaseRef]:
    """The finished outputs the suite is built from (the config's data and align phases)."""
    refs: dict[str, PhaseRef] = {"sources": sources_ref(cfg)}
    for spec in PHASES:
        if spec.name not in NEEDS:
            continue
        ref = finished_output(spec.name, spec.key(cfg.section(spec.name), {n: refs[n] for n in spec.inputs}), home)
        if ref is None:
            raise DataError(f"the {spec.name} phase of this config has not finished under {home}: run `lifecycle run` with it first")
        refs[spec.name] = ref
    return refs


@flow(name="evaluate-model", log_prints=True, persist_result=False)
def evaluate_model(model: str, config: str = "tiny", overrides: list[str] | None = None, label: str = "model") -> dict:
    """Score ``model`` on the config's evaluation suite and record it in MLflow (no promotion)."""
    from phases.evaluate import suite as S
    from phases.evaluate.build import prepare, score_models
    from phases.inference.resolve import resolve

    logger = get_run_logger()
    home = configure()
    cfg = load_config(config, overrides or [])
    resolved = resolve(model, download_to=Path(tempfile.mkdtemp(prefix="lifecycle-eval-model-")))  # a bad URI fails here
    refs = upstream(cfg, home)
    mlf = lineage.client(home)
    exp_id = lineage.experiment_id(mlf, cfg.experiment, home)
    run = mlf.create_run(exp_id, run_name=f"evaluate {model}", tags={"lifecycle.kind": "evaluate-model", "lifecycle.model": model})
    run_id = run.info.run_id
    out = home / "evaluations" / run_id
    out.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(prefix="lifecycle-eval-") as tmp:
            tm, tasks, samples, outcome, scored = prepare(cfg.evaluate, refs["data"].path, refs["align"].path, out / "suite", Path(tmp))
            rows = score_models({label: (resolved.model_dir, resolved.tokenizer_dir)}, tm, tasks, samples, cfg.evaluate, out)
        (out / "results.json").write_text(json.dumps(rows, indent=2, sort_keys=True))
        (out / "contamination.json").write_text(json.dumps(outcome["report"], indent=2, sort_keys=True))
        table = S.table_markdown(rows, [label])
        for name, value in S.mlflow_metrics(rows).items():
            mlf.log_metric(run_id, name, value)
        mlf.set_tag(run_id, "lifecycle.eval.suite", scored["suite"])
        mlf.log_dict(run_id, {"rows": rows}, "eval/results.json")
        mlf.log_text(run_id, table, "eval/results.md")
        if model.startswith("models:/"):
            from phases.inference.resolve import registry_version
            from tasks.promotion import record_scores

            _, name, version = registry_version(model)
            version = str(version.version)
            record_scores(mlf, name, version, rows, scored["suite"])
            mlf.set_tag(run_id, "lifecycle.model_version", f"models:/{name}/{version}")
        mlf.set_terminated(run_id, "FINISHED")
    except BaseException as e:
        lineage.fail_run(mlf, run_id, e)
        raise
    create_markdown_artifact(
        key="evaluation", description=f"evaluate {model}", markdown=f"### {model}\n\nMLflow run: {lineage.run_link(home, exp_id, run_id)}\n\n{table}"
    )
    logger.info("evaluate: %s scored on %d tasks (suite %s); MLflow run %s", model, len(tasks), scored["suite"], run_id)
    return {"run_id": run_id, "model": model, "suite": scored["suite"], "rows": rows, "output": str(out)}
