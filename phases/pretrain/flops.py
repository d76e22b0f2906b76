"""Model FLOPs utilisation (MFU): achieved training FLOP/s over the device's peak.

Training FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B):
``6 * N + 12 * L * d * T``: 6 FLOPs per matmul weight per token (forward 2, backward 4)
plus the attention score and value products, which grow with the sequence length ``T``
and have no weights. ``N`` counts the weights that take part in a matmul: all parameters
but an untied input embedding (a table lookup costs no FLOPs); a tied embedding is the
output projection's matmul and stays in.

Pure: the device name is passed in, and nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from phases.hardware import device_peak_flops


def peak_flops(override: float | None, device_name: str | None) -> float | None:
    """The config's ``peak_flops`` if set, else the hardware table's peak for the device, else None."""
    if override:
        return float(override)
    return device_peak_flops(device_name)


def matmul_params(model_config: dict[str, Any]) -> int:
    """Weights that take part in a matmul, from a Llama config dict (no model built)."""
    d, layers = model_config["hidden_size"], model_config["num_hidden_layers"]
    vocab, ffn = model_config["vocab_size"], model_config["intermediate_size"]
    heads = model_config["num_attention_heads"]
    kv_heads = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or d // heads
    attention = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2  # q, o and k, v
    mlp = 3 * d * ffn  # gate, up, down
    return layers * (attention + mlp) + vocab * d  # the output projection (lm_head)


def flops_per_token(model_config: dict[str, Any], seq_len: int) -> float:
    d, layers = model_config["hidden_size"], model_config["num_hidden_layers"]
    return 6.0 * matmul_params(model_config) + 12.0 * layers * d * seq_len


def mfu(tokens_per_s: float, per_token: float, peak: float | None, devices: int) -> float | None:
    """Fraction of ``devices`` x ``peak`` used; None when the peak is unknown."""
    if not peak:
        return None
    return tokens_per_s * per_token / (peak * devices)
