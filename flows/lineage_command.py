"""``lifecycle lineage``: from a model (or a run) back to its data, code and config; or the documents a
pretraining output saw.

The argument decides:

- ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or an MLflow run id (32 hex digits): the model
  version -> the run that registered it (the align phase's) -> its pipeline run (the parent) and the
  sibling phase runs -> each phase's dataset inputs (the upstream outputs' fingerprints) and, for the
  data phase, its sources with licences and document counts -> the code (git commit, lock-file
  digest) and the config (hash, preset, ``config.yaml``) -> the Prefect flow run and deployment. A
  phase that reused an earlier output names the run that built it and that run's pipeline run.
- a directory: a pretraining output, whose training documents are listed (``--step``, ``--output``).

Everything is read with ``MlflowClient`` from what tasks/lineage.py wrote (the tag names come from
there), in ``$LIFECYCLE_HOME/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` says otherwise.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phases.config import PHASE_NAMES
from phases.errors import ConfigError, DataError
from tasks import lineage as L

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
TAG_PARENT = "mlflow.parentRunId"
TAG_COMMIT = "mlflow.source.git.commit"
TAG_PHASES = "lifecycle.phases"  # start_parent: the parent run's selected phases
TAG_REGISTERED = "lifecycle.registered_model"  # tasks/phases.register_model, on the align run


def add_parser(sub) -> None:
    ln = sub.add_parser(
        "lineage",
        help="trace a model or MLflow run back to its data, code, config and Prefect flow run; or list the documents a pretraining output saw",
    )
    ln.add_argument("target", help="models:/NAME@ALIAS, models:/NAME/VERSION, an MLflow run id, or a pretraining output directory")
    ln.add_argument("--json", action="store_true", help="print the trace as JSON")
    ln.add_argument("--step", type=int, help="pretraining directory: only the first STEP optimizer steps (default: all)")
    ln.add_argument("--output", help="pretraining directory: write the document table (id, source, rows) to this Parquet file")


def run(args) -> int:
    target = args.target
    if target.startswith("models:/") or RUN_ID.match(target):
        result = trace(_client(), target)
        print(json.dumps(result, indent=2, default=str) if args.json else render(result))
        return 0
    if Path(target).is_dir():
        return _documents_seen(Path(target), args.step, args.output)
    raise ConfigError(
        f"lineage {target!r}: give models:/NAME@ALIAS, models:/NAME/VERSION, an MLflow run id (32 hex digits) or a pretraining output directory"
    )


def _documents_seen(path: Path, step: int | None, output: str | None) -> int:
    from phases.pretrain.seen import documents_seen

    table, info = documents_seen(path, step)
    if output:
        import pyarrow.parquet as pq

        pq.write_table(table, output)
    print(json.dumps(info, indent=2))
    return 0


def _client():
    import os

    from flows.env import lifecycle_home

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as configure() sets it: no bars in the trace
    uri = L.tracking_uri(lifecycle_home())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise DataError(f"no MLflow store at {uri}: run the pipeline first, or set MLFLOW_TRACKING_URI (or LIFECYCLE_HOME) to where it logged")
    return L.client(lifecycle_home())


# --------------------------------------------------------------------------- reading


def trace(mlf, target: str) -> dict[str, Any]:
    """The lineage of a registered model version or of any run of a pipeline run, as a dict."""
    model = _model_version(mlf, target) if target.startswith("models:/") else None
    run = _run(mlf, model["run_id"] if model else target, target)
    tags = run.data.tags
    if TAG_PHASES in tags:
        parent = run
    elif tags.get(TAG_PARENT):
        parent = _run(mlf, tags[TAG_PARENT], f"the parent of run {run.info.run_id}")
    else:
        parent = None  # a run outside a pipeline run (e.g. lifecycle evaluate's)
    children = _phase_runs(mlf, parent) if parent else []
    if model is None:
        model = _registered_by_pipeline(mlf, [run, *children])
    return {
        "target": target,
        "tracking_uri": mlf.tracking_uri,
        "model": model,
        "registered_by": _run_summary(mlf.get_run(model["run_id"])) if model and model.get("run_id") else None,
        "run": _run_summary(run),
        "pipeline": _pipeline(mlf, parent) if parent else None,
        "phases": [_phase(mlf, c) for c in children],
    }


def _registered_by_pipeline(mlf, runs: list) -> dict[str, Any] | None:
    """The model version these runs registered; for a reused align output, the one its builder registered."""
    for r in runs:
        uri = r.data.tags.get(TAG_REGISTERED)
        source = r.data.tags.get(L.TAG_SOURCE_RUN) if r.data.tags.get(L.TAG_PHASE) == "align" else None
        if not uri and source:
            try:
                uri = _run(mlf, source, "").data.tags.get(TAG_REGISTERED)
            except DataError:  # the builder's run was deleted
                continue
        if uri:
            return _model_version(mlf, uri)
    return None


def _model_version(mlf, uri: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    m = MODEL_URI.match(uri)
    if not m:
        raise ConfigError(f"model URI {uri!r} is malformed; use models:/NAME@ALIAS or models:/NAME/VERSION")
    name = m["name"]
    try:
        registered = mlf.get_registered_model(name)
    except MlflowException:
        known = sorted(r.name for r in mlf.search_registered_models(max_results=50))
        raise DataError(f"{uri}: no registered model named {name!r} at {mlf.tracking_uri}; registered: {', '.join(known) or 'none'}") from None
    try:
        mv = mlf.get_model_version_by_alias(name, m["alias"]) if m["alias"] else mlf.get_model_version(name, m["version"])
    except MlflowException:
        versions = mlf.search_model_versions(f"name='{name}'")
        if m["alias"]:
            aliases = sorted(registered.aliases or {})
            raise DataError(f"{uri}: {name!r} has no alias {m['alias']!r}; its aliases: {', '.join(aliases) or 'none'}") from None
        numbers = sorted((int(v.version) for v in versions))
        raise DataError(f"{uri}: {name!r} has no version {m['version']}; its versions: {', '.join(map(str, numbers)) or 'none'}") from None
    mv = mlf.get_model_version(name, mv.version)  # by number: carries every alias of the version
    return {
        "uri": uri,
        "name": name,
        "version": str(mv.version),
        "aliases": sorted(mv.aliases or []),
        "run_id": mv.run_id,
        "source": mv.source,
        "status": mv.status,
        "created": _time(mv.creation_timestamp),
        "tags": dict(mv.tags or {}),
    }


def _run(mlf, run_id: str, what: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlf.get_run(run_id)
    except MlflowException:
        raise DataError(f"{what}: no MLflow run {run_id} at {mlf.tracking_uri}") from None


def _phase_runs(mlf, parent) -> list:
    runs = mlf.search_runs([parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'", max_results=1000)
    order = {p: i for i, p in enumerate(PHASE_NAMES)}
    return sorted((r for r in runs if L.TAG_PHASE in r.data.tags), key=lambda r: (order.get(r.data.tags[L.TAG_PHASE], 99), r.info.start_time))


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else None


def _run_summary(run) -> dict[str, Any]:
    t = run.data.tags
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "started": _time(run.info.start_time),
        "phase": t.get(L.TAG_PHASE),
    }


def _pipeline(mlf, parent) -> dict[str, Any]:
    t = parent.data.tags
    return {
        **_run_summary(parent),
        "phases_selected": t.get(TAG_PHASES, "").split(",") if t.get(TAG_PHASES) else [],
        "flow_run": {
            "id": t.get(L.TAG_FLOW_RUN),
            "url": t.get(L.TAG_FLOW_RUN_URL) or _local_ui_url(t.get(L.TAG_FLOW_RUN)),
            "url_recorded": L.TAG_FLOW_RUN_URL in t,
            "deployment": t.get(L.TAG_DEPLOYMENT),
        },
        "code": {"git_commit": t.get(TAG_COMMIT), "lock_digest": t.get(L.TAG_LOCK_DIGEST)},
        "config": {
            "hash": parent.data.params.get("config_hash") or t.get(L.TAG_CONFIG_HASH),
            "preset": t.get("lifecycle.preset"),
            "artifact": f"runs:/{parent.info.run_id}/config.yaml",
            "values": _artifact(mlf, parent.info.run_id, "config.yaml"),
        },
    }


def _local_ui_url(flow_run_id: str | None) -> str | None:
    """A run of the embedded default (a temporary server, so no UI URL was recorded): where
    ``make ui-prefect``, which reads the same Prefect database, shows it."""
    if not flow_run_id or flow_run_id == "none":
        return None
    return f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}"


def _phase(mlf, run) -> dict[str, Any]:
    t = run.data.tags
    row: dict[str, Any] = {
        **_run_summary(run),
        "key": t.get("lifecycle.phase_key"),
        "output_uri": t.get("lifecycle.output_uri"),
        "fingerprint": t.get("lifecycle.fingerprint"),
        "reused": t.get(L.TAG_REUSED) == "true",
        "config_hash": t.get(L.TAG_CONFIG_HASH),
        "git_commit": t.get(TAG_COMMIT),
        "inputs": _inputs(run),
        "built_by": _built_by(mlf, t.get(L.TAG_SOURCE_RUN)) if t.get(L.TAG_SOURCE_RUN) else None,
    }
    if row["phase"] == "data":
        row["data"] = _data(mlf, run)
    return row


def _inputs(run) -> list[dict[str, Any]]:
    out = []
    for d in getattr(run.inputs, "dataset_inputs", None) or []:
        try:
            source = json.loads(d.dataset.source).get("uri")
        except (TypeError, ValueError, AttributeError):
            source = d.dataset.source
        context = next((tag.value for tag in d.tags if tag.key == "mlflow.data.context"), None)
        out.append({"input": context, "dataset": d.dataset.name, "digest": d.dataset.digest, "uri": source})
    return sorted(out, key=lambda r: r["input"] or "")


def _built_by(mlf, run_id: str) -> dict[str, Any]:
    """The run that built a reused output, and the pipeline run it belonged to."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlf.get_run(run_id)
    except MlflowException:
        return {"run_id": run_id, "missing": True}
    t = run.data.tags
    return {
        "run_id": run_id,
        "pipeline_run_id": t.get(TAG_PARENT),
        "flow_run_id": t.get(L.TAG_FLOW_RUN),
        "git_commit": t.get(TAG_COMMIT),
        "lock_digest": t.get(L.TAG_LOCK_DIGEST),
        "started": _time(run.info.start_time),
    }


