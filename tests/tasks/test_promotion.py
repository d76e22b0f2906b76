"""Eval-gated promotion against a real MLflow registry (SQLite): the alias moves only when the
challenger wins by the margin with its guards passed; the champion is re-scored, for real,
when its recorded scores come from another suite."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))  # toy_artifacts

import toy_artifacts  # noqa: E402

from phases.config import EvaluateConfig  # noqa: E402
from phases.refs import PhaseRef  # noqa: E402
from tasks import promotion  # noqa: E402

NAME = "toy-llm"
OK = {"capability": {"ok": True, "detail": "+5%"}, "contamination": {"ok": True, "detail": "0%"}}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("promotion-test", artifact_location=str(tmp_path / "artifacts"))
    return client, exp, tmp_path


def _aligned(client, exp, root: Path, i: int, model_dir: Path | None = None) -> tuple[Path, str]:
    """An align output (its manifest names its MLflow run) registered as a new version."""
    run_id = client.create_run(exp, run_name=f"align-{i}").info.run_id
    align = root / f"align-{i}"
    if model_dir is not None:
        from tasks.model_registry import register_aligned_model

        version = register_aligned_model(client.tracking_uri, run_id, model_dir, NAME)
        align = Path(model_dir)
    else:
        align.mkdir()
        try:
            client.create_registered_model(NAME)
        except Exception:
            pass
        version = client.create_model_version(NAME, source=str(align), run_id=run_id).version
    (align / "manifest.json").write_text(json.dumps({"lineage": {"mlflow_run_id": run_id}}))
    return align, str(version)


def _evaluated(client, exp, root: Path, i: int, align: Path, value: float, suite: str = "S1", guards=OK, evaluate_dir: Path | None = None, task="t"):
    """An evaluate output scoring the align output at ``value`` on the primary metric."""
    out = evaluate_dir or root / f"evaluate-{i}"
    out.mkdir(exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"inputs": {"align": {"uri": str(align)}}}))
    row = {"model": "aligned", "task": task, "metric": "acc", "value": value, "stderr": 0.05, "n": 64, "version": 1.0, "higher_is_better": True}
    (out / "results.json").write_text(json.dumps([row]))
    ref = PhaseRef("evaluate", f"k{i}", str(out), f"fp{i}", {"suite": suite, "guards": guards})
    return ref, client.create_run(exp, run_name=f"evaluate-{i}").info.run_id


def _champion(client) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_first_then_better_then_worse(registry):
    client, exp, root = registry
    cfg = EvaluateConfig(primary="t/acc", margin=0.0)

    align1, v1 = _aligned(client, exp, root, 1)
    ref, run = _evaluated(client, exp, root, 1, align1, 0.50)
    d = promotion.promote(cfg, ref, run, client)
    assert (d["outcome"], d["version"], _champion(client)) == ("first_champion", v1, v1)
    tags = client.get_model_version(NAME, v1).tags
    assert tags["lifecycle.promotion.outcome"] == "first_champion" and tags["lifecycle.eval.t/acc"] == "0.5"
    assert tags["lifecycle.eval.suite"] == "S1" and tags["lifecycle.promotion.evaluate_run_id"] == run

    align2, v2 = _aligned(client, exp, root, 2)
    ref, run = _evaluated(client, exp, root, 2, align2, 0.60)
    d = promotion.promote(cfg, ref, run, client)
    assert (d["outcome"], d["champion_version"], d["champion_value"], _champion(client)) == ("promoted", v1, 0.5, v2)
    r = client.get_run(run)
    assert r.data.tags["lifecycle.promotion.outcome"] == "promoted" and r.data.metrics["gate/promoted"] == 1.0
    assert r.data.metrics["gate/champion"] == 0.5 and r.data.metrics["gate/challenger"] == 0.6

    align3, v3 = _aligned(client, exp, root, 3)
    ref, run = _evaluated(client, exp, root, 3, align3, 0.55)
    d = promotion.promote(cfg, ref, run, client)
    assert (d["outcome"], _champion(client)) == ("kept_champion", v2)  # a worse challenger leaves the champion
    assert client.get_model_version(NAME, v3).tags["lifecycle.promotion.champion_value"] == "0.6"


def test_margin_and_guards(registry):
    client, exp, root = registry
    align1, v1 = _aligned(client, exp, root, 1)
    promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 1, align1, 0.50), client)

    align2, _ = _aligned(client, exp, root, 2)
    d = promotion.promote(EvaluateConfig(primary="t/acc", margin=0.05), *_evaluated(client, exp, root, 2, align2, 0.54), client)
    assert (d["outcome"], _champion(client)) == ("kept_champion", v1)  # better, but not by the margin

    align3, _ = _aligned(client, exp, root, 3)
    bad = {**OK, "capability": {"ok": False, "detail": "perplexity +40% after alignment (max 25%)"}}
    d = promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 3, align3, 0.90, guards=bad), client)
    assert (d["outcome"], _champion(client)) == ("blocked", v1) and "capability" in d["reason"]

    align4, v4 = _aligned(client, exp, root, 4)
    d = promotion.promote(EvaluateConfig(primary="t/acc", margin=0.05), *_evaluated(client, exp, root, 4, align4, 0.56), client)
    assert (d["outcome"], _champion(client)) == ("promoted", v4)


def test_scores_on_another_suite_do_not_hide_this_suites(registry):
    """`lifecycle evaluate` on another suite (say a standard task) must not make the gate re-score
    the champion on this one: each suite's scores are kept."""
    client, exp, root = registry
    align1, v1 = _aligned(client, exp, root, 1)
    promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 1, align1, 0.5), client)
    other = [{"task": "arc_easy_local", "metric": "acc", "value": 0.25}]
    promotion.record_scores(client, NAME, v1, other, "ARC")
    champion = client.get_model_version(NAME, v1)
    assert promotion.recorded_score(champion, "S1", "t/acc") == 0.5 and promotion.recorded_score(champion, "ARC", "arc_easy_local/acc") == 0.25
    assert promotion.recorded_score(champion, "S2", "t/acc") is None
    align2, v2 = _aligned(client, exp, root, 2)
    d = promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 2, align2, 0.6), client)
    assert (d["outcome"], d["champion_value"], _champion(client)) == ("promoted", 0.5, v2)  # from the record, no download


