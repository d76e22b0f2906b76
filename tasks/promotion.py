"""Eval-gated promotion in the MLflow model registry: the evaluated model becomes ``champion``
only when it beats the current champion on the same items (:mod:`phases.evaluate.gate`).

The evaluated model is the registered version the align phase's run created (found by that
run's id, recorded in the align output's manifest). The champion's score comes from its
version's tags when they were measured on the same suite (same task files, same items:
``lifecycle.eval.suite``), and is otherwise measured now, in this run, by downloading the
champion and scoring it on the published suite. The decision and the figures behind it are
tags of the challenger's version (``lifecycle.promotion.*``), tags and metrics of the
evaluate run, a ``promotion.json`` artifact there and a markdown artifact in the Prefect UI.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from phases.config import EvaluateConfig
from phases.evaluate import gate
from phases.evaluate import suite as S
from phases.refs import PhaseRef
from phases.storage import read_manifest

ALIAS = "champion"
SUITE_TAG = "lifecycle.eval.suite"
log = logging.getLogger("lifecycle.promotion")


def evaluated_version(client, evaluate_dir: Path):
    """The model version registered from the align output this evaluation scored, or None."""
    align_uri = read_manifest(evaluate_dir)["inputs"]["align"]["uri"]
    run_id = (read_manifest(Path(align_uri)).get("lineage") or {}).get("mlflow_run_id")
    if not run_id:
        return None
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def champion_of(client, name: str):
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST: no champion yet
        return None


def record_scores(client, name: str, version: str, rows, suite: str) -> None:
    """A version's scores on one suite, as tags: ``lifecycle.eval.suite.<suite>`` holds them as JSON
    (one tag per suite, so re-scoring on another suite keeps this one's), and the latest suite's are
    also readable one per tag (``lifecycle.eval.<task>/<metric>``, ``lifecycle.eval.suite``)."""
    scores = {f"{r['task']}/{r['metric']}": r["value"] for r in rows}
    client.set_model_version_tag(name, version, f"{SUITE_TAG}.{suite}", json.dumps(scores, sort_keys=True)[:5000])
    client.set_model_version_tag(name, version, SUITE_TAG, suite)
    for key, value in scores.items():
        client.set_model_version_tag(name, version, f"lifecycle.eval.{key}", repr(value))


def recorded_score(version, suite: str, primary: str) -> float | None:
    """The version's ``primary`` score measured on ``suite``, if it was."""
    raw = (version.tags or {}).get(f"{SUITE_TAG}.{suite}")
    if raw is None:
        return None
    value = json.loads(raw).get(primary)
    return None if value is None else float(value)


def score_version(client, name: str, version: str, evaluate_dir: Path, cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """Score a registered version on the published suite, on the same items the challenger got."""
    from phases.evaluate.build import score_models
    from phases.inference.resolve import resolve

    scored = json.loads((evaluate_dir / "scored.json").read_text())
    with tempfile.TemporaryDirectory(prefix="lifecycle-champion-") as tmp:
        model = resolve(f"models:/{name}/{version}", download_to=Path(tmp) / "model")
        tm = S.task_manager([S.runnable(evaluate_dir / "suite", Path(tmp) / "suite"), *cfg.task_dirs])
        tasks = S.load_tasks(tm, scored["tasks"])
        return score_models({ALIAS: (model.model_dir, model.tokenizer_dir)}, tm, tasks, scored["samples"], cfg, None)


def promote(cfg: EvaluateConfig, ref: PhaseRef, run_id: str, client) -> dict[str, Any]:
    """Decide and apply; returns the decision (a dict) and records it everywhere it belongs."""
    evaluate_dir = ref.path
    rows = json.loads((evaluate_dir / "results.json").read_text())
    suite = ref.summary["suite"]
    mine = S.lookup(rows, "aligned", cfg.primary)
    challenger = evaluated_version(client, evaluate_dir)
    if challenger is None:
        decision = {"outcome": "unregistered", "promote": False, "reason": "the evaluated model has no registered version (align.register_as)"}
        client.set_tag(run_id, "lifecycle.promotion.outcome", decision["outcome"])
        return decision
    name, version = challenger.name, str(challenger.version)
    record_scores(client, name, version, [r for r in rows if r["model"] == "aligned"], suite)
    champion = champion_of(client, name)
    champion_version = str(champion.version) if champion is not None else None
    champion_value = None
    if champion_version not in (None, version):
        champion_value = recorded_score(champion, suite, cfg.primary)
        if champion_value is None:
            log.info("promotion: scoring champion %s v%s on this suite (its recorded scores are from another one)", name, champion_version)
            champ_rows = score_version(client, name, champion_version, evaluate_dir, cfg)
            record_scores(client, name, champion_version, champ_rows, suite)
            hit = S.lookup(champ_rows, ALIAS, cfg.primary)
            champion_value = hit["value"] if hit else None
    d = gate.decide(
        cfg.primary,
        mine["value"],
        champion_value,
        margin=cfg.margin,
        higher_is_better=bool(mine["higher_is_better"]) if mine["higher_is_better"] is not None else True,
        guards=ref.summary.get("guards", {}),
        same_model=champion_version == version,
    ).to_dict()
    d.update(registered_model=name, version=version, champion_version=champion_version, suite=suite)
    if d["promote"]:
        client.set_registered_model_alias(name, ALIAS, version)
    tags = {
        "lifecycle.promotion.outcome": d["outcome"],
        "lifecycle.promotion.reason": d["reason"][:5000],
        "lifecycle.promotion.primary": cfg.primary,
        "lifecycle.promotion.challenger_value": repr(d["challenger_value"]),
        "lifecycle.promotion.champion_value": repr(d["champion_value"]),
        "lifecycle.promotion.champion_version": str(d["champion_version"]),
        "lifecycle.promotion.margin": repr(cfg.margin),
        "lifecycle.promotion.guards": json.dumps(d["guards"], sort_keys=True)[:5000],
        "lifecycle.promotion.evaluate_run_id": run_id,
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
        client.set_tag(run_id, k, v)
    client.set_tag(run_id, "lifecycle.promotion.version", f"models:/{name}/{version}")
    client.log_metric(run_id, "gate/challenger", d["challenger_value"])
    if d["champion_value"] is not None:
        client.log_metric(run_id, "gate/champion", d["champion_value"])
    client.log_metric(run_id, "gate/promoted", float(d["promote"]))
    client.log_dict(run_id, d, "promotion.json")
    return d


def markdown(d: dict[str, Any]) -> str:
    if d.get("outcome") == "unregistered":
        return f"### promotion\n\n{d['reason']}\n"
    guards = "\n".join(f"| {k} | {'ok' if v.get('ok') else 'FAILED'} | {v.get('detail', '')} |" for k, v in d["guards"].items())
    champ = "none" if d["champion_version"] is None else f"v{d['champion_version']}: {d['champion_value']}"
    return (
        f"### promotion: {d['outcome']}\n\n{d['reason']}\n\n"
        f"- model: `models:/{d['registered_model']}/{d['version']}` ({d['primary']} = {d['challenger_value']:.4g})\n"
        f"- champion before: {champ}\n- margin: {d['margin']}\n\n| guard | | detail |\n|---|---|---|\n{guards}\n"
    )
