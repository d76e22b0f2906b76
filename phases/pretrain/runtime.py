"""What a rank runs on: device, collective backend, the engine, and a report of them.

The DeepSpeed config (:mod:`phases.pretrain.dsconfig`) fixes the precision; the rest follows
from the hardware a rank finds itself on: NCCL between GPUs, gloo between CPU processes.
DeepSpeed's accelerator would pick the same backends by itself; naming them here makes the
choice a tested function rather than a library default, and :func:`describe` puts what was
actually used (device, backend, parameter dtype, attention kernel) into the run's summary,
so a GPU run that silently fell back to the CPU path is visible in its headline.
:func:`build_engine` is the one place the model and its DeepSpeed engine are made, for the
entry script and for the GPU benchmark alike.

Heavy imports (torch, deepspeed, transformers) happen inside the functions.
"""

from __future__ import annotations

from typing import Any

from phases.errors import ConfigError

COMM_BACKENDS = {"cuda": "nccl", "cpu": "gloo"}


def device_type() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu`` (the only two this project runs on)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def comm_backend(device: str) -> str:
    """The torch.distributed backend for ranks on ``device``: nccl on CUDA, gloo on CPU.

    gloo rather than DeepSpeed's CPU preference ``ccl``: oneCCL's bindings are not part of
    this project's install, and without them DeepSpeed falls back to gloo anyway."""
    try:
        return COMM_BACKENDS[device]
    except KeyError:
        raise ConfigError(f"device {device!r} has no known collective backend; known: {', '.join(COMM_BACKENDS)}") from None


def init_distributed() -> str:
    """Join the process group the launcher set up (RANK, WORLD_SIZE, MASTER_* in the env)
    with the backend for this rank's device; returns the backend's name."""
    import deepspeed

    backend = comm_backend(device_type())
    deepspeed.init_distributed(dist_backend=backend)
    return backend


def build_model(arch: dict[str, Any], attn_implementation: str):
    """A from-scratch ``LlamaForCausalLM`` of ``arch`` (a ``model_config.json`` dict) in fp32.

    The weights start in fp32 whatever the training precision: DeepSpeed casts the
    parameters to bf16/fp16 at ``initialize`` and keeps fp32 master copies, and it leaves
    the buffers (RoPE's ``inv_freq``) in fp32 (deepspeed/runtime/engine.py,
    ``_configure_distributed_model``), so the initial weights are the same draws as an fp32 run's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig.from_dict(arch, attn_implementation=attn_implementation))


def build_engine(cfg, arch: dict[str, Any], world_size: int):
    """The DeepSpeed engine every rank trains with: the model of ``arch`` with ``cfg``'s
    attention kernel (and activation checkpointing), the config derived by
    :func:`phases.pretrain.dsconfig.deepspeed_config`. Seed before calling: the weights are drawn here."""
    import deepspeed

    from phases.pretrain.dsconfig import deepspeed_config
    from phases.pretrain.loop import param_groups

    model = build_model(arch, cfg.attn_implementation)
    if cfg.activation_checkpointing:
        # Non-reentrant: the reentrant variant needs inputs that require grad and warns on ints.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, cfg.weight_decay), config=deepspeed_config(cfg, world_size))
    return engine


def describe(engine) -> dict[str, Any]:
    """What the engine actually trains with, for the summary and the logs."""
    import torch
    import torch.distributed as tdist

    module = engine.module
    rope = [b for name, b in module.named_buffers() if name.endswith("inv_freq")]
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "dist_backend": str(tdist.get_backend()) if tdist.is_initialized() else None,
        "param_dtype": str(next(module.parameters()).dtype).removeprefix("torch."),
        "rope_dtype": str(rope[0].dtype).removeprefix("torch.") if rope else None,
        "attn_implementation": module.config._attn_implementation,
    }