def test_reevaluating_the_champion_is_not_a_promotion(registry):
    client, exp, root = registry
    align1, v1 = _aligned(client, exp, root, 1)
    promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 1, align1, 0.5), client)
    d = promotion.promote(EvaluateConfig(primary="t/acc"), *_evaluated(client, exp, root, 2, align1, 0.5, suite="S2"), client)
    assert (d["outcome"], _champion(client)) == ("already_champion", v1)


def test_unregistered_model_is_recorded_not_promoted(registry):
    client, exp, root = registry
    align = root / "align-x"
    align.mkdir()
    (align / "manifest.json").write_text(json.dumps({"lineage": {"mlflow_run_id": "0" * 32}}))
    ref, run = _evaluated(client, exp, root, 1, align, 0.5)
    d = promotion.promote(EvaluateConfig(primary="t/acc"), ref, run, client)
    assert d["outcome"] == "unregistered" and client.get_run(run).data.tags["lifecycle.promotion.outcome"] == "unregistered"


@pytest.mark.e2e
def test_champion_from_another_suite_is_rescored_on_this_one(registry):
    """The champion's recorded score is from suite OLD: it is downloaded from the registry and
    scored with lm-eval on this evaluation's items before the comparison."""
    from phases.evaluate import suite as S
    from phases.evaluate.build import prepare

    client, exp, root = registry
    toy_data = toy_artifacts.make_data_dir(root / "data")
    champ_model = toy_artifacts.make_align_dir(root / "champ-model", toy_data, reward_model=False, seed=1)
    chal_model = toy_artifacts.make_align_dir(root / "chal-model", toy_data, reward_model=False, seed=2)
    _, v1 = _aligned(client, exp, root, 1, champ_model)
    client.set_registered_model_alias(NAME, "champion", v1)
    promotion.record_scores(client, NAME, v1, [{"task": "lifecycle_heldout_mc", "metric": "acc", "value": 0.99}], "OLD")
    align2, v2 = _aligned(client, exp, root, 2, chal_model)

    cfg = EvaluateConfig(tasks=("lifecycle_heldout_mc",), num_examples=8, num_choices=3, context_chars=60, continuation_chars=20, batch_size=4)
    out = root / "evaluate-2"
    _, _, samples, _, scored = prepare(cfg, toy_data, align2, out / "suite", root / "work")
    (out / "scored.json").write_text(json.dumps(scored))
    ref, run = _evaluated(
        client, exp, root, 2, align2, 2.0, suite=scored["suite"], evaluate_dir=out, task="lifecycle_heldout_mc"
    )  # 2.0: above any accuracy
    d = promotion.promote(cfg.model_copy(update={"primary": "lifecycle_heldout_mc/acc"}), ref, run, client)
    # The stale 0.99 was not used: the champion was scored now, on the same 8 items.
    tags = client.get_model_version(NAME, v1).tags
    assert tags["lifecycle.eval.suite"] == scored["suite"]
    assert d["champion_value"] == float(tags["lifecycle.eval.lifecycle_heldout_mc/acc"]) != 0.99
    assert d["champion_value"] * 8 == pytest.approx(round(d["champion_value"] * 8))
    assert (d["outcome"], _champion(client)) == ("promoted", v2)
    assert len(samples["lifecycle_heldout_mc"]) == 8 and S.fingerprint(out / "suite") == scored["suite"]