def _artifact(mlf, run_id: str, path: str) -> Any:
    """A JSON or YAML artifact of a run, parsed; None when it is not there."""
    import yaml
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="lifecycle-lineage-") as tmp:
        try:
            local = Path(mlf.download_artifacts(run_id, path, tmp))
        except (MlflowException, OSError):
            return None
        text = local.read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def _data(mlf, run) -> dict[str, Any]:
    """The data phase's sources (licence, documents read, selected, in train and validation) and totals,
    from the output's manifest (logged on every data run, built or reused), else source_shares.json."""
    summary = (_artifact(mlf, run.info.run_id, "manifest.json") or {}).get("summary") or {}
    sources = summary.get("sources")
    if sources is None:
        table = _artifact(mlf, run.info.run_id, "source_shares.json") or {}
        sources = [dict(zip(table.get("columns", []), row)) for row in table.get("data", [])]
    keep = ("source", "kind", "license", "weight", "read", "selected", "share", "epochs", "train", "validation")
    totals = ("read_docs", "train_docs", "validation_docs", "quarantined", "filtered", "exact_duplicates", "near_duplicates")
    return {"sources": [{k: s.get(k) for k in keep if k in s} for s in sources], **{k: summary[k] for k in totals if k in summary}}


# --------------------------------------------------------------------------- text


