"""The evaluate phase on toy artifacts with the real lm-eval harness: a trained model beats its
untrained initialisation, baselines are scored on the same items, contamination is applied."""

import json
import math
import shutil

import pytest
import toy_artifacts

from phases.config import EvaluateConfig
from phases.evaluate import suite as S
from phases.evaluate.build import build, score_models, untrained_model
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e

CFG = EvaluateConfig(
    num_examples=12,
    num_choices=3,
    context_chars=60,
    continuation_chars=20,
    instruct_examples=5,
    perplexity_docs=2,
    perplexity_chars=400,
    perplexity_batches=2,
    batch_size=4,
    memorization_samples=0,  # needs a real pretraining output (rows seen): tests/phases/evaluate/test_memorization.py
    seed=0,
)


def pretrain_output(tmp_path_factory, toy_pretrain):
    """The toy model as a pretraining output: its manifest names the seed it was drawn with."""
    d = tmp_path_factory.mktemp("pretrain-out")
    shutil.copytree(toy_pretrain, d, dirs_exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"config": {"seed": 0}}))
    return d


def test_untrained_baseline_is_the_pretraining_init(tmp_path_factory, toy_pretrain, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from phases.pretrain.runtime import build_model

    pre = pretrain_output(tmp_path_factory, toy_pretrain)
    torch.manual_seed(0)  # what phases/pretrain/entry.py does before building the engine
    expected = build_model(json.loads((pre / "config.json").read_text()), "sdpa").state_dict()
    got = AutoModelForCausalLM.from_pretrained(untrained_model(pre, tmp_path / "u")).state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert (tmp_path / "u" / "tokenizer.json").is_file()


def test_trained_model_beats_its_untrained_init(tmp_path_factory, trained_toy):
    """Questions from text the toy model trained on: it prefers the true continuations, its init does not."""
    from transformers import AutoTokenizer

    from phases.model import artifact

    root = tmp_path_factory.mktemp("learned")
    tok = AutoTokenizer.from_pretrained(trained_toy.pretrain_dir)
    rows = artifact.rows(trained_toy.model_dir, "train")
    seen = [{"id": f"row/{r}", "source": "seen", "text": tok.decode(rows[r].tolist(), skip_special_tokens=True)} for r in trained_toy.seen_rows]
    data = toy_artifacts.make_data_dir(root / "data", {"train": seen, "validation": seen})
    cfg = CFG.model_copy(update={"tasks": ("lifecycle_heldout_mc",), "num_examples": 24, "context_chars": 80, "continuation_chars": 24})
    S.build_suite(cfg, data_dir=data, align_dir=trained_toy.pretrain_dir, suite=root / "suite")
    tm = S.task_manager([S.runnable(root / "suite", root / "run")])
    tasks = S.load_tasks(tm, ["lifecycle_heldout_mc"])
    models = {"trained": (trained_toy.pretrain_dir,) * 2, "untrained": (trained_toy.init_dir,) * 2}
    rows = score_models(models, tm, tasks, S.all_samples(tasks, None), cfg, None)
    t, u = S.lookup(rows, "trained", "lifecycle_heldout_mc/acc"), S.lookup(rows, "untrained", "lifecycle_heldout_mc/acc")
    assert t["n"] == u["n"] == 24
    assert t["value"] - u["value"] > t["stderr"] + u["stderr"], (t, u)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, toy_data, toy_align, toy_pretrain, toy_packed):
    out = tmp_path_factory.mktemp("evaluate")
    sink = ListSink()
    pre = pretrain_output(tmp_path_factory, toy_pretrain)
    inputs = {k: toy_artifacts.ref(k, p) for k, p in (("align", toy_align), ("pretrain", pre), ("data", toy_data), ("model", toy_packed))}
    return build(CFG, inputs, out, sink), sink, out


def test_summary_and_guards(evaluated):
    summary, _, _ = evaluated
    assert summary["primary"] == "lifecycle_heldout_mc/acc" and 0 <= summary["primary_value"] <= 1
    assert summary["primary_stderr"] > 0 and summary["untrained_value"] is not None
    assert math.isfinite(summary["val_perplexity"]) and summary["val_perplexity"] > 1
    assert set(summary["guards"]) == {"capability", "contamination"} and summary["guards"]["capability"]["ok"]
    assert len(summary["suite"]) == 20


