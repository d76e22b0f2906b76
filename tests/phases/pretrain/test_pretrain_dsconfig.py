"""deepspeed_config: batch arithmetic, precision, ZeRO stage, optimizer and lr schedule."""

from __future__ import annotations

import pytest

from phases.config import PretrainConfig
from phases.errors import ConfigError
from phases.pretrain.dsconfig import deepspeed_config, global_batch_size, warmup_cosine_params


@pytest.mark.parametrize("micro,accum,world", [(16, 1, 1), (4, 2, 2), (2, 8, 16)])
def test_batch_arithmetic(micro, accum, world):
    cfg = PretrainConfig(micro_batch_size=micro, grad_accum=accum)
    ds = deepspeed_config(cfg, world)
    assert ds["train_micro_batch_size_per_gpu"] == micro
    assert ds["gradient_accumulation_steps"] == accum
    assert ds["train_batch_size"] == micro * accum * world == global_batch_size(cfg, world)


@pytest.mark.parametrize("precision,bf16,fp16", [("fp32", False, False), ("bf16", True, False), ("fp16", False, True)])
def test_precision_flags(precision, bf16, fp16):
    ds = deepspeed_config(PretrainConfig(precision=precision), 1)
    assert ds["bf16"]["enabled"] is bf16
    assert ds["fp16"]["enabled"] is fp16


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage(stage):
    assert deepspeed_config(PretrainConfig(zero_stage=stage), 2)["zero_optimization"]["stage"] == stage


def test_optimizer_clipping_and_quiet_printing():
    cfg = PretrainConfig(lr=1e-3, weight_decay=0.05, grad_clip=0.5)
    ds = deepspeed_config(cfg, 1)
    assert ds["optimizer"]["type"] == "AdamW"
    params = ds["optimizer"]["params"]
    assert params["lr"] == 1e-3 and params["weight_decay"] == 0.05 and len(params["betas"]) == 2
    assert params["torch_adam"] is True  # no FusedAdam JIT build
    assert ds["gradient_clipping"] == 0.5
    assert ds["steps_per_print"] > 10**6


def test_scheduler_params():
    sched = deepspeed_config(PretrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.2), 1)["scheduler"]
    assert sched["type"] == "WarmupCosineLR"
    assert sched["params"] == {"total_num_steps": 100, "warmup_num_steps": 10, "warmup_min_ratio": 0.1, "cos_min_ratio": 0.2, "warmup_type": "linear"}
    # DeepSpeed rejects warmup_num_steps=0: no warmup is one step at full lr.
    none = warmup_cosine_params(PretrainConfig(max_steps=5, warmup_steps=0))
    assert none["warmup_num_steps"] == 1 and none["warmup_min_ratio"] == 1.0


def _lrs(cfg: PretrainConfig) -> list[float]:
    """The lr of each optimizer step, as DeepSpeed's own scheduler computes it (with the
    loop's one pre-step, loop.align_scheduler)."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = WarmupCosineLR(opt, **warmup_cosine_params(cfg))
    sched.step()  # loop.align_scheduler
    lrs = []
    for _ in range(cfg.max_steps):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_schedule_shape_with_deepspeed_scheduler(warmup):
    cfg = PretrainConfig(max_steps=20, warmup_steps=warmup, lr=1e-2, min_lr_ratio=0.1)
    lrs = _lrs(cfg)
    assert lrs[0] > 0, "the first step must train"
    assert max(lrs) == pytest.approx(1e-2, rel=0.05)
    assert lrs[-1] == pytest.approx(1e-3)  # lr * min_lr_ratio at the last step
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1])), "warmup rises"
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :])), "cosine falls"


def test_invalid_values_name_the_key():
    with pytest.raises(ConfigError, match="world_size"):
        deepspeed_config(PretrainConfig(), 0)
    # model_construct skips pydantic validation, as a hand-built config might.
    with pytest.raises(ConfigError, match="pretrain.zero_stage"):
        deepspeed_config(PretrainConfig.model_construct(**{**PretrainConfig().model_dump(), "zero_stage": 4}), 1)
    with pytest.raises(ConfigError, match="pretrain.precision"):
        deepspeed_config(PretrainConfig.model_construct(**{**PretrainConfig().model_dump(), "precision": "int8"}), 1)
    with pytest.raises(ConfigError, match="pretrain.micro_batch_size"):
        deepspeed_config(PretrainConfig.model_construct(**{**PretrainConfig().model_dump(), "micro_batch_size": 0}), 1)
    with pytest.raises(ConfigError, match="pretrain.warmup_steps"):
        deepspeed_config(PretrainConfig.model_construct(**{**PretrainConfig().model_dump(), "warmup_steps": 500}), 1)