def render(r: dict[str, Any]) -> str:
    lines: list[str] = []
    m = r["model"]
    if m:
        aliases = f" (aliases: {', '.join(m['aliases'])})" if m["aliases"] else ""
        lines.append(f"{m['uri']} = version {m['version']} of {m['name']}{aliases}, registered {m['created']}")
        reg = r["registered_by"]
        if reg:
            lines.append(f"  registered by run {reg['run_id']} ({reg['phase'] or reg['name']}, {reg['status']})")
    else:
        run = r["run"]
        lines.append(f"run {run['run_id']} ({run['phase'] or run['name']}, {run['status']}); registers no model")
    p = r["pipeline"]
    if not p:
        lines.append("  not part of a pipeline run (no parent run)")
        return "\n".join(lines)
    fr, code, cfg = p["flow_run"], p["code"], p["config"]
    lines += [
        f"pipeline run {p['run_id']} ({p['name']}, {p['status']}, started {p['started']}, experiment {p['experiment_id']})",
        f"  Prefect   flow run {fr['id']}, deployment {fr['deployment'] or 'none'}"
        + (f"  {fr['url']}" if fr["url"] else "")
        + ("" if fr["url_recorded"] or not fr["url"] else " (after `make ui-prefect`: the run had a temporary server)"),
        f"  code      git {code['git_commit']}, lock sha256 {code['lock_digest'] or 'not recorded'} (constraints.txt)",
        f"  config    preset {cfg['preset']}, hash {cfg['hash']}, {cfg['artifact']}",
        "  phases:",
    ]
    for ph in r["phases"]:
        how = "reused" if ph["reused"] else "built"
        lines.append(
            f"    {ph['phase']:<9} {how:<6} run {ph['run_id']} ({ph['status']})  key {ph['key']}  fingerprint {(ph['fingerprint'] or '')[:16]}"
        )
        if ph["output_uri"]:
            lines.append(f"              output {ph['output_uri']}")
        if ph["built_by"]:
            b = ph["built_by"]
            lines.append(
                f"              built by run {b['run_id']} of pipeline run {b.get('pipeline_run_id')} (flow run {b.get('flow_run_id')}, git {b.get('git_commit')})"
            )
        for i in ph["inputs"]:
            lines.append(f"              input {i['input']}: {i['dataset']} digest {i['digest']}  {i['uri']}")
        for s in (ph.get("data") or {}).get("sources", []):
            lines.append(
                f"              source {s.get('source')} ({s.get('kind')}, licence {s.get('license')}): {s.get('read')} read, "
                f"{s.get('selected')} selected (share {s.get('share')}), {s.get('train')} train / {s.get('validation')} validation"
            )
        d = ph.get("data") or {}
        if "train_docs" in d:
            lines.append(f"              documents: {d['train_docs']} train, {d.get('validation_docs')} validation of {d.get('read_docs')} read")
    return "\n".join(lines)