def test_every_model_scored_on_the_same_items(evaluated):
    _, _, out = evaluated
    rows = json.loads((out / "results.json").read_text())
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], set()).add((r["task"], r["metric"], r["n"]))
    assert set(by_model) == {"aligned", "pretrained", "untrained"}
    assert by_model["aligned"] == by_model["pretrained"] == by_model["untrained"]
    tasks = {t for t, _, _ in by_model["aligned"]}
    assert {"lifecycle_heldout_mc", "lifecycle_instruct_mc", "lifecycle_instruct_gen", "lifecycle_ppl_code", "lifecycle_ppl_docs"} == tasks
    scored = json.loads((out / "scored.json").read_text())
    assert set(scored["samples"]) == tasks and len(scored["samples"]["lifecycle_heldout_mc"]) == CFG.num_examples
    for model in by_model:
        assert (out / "lm_eval" / f"{model}.json").is_file()
    table = (out / "results.md").read_text()
    assert "| aligned | pretrained | untrained |" in table and "contamination" in table.lower()


def test_contamination_report_covers_every_task(evaluated):
    _, _, out = evaluated
    report = json.loads((out / "contamination.json").read_text())
    assert report["policy"] == "flag"
    assert set(report["tasks"]) == set(json.loads((out / "scored.json").read_text())["tasks"])


def test_metrics_logged_with_mlflow_names(evaluated):
    summary, sink, _ = evaluated
    names = {name for name, _, _ in sink.metrics}
    assert sink.series("eval/aligned/lifecycle_heldout_mc/acc") == [summary["primary_value"]]
    assert {
        "eval/untrained/lifecycle_heldout_mc/acc",
        "eval/untrained/lifecycle_heldout_mc/acc_stderr",
        "eval/pretrained/lifecycle_ppl_code/bits_per_byte",
    } <= names
    assert "contamination/lifecycle_heldout_mc/rate" in names and "eval/aligned/val_perplexity" in names
    assert all("," not in n for n in names)


def test_clean_policy_scores_only_clean_items(tmp_path_factory, toy_data, toy_align, toy_pretrain, toy_packed):
    """Validation items planted in the training split are contaminated: under `clean` they are not
    scored, a task with no clean item is left out; under `fail` the run fails naming the task."""
    from phases.data.io import read_split
    from phases.errors import DataError

    root = tmp_path_factory.mktemp("planted")
    train, val = read_split(toy_data, "train"), read_split(toy_data, "validation")
    code = next(d for d in val if d["source"] == "code")
    docs = [d for d in val if d["source"] == "docs"]  # every docs item planted
    planted = toy_artifacts.make_data_dir(root / "data", {"train": train + [code] + docs, "validation": val})
    cfg = CFG.model_copy(
        update={
            "tasks": ("lifecycle_ppl",),
            "perplexity_docs": 4,
            "contamination_policy": "clean",
            "baselines": False,
            "primary": "lifecycle_ppl_code/bits_per_byte",
        }
    )
    inputs = {k: toy_artifacts.ref(k, p) for k, p in (("align", toy_align), ("pretrain", toy_pretrain), ("data", planted), ("model", toy_packed))}
    summary = build(cfg, inputs, root / "out", ListSink())
    scored = json.loads((root / "out" / "scored.json").read_text())
    report = json.loads((root / "out" / "contamination.json").read_text())
    assert report["tasks"]["lifecycle_ppl_code"]["contaminated"] >= 1 and "lifecycle_ppl_code" in summary["contaminated_tasks"]
    assert set(scored["samples"]["lifecycle_ppl_code"]).isdisjoint(report["tasks"]["lifecycle_ppl_code"]["contaminated_indices"])
    assert scored["unscored"] == ["lifecycle_ppl_docs"] and scored["tasks"] == ["lifecycle_ppl_code"]
    rows = json.loads((root / "out" / "results.json").read_text())
    assert {r["task"] for r in rows} == {"lifecycle_ppl_code"}
    with pytest.raises(DataError, match="lifecycle_ppl_code"):
        build(cfg.model_copy(update={"contamination_policy": "fail"}), inputs, root / "out-fail", ListSink())
