"""The DeepSpeed config of a pretraining run, derived from :class:`PretrainConfig`.

A pure function: no DeepSpeed import, no hardware probing. Whether the machine can do what
the config asks (bf16 on a CPU, ZeRO-3 across nodes) is the launcher's and DeepSpeed's
business; this module only turns one frozen config plus the world size into the dict
``deepspeed.initialize(config=...)`` takes, and refuses values DeepSpeed would
misinterpret rather than reject.
"""

from __future__ import annotations

from typing import Any

from phases.config import PretrainConfig
from phases.errors import ConfigError

ADAM_BETAS = (0.9, 0.95)  # the usual LM-pretraining betas (GPT-3, Llama); 0.999 adapts too slowly for short runs
ADAM_EPS = 1e-8
# DeepSpeed prints its own step line every `steps_per_print` steps; our loop prints one per
# step already, so push DeepSpeed's beyond any run length.
QUIET_STEPS_PER_PRINT = 10**9


def deepspeed_config(cfg: PretrainConfig, world_size: int, *, torch_adam: bool = True) -> dict[str, Any]:
    """DeepSpeed config for ``cfg`` on ``world_size`` data-parallel ranks.

    ``torch_adam=True`` makes DeepSpeed use ``torch.optim.AdamW`` instead of its FusedAdam,
    which is a JIT-compiled extension (a C++ build on CPU, a CUDA toolkit on GPU). torch's
    foreach AdamW is close to FusedAdam on a GPU for models of this size and needs no build.
    """
    _validate(cfg, world_size)
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        # DeepSpeed checks train = micro * accum * world itself and fails at initialize if
        # they disagree; giving all three makes the global batch explicit in the logs.
        "train_batch_size": global_batch_size(cfg, world_size),
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": QUIET_STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        # loss_scale 0 = dynamic loss scaling, the only safe choice for fp16 from scratch.
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(ADAM_BETAS),
                "eps": ADAM_EPS,
                "weight_decay": cfg.weight_decay,
                "torch_adam": torch_adam,
            },
        },
        "scheduler": {"type": "WarmupCosineLR", "params": warmup_cosine_params(cfg)},
    }


def global_batch_size(cfg: PretrainConfig, world_size: int) -> int:
    """Sequences per optimizer step across all ranks."""
    return cfg.micro_batch_size * cfg.grad_accum * world_size


def warmup_cosine_params(cfg: PretrainConfig) -> dict[str, Any]:
    """Parameters of DeepSpeed's ``WarmupCosineLR`` (deepspeed/runtime/lr_schedules.py).

    That scheduler works in ratios of the optimizer's lr: position ``i < W`` has ratio
    ``m + (i / W) * (1 - m)``, then a cosine from 1 down to ``cos_min_ratio`` at position
    ``total_num_steps - 1``. It rejects ``warmup_num_steps=0``, so "no warmup" becomes one
    warmup step at full lr (``m = 1``). ``m = 1/W`` keeps the first step from running at
    lr 0; the training loop advances the scheduler to position 0 before the first step
    (see ``loop.align_scheduler``), so optimizer step ``k`` runs at position ``k - 1``.
    """
    warmup = max(1, cfg.warmup_steps)
    return {
        "total_num_steps": cfg.max_steps,
        "warmup_num_steps": warmup,
        "warmup_min_ratio": 1.0 / warmup,
        "cos_min_ratio": cfg.min_lr_ratio,
        "warmup_type": "linear",
    }


def _validate(cfg: PretrainConfig, world_size: int) -> None:
    # PretrainConfig validates on load, but a config built with model_construct() or
    # copied with model_copy(update=...) skips validation; these are the values DeepSpeed
    # would accept and silently misread.
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size={world_size!r} is invalid: need an int >= 1 (num_gpus * num_nodes)")
    if cfg.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"pretrain.zero_stage={cfg.zero_stage!r} is invalid: allowed 0, 1, 2, 3")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"pretrain.precision={cfg.precision!r} is invalid: allowed fp32, bf16, fp16")
    for key in ("micro_batch_size", "grad_accum", "max_steps"):
        value = getattr(cfg, key)
        if value < 1:
            raise ConfigError(f"pretrain.{key}={value!r} is invalid: must be >= 1")
    if cfg.warmup_steps >= cfg.max_steps:
        raise ConfigError(f"pretrain.warmup_steps={cfg.warmup_steps} must be below pretrain.max_steps={cfg.max_steps}")
    if not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise ConfigError(f"pretrain.min_lr_ratio={cfg.min_lr_ratio!r} is invalid: must be in [0, 1]")


def deepspeed_for_plan(p) -> dict[str, Any]:
    """The DeepSpeed config a :class:`phases.model.sizing.Plan` implies (``lifecycle plan`` prints it)."""
    steps = max(2, p.max_steps)
    cfg = PretrainConfig(
        max_steps=steps,
        micro_batch_size=p.micro_batch_size,
        grad_accum=p.grad_accum,
        zero_stage=p.zero_stage,
        precision=p.precision,
        num_gpus=p.num_gpus,
        warmup_steps=min(2000, steps // 10),
    )
    return deepspeed_config(cfg, world_size=p.num_gpus)


def for_budget(cfg: PretrainConfig, plan: dict[str, Any], seq_len: int, world_size: int) -> PretrainConfig:
    """``cfg`` with the steps that train for a compute budget's planned tokens.

    ``plan`` is the model phase's sizing plan (phases/model/artifact.py ``plan.json``): with a
    budget it holds the planned tokens ``D``, and the run takes ``ceil(D / tokens per step)``
    steps of this config's global batch (``pretrain.max_steps`` is replaced; warmup is capped
    at a tenth of the run). Without a budget ``cfg`` is returned as it is.
    """
    if "budget_flops" not in plan or "tokens" not in plan:
        return cfg
    per_step = global_batch_size(cfg, world_size) * seq_len
    steps = max(2, -(-int(plan["tokens"]) // per_step))
    warmup = min(cfg.warmup_steps, steps // 10)
    return cfg.model_copy(update={"max_steps": steps, "warmup_steps": warmup})
