"""align.lora: SFT and DPO train LoRA adapters; the adapters are saved and the published model has them merged."""

import json

import pytest
import torch
from safetensors.torch import load_file

from phases.align.build import build
from phases.config import AlignConfig
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e


def test_lora_sft_and_dpo_save_adapters_and_merge(tmp_path, align_inputs, style_preferences, toy_pretrain):
    from transformers import AutoModelForCausalLM

    cfg = AlignConfig(
        method="dpo",
        lora=True,
        lora_r=4,
        lora_alpha=8,
        preference_data=str(style_preferences),
        max_steps=6,
        lr=2e-2,
        dpo_steps=6,
        dpo_lr=2e-2,
        batch_size=4,
        max_length=128,
        num_samples=1,
        sample_tokens=4,
    )
    out = tmp_path / "out"
    summary = build(cfg, align_inputs, out, ListSink())
    assert summary["sft_eval_loss"] < summary["sft_eval_loss_before"]
    assert summary["implicit_accuracy"] > 0.5
    for stage in ("sft", "dpo"):
        adapter = json.loads((out / "adapters" / stage / "adapter_config.json").read_text())
        assert adapter["peft_type"] == "LORA" and adapter["r"] == 4
        assert (out / "adapters" / stage / "adapter_model.safetensors").is_file()
    before, after = load_file(toy_pretrain / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()  # merged: a plain model, no lora_A / lora_B tensors
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in changed) and not any("embed_tokens" in k for k in changed)  # only adapted linears move
    AutoModelForCausalLM.from_pretrained(out)
