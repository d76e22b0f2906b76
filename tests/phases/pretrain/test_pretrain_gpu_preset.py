"""The gpu-124m preset and the CUDA choices of the pretraining runtime, checked without a GPU.

What the GPU check (tests/benchmarks/test_pretrain_gpu.py) measures rests on these: the
preset is a ~124M Llama, its DeepSpeed config trains in bf16 with the intended batch, CUDA
ranks join with NCCL, and the model is built with the attention kernel the config asks for.
"""

from __future__ import annotations

import sys
import types

import pytest

from phases.config import load_config
from phases.errors import ConfigError
from phases.model.build import llama_config, resolve_shape
from phases.model.sizing import SIZE_PRESETS, llama_parameters
from phases.pretrain import runtime
from phases.pretrain.build import launcher_command
from phases.pretrain.dsconfig import deepspeed_config
from phases.pretrain.flops import flops_per_token, matmul_params, peak_flops


class _Vocab:
    """What llama_config reads from a tokenizer: its size and the special ids."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


@pytest.fixture(scope="module")
def preset():
    return load_config("gpu-124m")


@pytest.fixture(scope="module")
def arch(preset) -> dict:
    """The architecture the model phase would write for this preset (same functions)."""
    m = preset.model
    shape, _ = resolve_shape(m, m.vocab_size, tokens_available=1)
    return llama_config(shape, m, _Vocab(m.vocab_size))


@pytest.fixture(scope="module")
def meta_model(preset, arch):
    """The 124M model as the pretraining runtime builds it, on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        return runtime.build_model(arch, preset.pretrain.attn_implementation)


def test_preset_is_a_124m_llama(preset, arch, meta_model):
    m = preset.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size) == SIZE_PRESETS["124M"]
    assert m.seq_len == 1024 <= m.max_position_embeddings
    assert m.hidden_size // m.num_heads == 64  # the head dim the flash kernels are tuned for
    n = sum(p.numel() for p in meta_model.parameters())
    assert 110e6 <= n <= 140e6, f"{n:,} parameters"
    assert n == llama_parameters(m.vocab_size, m.hidden_size, m.num_layers, m.intermediate_size)
    assert arch["tie_word_embeddings"] is True and arch["vocab_size"] == m.vocab_size
    assert m.gpu == "H100" and m.num_gpus == preset.pretrain.num_gpus == 1


def test_deepspeed_config_is_bf16_with_the_preset_batch(preset):
    p = preset.pretrain
    ds = deepspeed_config(p, p.num_gpus * p.num_nodes)
    assert ds["bf16"] == {"enabled": True}
    assert ds["fp16"]["enabled"] is False
    assert ds["train_micro_batch_size_per_gpu"] == 16
    assert ds["gradient_accumulation_steps"] == 8
    assert ds["train_batch_size"] == 128
    assert ds["train_batch_size"] * preset.model.seq_len == 131_072  # tokens per optimizer step
    assert ds["zero_optimization"]["stage"] == 0
    assert ds["scheduler"]["params"]["total_num_steps"] == p.max_steps
    # Inherited from tiny, which trains in fp32: the override is what makes it bf16.
    assert deepspeed_config(load_config("tiny").pretrain, 1)["bf16"]["enabled"] is False


def test_preset_overrides_only_what_it_names(preset):
    tiny = load_config("tiny")
    assert preset.name == "gpu-124m"
    assert preset.data == tiny.data  # everything outside model/pretrain comes from the base
    assert preset.pretrain.seed == tiny.pretrain.seed and preset.pretrain.grad_clip == tiny.pretrain.grad_clip
    assert preset.pretrain.warmup_steps < preset.pretrain.max_steps <= 50  # a short device check


def test_cuda_ranks_join_with_nccl_and_cpu_ranks_with_gloo(monkeypatch, preset):
    import torch

    assert runtime.comm_backend("cuda") == "nccl"
    assert runtime.comm_backend("cpu") == "gloo"
    with pytest.raises(ConfigError, match="xpu"):
        runtime.comm_backend("xpu")
    # The wiring: init_distributed asks DeepSpeed for the backend of the device torch sees.
    calls = []
    fake = types.SimpleNamespace(init_distributed=lambda **kw: calls.append(kw))
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.init_distributed() == "nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.init_distributed() == "gloo"
    assert calls == [{"dist_backend": "nccl"}, {"dist_backend": "gloo"}]
    # One node, one rank: no hostfile, so the launcher starts the rank locally.
    cmd = launcher_command(preset.pretrain, [], 29500)
    assert cmd[cmd.index("--num_gpus") + 1] == "1" and "--hostfile" not in cmd


def test_attention_kernel_is_the_one_requested(preset, meta_model):
    assert preset.pretrain.attn_implementation == "sdpa"
    assert meta_model.config._attn_implementation == "sdpa"
    # Honoured, not a library default that happens to agree: eager is built when asked.
    tiny_arch = {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    eager = runtime.build_model(tiny_arch, "eager")
    assert eager.config._attn_implementation == "eager"
    assert eager.model.layers[0].self_attn.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="pretrain.attn_implementation"):
        load_config("gpu-124m", ["pretrain.attn_implementation=flash"])


def test_mfu_inputs_for_the_preset(preset, arch, meta_model):
    # The preset's peak applies even where torch reports no device name (MFU gets logged).
    assert peak_flops(preset.pretrain.peak_flops, None) == 989e12
    assert peak_flops(None, "NVIDIA H100 80GB HBM3") == 989e12
    m = preset.model
    # Every weight but the norm gains takes part in a matmul (the tied embedding as lm_head).
    norms = (2 * m.num_layers + 1) * m.hidden_size
    assert matmul_params(arch) == sum(p.numel() for p in meta_model.parameters()) - norms
    per_token = flops_per_token(arch, m.seq_len)
    assert per_token == 6 * matmul_params(arch) + 12 * m.num_layers * m.hidden_size * m.seq_len
    assert 8.0e8 < per_token < 9.0e8  # ~855 MFLOP a token: 45% MFU on one H100 is ~520k tokens/s
