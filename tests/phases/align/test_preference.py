"""DPO and the reward model on a learnable preference set: both beat the SFT model on held-out rows."""

import json

import pytest

from phases.align.build import build
from phases.config import AlignConfig
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, align_inputs, style_preferences):
    cfg = AlignConfig(
        method="dpo",
        preference_data=str(style_preferences),
        reward_model=True,
        max_steps=4,
        lr=5e-3,
        dpo_steps=12,
        dpo_lr=5e-3,
        reward_steps=16,
        reward_lr=5e-3,
        batch_size=4,
        max_length=128,
        num_samples=1,
        sample_tokens=4,
        eval_fraction=0.4,
    )
    out = tmp_path_factory.mktemp("align-dpo")
    sink = ListSink()
    summary = build(cfg, align_inputs, out, sink)
    return summary, sink, out


def test_dpo_raises_held_out_preference_accuracy(dpo_run):
    summary, _, _ = dpo_run
    assert summary["pref_accuracy"] > summary["pref_accuracy_sft"], summary
    assert summary["implicit_accuracy"] > 0.5, summary  # chosen's implicit reward above rejected's


def test_dpo_logs_trl_metrics_in_its_own_stage(dpo_run):
    _, sink, _ = dpo_run
    assert set(sink.children) == {"sft", "reward", "dpo"}
    dpo = sink.children["dpo"]
    for key in ("rewards/accuracies", "rewards/margins", "train/loss", "dpo/implicit_accuracy"):
        assert dpo.series(key), key
    assert dpo.params["dpo_beta"] == 0.1 and "dpo_beta" not in sink.children["sft"].params


def test_reward_model_beats_chance_by_more_than_its_standard_error(dpo_run):
    summary, sink, out = dpo_run
    assert summary["reward_accuracy"] - 0.5 > summary["reward_accuracy_stderr"], summary
    assert sink.children["reward"].series("reward/accuracy") == [summary["reward_accuracy"]]
    assert (out / "reward_model" / "model.safetensors").is_file()
    config = json.loads((out / "reward_model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config.get("id2label", {0: "LABEL_0"})) == 1


def test_capability_table_has_every_stage(dpo_run):
    _, _, out = dpo_run
    table = json.loads((out / "capability.json").read_text())["table"]
    assert [r["stage"] for r in table] == ["pretrained", "sft", "dpo"]
