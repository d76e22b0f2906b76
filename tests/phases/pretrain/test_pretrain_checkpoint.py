"""The pure parts of checkpointing: where, whether to resume, data position, RNG round trip, MFU."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from phases.config import PretrainConfig
from phases.errors import DataError
from phases.pretrain import checkpoint
from phases.pretrain.flops import flops_per_token, matmul_params, mfu, peak_flops
from phases.pretrain.loop import PackedSequences

CFG = PretrainConfig(max_steps=20, warmup_steps=2)


def _write_checkpoint(ckpt_dir: Path, tag: str, data_fp: str, tok: str = "tok", generation: int = 0) -> None:
    (ckpt_dir / tag).mkdir(parents=True)
    (ckpt_dir / tag / checkpoint.STATE_FILE).write_text("{}")
    (ckpt_dir / checkpoint.LATEST).write_text(
        json.dumps({"tag": tag, "step": 10, "generation": generation, "data_fingerprint": data_fp, "tokenizer_digest": tok})
    )


def test_checkpoint_dir_is_stable_and_ignores_operational_fields(model_phase_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    a = checkpoint.checkpoint_dir(CFG, model_phase_dir, tmp_path / "outputs" / "pretrain" / ".k.staging-1234")
    b = checkpoint.checkpoint_dir(
        CFG.model_copy(update={"timeout_s": 99, "checkpoint_every": 3, "on_new_data": "warm_start"}), model_phase_dir, tmp_path / "elsewhere"
    )
    assert a == b and a.parent == tmp_path / "home" / "checkpoints" / "pretrain"
    assert checkpoint.checkpoint_dir(CFG.model_copy(update={"lr": 1e-4}), model_phase_dir, tmp_path) != a
    monkeypatch.delenv("LIFECYCLE_HOME")
    staged = checkpoint.checkpoint_dir(CFG, model_phase_dir, tmp_path / "outputs" / "pretrain" / ".k.staging-1")
    assert staged.parent == tmp_path / "outputs" / "pretrain" / ".checkpoints" / "pretrain"


def test_plan_fresh_resume_and_refusal(tmp_path):
    d = tmp_path / "ckpt"
    assert checkpoint.plan_resume(CFG, d, "fp1", "tok")["mode"] == "fresh"
    _write_checkpoint(d, "g0-step0000010", "fp1")
    plan = checkpoint.plan_resume(CFG, d, "fp1", "tok")
    assert (plan["mode"], plan["tag"], plan["generation"]) == ("resume", "g0-step0000010", 0)
    with pytest.raises(DataError, match=r"fp1.*fp2.*on_new_data=warm_start.*on_new_data=retrain"):
        checkpoint.plan_resume(CFG.model_copy(update={"on_new_data": "fail"}), d, "fp2", "tok")
    warm = checkpoint.plan_resume(CFG.model_copy(update={"on_new_data": "warm_start"}), d, "fp2", "tok")
    assert (warm["mode"], warm["generation"], warm["tag"]) == ("warm", 1, "g0-step0000010")
    with pytest.raises(DataError, match="tokenizer changed"):
        checkpoint.plan_resume(CFG.model_copy(update={"on_new_data": "warm_start"}), d, "fp2", "other-tok")
    # The default, as a nightly run on new data needs it: train from scratch, the old checkpoints replaced.
    retrain = checkpoint.plan_resume(CFG, d, "fp2", "other-tok")
    assert (retrain["mode"], retrain["replaced"]) == ("fresh", "g0-step0000010") and not d.exists()


def test_resume_never_deletes_and_incomplete_checkpoint_is_ignored(tmp_path):
    d = tmp_path / "ckpt"
    _write_checkpoint(d, "g0-step0000010", "fp1")
    (d / "g0-step0000010" / checkpoint.STATE_FILE).unlink()  # killed before the state was written
    assert checkpoint.plan_resume(CFG, d, "fp1", "tok")["mode"] == "fresh"
    _write_checkpoint(d, "g0-step0000020", "fp1")
    assert checkpoint.plan_resume(CFG.model_copy(update={"resume": "never"}), d, "fp1", "tok")["mode"] == "fresh"
    assert not d.exists()


def test_train_batches_start_equals_skipping(model_phase_dir):
    meta = json.loads((model_phase_dir / "packed.json").read_text())
    data = PackedSequences(model_phase_dir / "train.bin", meta, rank=1, world_size=2, seed=3)
    per_epoch = (data.rows // 2) // 4
    stream = data.train_batches(4)
    first = [next(stream) for _ in range(per_epoch + 5)]  # crosses an epoch boundary
    for start in (0, 3, per_epoch, per_epoch + 2):
        resumed = data.train_batches(4, start=start)
        for expected in first[start:]:
            assert np.array_equal(next(resumed).numpy(), expected.numpy())


def test_rng_state_round_trip():
    import torch

    state = checkpoint.get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    checkpoint.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_peak_flops_table_and_override():
    assert peak_flops(None, None) is None  # CPU: no MFU
    assert peak_flops(None, "AMD EPYC") is None
    assert peak_flops(None, "NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops(None, "NVIDIA H100 PCIe") == 756e12
    assert peak_flops(None, "NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops(None, "NVIDIA H200") == 989e12
    assert peak_flops(1e12, None) == 1e12 and peak_flops(2e12, "NVIDIA H100") == 2e12


def test_flops_per_token_counts_matmul_weights(model_phase_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = json.loads((model_phase_dir / "model_config.json").read_text())  # untied embeddings
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig.from_dict(arch))
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    embedding = model.model.embed_tokens.weight.numel()
    assert matmul_params(arch) == sum(p.numel() for p in model.parameters()) - norms - embedding
    seq = 32
    assert flops_per_token(arch, seq) == 6 * matmul_params(arch) + 12 * arch["num_hidden_layers"] * arch["hidden_size"] * seq
    assert mfu(1000.0, 1e9, 1e13, 2) == pytest.approx(0.05)
    assert mfu(1000.0, 1e9, None, 1) is None
