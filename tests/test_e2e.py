"""The tiny preset end to end through the real CLI: Spark, tokenizers, DeepSpeed, TRL, lm-eval,
Prefect (a temporary local server) and MLflow (SQLite). Then a rerun that reuses every phase,
and a subset run that recomputes only what its override changed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))
PHASES = ["data", "model", "pretrain", "align", "inference", "evaluate"]


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    from flows.env import defaults

    env = {k: v for k, v in os.environ.items() if k not in defaults(home) and k not in ("PREFECT_API_URL", "MLFLOW_RUN_ID")}
    env["LIFECYCLE_HOME"] = str(home)
    r = subprocess.run([LIFECYCLE, "run", *args], capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        print(r.stdout[-5000:], r.stderr[-5000:])
    return r


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lifecycle_home")
    first = run_cli(home)
    assert first.returncode == 0
    assert "MLflow parent run:" in first.stdout
    (home / "first_run.log").write_text(first.stdout + first.stderr)
    return home


def test_phase_progress_reaches_the_console(home):
    """The phases' own log lines (lifecycle.* loggers) reach the console through Prefect's handlers."""
    log = (home / "first_run.log").read_text()
    assert "pretrain: training from scratch" in log and "pretrain done:" in log


def test_prefect_artifacts_link_the_mlflow_runs(home):
    import sqlite3

    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        rows = dict(db.execute("select key, data from artifact").fetchall())
    assert {f"{p}-summary" for p in PHASES} | {"mlflow-parent-run", "pretrain-progress", "align-progress", "promotion"} <= set(rows)
    assert "first_champion" in rows["promotion"]
    assert "MLflow run:" in rows["pretrain-summary"] and "final_loss" in rows["pretrain-summary"]


def test_mlflow_artifacts_live_under_the_home(home, mlflow_client):
    exp = mlflow_client.get_experiment_by_name("llm-lifecycle")
    assert exp.artifact_location == (home / "mlartifacts").resolve().as_uri()


@pytest.fixture(scope="module")
def mlflow_client(home):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def parents_and_children(client):
    exp = client.get_experiment_by_name("llm-lifecycle")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=500)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for p in parents}
    return parents, children


def test_first_run_traces_six_finished_phases(home, mlflow_client):
    parents, children = parents_and_children(mlflow_client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kids = children[parents[0].info.run_id]
    assert sorted(r.data.tags["lifecycle.phase"] for r in kids) == sorted(PHASES)
    for r in kids:
        assert r.info.status == "FINISHED"
        assert r.data.params, r.info.run_name
        assert r.data.metrics, r.info.run_name
        assert "manifest.json" in [a.path for a in mlflow_client.list_artifacts(r.info.run_id)]
        assert r.data.tags["lifecycle.reused"] == "false"
        assert r.data.tags["lifecycle.prefect_flow_run_id"] != "none"
        assert r.data.tags["lifecycle.config_hash"] == parents[0].data.tags["lifecycle.config_hash"]
        assert r.data.tags["mlflow.source.git.commit"]
    by_phase = {r.data.tags["lifecycle.phase"]: r for r in kids}
    artifacts = lambda phase: {a.path for a in mlflow_client.list_artifacts(by_phase[phase].info.run_id)}  # noqa: E731
    assert {"plan_table.json", "tokenizer_stats.json", "tokenizer", "packed.json"} <= artifacts("model")
    assert {"source_shares.json", "rejected_summary.json"} <= artifacts("data")
    assert "deepspeed_config.json" in artifacts("pretrain")
    assert any(k.startswith("fertility/") for k in by_phase["model"].data.metrics)
    # Every phase after data consumes its upstream outputs as MLflow datasets with digests.
    digests = {d.dataset.name: d.dataset.digest for d in by_phase["evaluate"].inputs.dataset_inputs}
    assert len(digests) == 4 and all(digests.values())


def test_the_aligned_model_is_registered_as_challenger(home, mlflow_client):
    import mlflow.transformers

    parents, children = parents_and_children(mlflow_client)
    align = next(r for r in children[parents[0].info.run_id] if r.data.tags["lifecycle.phase"] == "align")
    mv = mlflow_client.get_model_version_by_alias("llm-lifecycle-tiny", "challenger")
    assert align.data.tags["lifecycle.registered_model"] == f"models:/llm-lifecycle-tiny/{mv.version}"
    assert mv.run_id == align.info.run_id and mv.tags["lifecycle.parent_run_id"] == parents[0].info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    pipe = mlflow.transformers.load_model("models:/llm-lifecycle-tiny@challenger")
    assert pipe("def read", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("def read")


def _evaluate_run(mlflow_client, parent_index=0):
    parents, children = parents_and_children(mlflow_client)
    return next(r for r in children[parents[parent_index].info.run_id] if r.data.tags["lifecycle.phase"] == "evaluate")


def test_evaluation_shows_the_evidence(home, mlflow_client):
    """Scores with stderr for the model and its baselines, perplexity per source, the
    memorization and contamination reports, and the first model evaluated as champion."""
    import math

    run = _evaluate_run(mlflow_client)
    m = run.data.metrics
    for model in ("aligned", "pretrained", "untrained"):
        for task in ("lifecycle_heldout_mc", "lifecycle_instruct_mc"):
            assert f"eval/{model}/{task}/acc" in m and f"eval/{model}/{task}/acc_stderr" in m
        assert f"eval/{model}/lifecycle_instruct_gen/exact_match" in m
        assert {f"eval/{model}/lifecycle_ppl_{s}/bits_per_byte" for s in ("code", "docs")} <= set(m)
        # Every licence text overlaps the training data: under the preset's `clean` policy it is not scored.
        assert f"eval/{model}/lifecycle_ppl_licenses/bits_per_byte" not in m
    assert m["contamination/lifecycle_ppl_licenses/rate"] == 1.0
    assert "memorization/aligned/exact_match_rate" in m and "contamination/lifecycle_heldout_mc/rate" in m
    arts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/results.json", "eval/results.md", "eval/contamination.json", "eval/memorization.json"} <= arts
    # The trained model beats its untrained initialisation on the primary task by more than the stderr.
    key = "eval/{}/lifecycle_heldout_mc/acc"
    gap = m[key.format("aligned")] - m[key.format("untrained")]
    assert gap > m[key.format("aligned") + "_stderr"], (m[key.format("aligned")], m[key.format("untrained")])
    # The tiny preset trains enough: validation loss at least 40% below ln(vocabulary size).
    pretrain = next((home / "outputs" / "pretrain").iterdir())
    val_loss = json.loads((pretrain / "summary.json").read_text())["val_loss"]
    assert val_loss <= 0.6 * math.log(4096), val_loss
    # First model ever evaluated: champion, with the decision recorded on the version and the run.
    champion = mlflow_client.get_model_version_by_alias("llm-lifecycle-tiny", "champion")
    assert champion.tags["lifecycle.promotion.outcome"] == "first_champion"
    assert champion.tags["lifecycle.promotion.evaluate_run_id"] == run.info.run_id
    assert run.data.tags["lifecycle.promotion.outcome"] == "first_champion"
    assert "promotion.json" in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}


def test_pretraining_loss_falls(home, mlflow_client):
    parents, children = parents_and_children(mlflow_client)
    pretrain = next(r for r in children[parents[0].info.run_id] if r.data.tags["lifecycle.phase"] == "pretrain")
    losses = [m.value for m in sorted(mlflow_client.get_metric_history(pretrain.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(losses) >= 20
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_outputs_are_usable(home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pretrain_dir = next((home / "outputs" / "pretrain").iterdir())
    model = AutoModelForCausalLM.from_pretrained(pretrain_dir)
    tok = AutoTokenizer.from_pretrained(pretrain_dir)
    assert model.config.vocab_size == len(tok)
    inference = next((home / "outputs" / "inference").iterdir())
    gens = [json.loads(line) for line in (inference / "generations.jsonl").read_text().splitlines()]
    summary = json.loads((inference / "manifest.json").read_text())["summary"]
    assert len({g["prompt_sha256"] for g in gens}) == summary["num_prompts"] > 0
    assert sum(g["completion_tokens"] for g in gens) > 0


def test_rerun_reuses_every_phase_then_subset_recomputes_only_what_changed(home, mlflow_client):
    second = run_cli(home)
    assert second.returncode == 0
    assert second.stdout.count(" reused ") == 6, second.stdout
    parents, children = parents_and_children(mlflow_client)
    assert len(parents) == 2
    assert {r.data.tags["lifecycle.reused"] for r in children[parents[1].info.run_id]} == {"true"}
    assert all(r.data.tags.get("lifecycle.source_run_id") for r in children[parents[1].info.run_id])

    third = run_cli(home, "--phases", "inference", "--set", "inference.temperature=0.5")
    assert third.returncode == 0
    lines = {
        line.split()[0]: line.split()[1]
        for line in third.stdout.splitlines()
        if line.startswith("  ") and line.split()[:1] and line.split()[0] in PHASES
    }
    assert lines == {"data": "reused", "model": "reused", "pretrain": "reused", "align": "reused", "inference": "ran"}


def test_a_changed_alignment_gives_a_challenger_and_a_recorded_decision(home, mlflow_client):
    """Nightly with another alignment setting: a new version, evaluated against the champion."""
    before = mlflow_client.get_model_version_by_alias("llm-lifecycle-tiny", "champion").version
    r = run_cli(home, "--phases", "align,evaluate", "--set", "align.dpo_beta=0.2")
    assert r.returncode == 0
    new = mlflow_client.get_model_version_by_alias("llm-lifecycle-tiny", "challenger")
    assert int(new.version) == int(before) + 1
    outcome = new.tags["lifecycle.promotion.outcome"]
    assert outcome in ("promoted", "kept_champion", "blocked")
    assert new.tags["lifecycle.promotion.champion_version"] == str(before)
    champion = mlflow_client.get_model_version_by_alias("llm-lifecycle-tiny", "champion").version
    assert str(champion) == (str(new.version) if outcome == "promoted" else str(before))
    ran = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ") and line.split()[:1] and line.split()[0] in PHASES}
    assert ran == {"data", "model", "pretrain", "align", "evaluate"}  # inference: not read by evaluate, skipped
