"""GRPO and RLOO run against the trained reward model and log reward and KL (beta > 0)."""

import math

import pytest

from phases.align.build import build
from phases.config import AlignConfig
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_rl_logs_reward_and_kl(method, tmp_path, align_inputs, style_preferences):
    cfg = AlignConfig(
        method=method,
        preference_data=str(style_preferences),
        max_steps=2,
        lr=5e-3,
        reward_steps=8,
        reward_lr=5e-3,
        online_steps=3,
        num_generations=2,
        max_completion_length=8,
        batch_size=4,
        max_length=128,
        num_samples=1,
        sample_tokens=4,
    )
    sink = ListSink()
    summary = build(cfg, align_inputs, tmp_path / "out", sink)
    assert set(sink.children) == {"sft", "reward", method}
    stage = sink.children[method]
    rewards, kls = stage.series("reward"), stage.series("kl")
    assert len(rewards) == cfg.online_steps and len(kls) == cfg.online_steps
    assert all(math.isfinite(v) for v in rewards + kls) and all(k >= 0 for k in kls)
    assert stage.series("completions/mean_length") and 0 < stage.series("completions/mean_length")[-1] <= cfg.max_completion_length
    assert any(k.startswith("clip_ratio") for k, _, _ in stage.metrics)
    assert summary["reward"] == rewards[-1] and summary["kl"] == kls[-1]
    assert stage.params["online_beta"] == cfg.online_beta > 0
    assert (tmp_path / "out" / "reward_model" / "model.safetensors").is_file()
