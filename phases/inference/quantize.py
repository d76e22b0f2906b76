"""int8 weights for small devices, and the fp32-vs-int8 comparison the phase logs.

The saved method is torchao's weight-only int8 (``quantize_``): linear layers as
``Int8WeightOnlyConfig``, the input embedding as ``IntxWeightOnlyConfig(int8, per row)``, a
tied lm_head sharing it. The weights are written as safetensors with torchao's own
flatten/unflatten (tensors + JSON metadata): :func:`phases.inference.generate.load_model`
(``lifecycle generate``, ``lifecycle serve-model``) loads them; no pickle anywhere.

``torch.ao.quantization.quantize_dynamic`` (int8 weights *and* activations, linear layers
only) is measured beside it in memory: its packed modules have no safetensors form, so it
is a speed reference, not a saved artifact. Measured on our model (see the benchmark's
dated result) before choosing.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MARKER = "int8.json"  # beside config.json: this directory holds torchao int8 weights


def _quantize_in_place(model) -> bool:
    """torchao weight-only int8: the embedding per row, every linear layer; a tied lm_head keeps
    sharing the (now int8) embedding. Returns whether the head is tied."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    embed = model.get_input_embeddings()
    tied = model.lm_head.weight is embed.weight
    quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)), filter_fn=lambda m, fqn: m is embed)
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and not (tied and fqn == "lm_head"))
    if tied:
        model.lm_head.weight = embed.weight  # one int8 copy of the vocabulary matrix, as fp32 had one
    return tied


def save_int8(src: Path, out: Path, tokenizer_dir: Path | None = None) -> Path:
    """The model of ``src`` quantized to int8 and saved in ``out``: ``model.safetensors`` (torchao's
    own flattening of its int8 tensors: plain tensors plus JSON metadata, no pickle), ``config.json``,
    :data:`MARKER` and the tokenizer. :func:`load_int8` (and so ``load_model``) reads it back.

    Not transformers' ``TorchAoConfig`` route: it unties a tied lm_head (the model phase ties it) and
    then stores the vocabulary matrix twice, 0.41x of fp32 on the tiny preset instead of 0.25x.
    """
    import json

    import safetensors.torch
    import torch
    import torchao
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tied = _quantize_in_place(model)
    state = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    tensors, metadata = flatten_tensor_state_dict(state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(out / "model.safetensors"), metadata=metadata)
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"method": "torchao int8 weight-only", "torchao": torchao.__version__, "tied_lm_head": tied}))
    AutoTokenizer.from_pretrained(tokenizer_dir or src).save_pretrained(out)
    return out


def is_int8(model_dir: Path) -> bool:
    return (Path(model_dir) / MARKER).is_file()


def load_int8(model_dir: Path):
    """The model :func:`save_int8` wrote: built from its config, quantized alike, then the int8 weights assigned."""
    import safetensors
    import safetensors.torch
    import torch
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    from phases.errors import DataError

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tied = _quantize_in_place(model)
    path = str(model_dir / "model.safetensors")
    with safetensors.safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    state, leftover = unflatten_tensor_state_dict(safetensors.torch.load_file(path), metadata)
    state.update(leftover)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise DataError(f"{model_dir}: int8 weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]}); re-run save_int8")
    if tied:
        model.lm_head.weight = model.get_input_embeddings().weight
    return model


def dynamic_int8(model):
    """``quantize_dynamic`` of the linear layers (in memory: a speed and quality reference)."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in torch 2.13, still present
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def weights_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def state_dict_bytes(model) -> int:
    """Serialized size of an in-memory model's state (only written, never loaded back)."""
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def text_rows(tokenizer, texts: Sequence[str], seq_len: int = 64) -> np.ndarray:
    """Held-out texts packed as the model phase packs (each followed by eos) into rows of ``seq_len``."""
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // seq_len
    if n == 0:
        seq_len, n = max(2, len(ids)), 1
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def tokens_per_s(model, tokenizer, batch: int, new_tokens: int = 16, use_cache: bool = True, repeats: int = 1) -> dict[str, float]:
    """Greedy decoding of ``batch`` copies of a short prompt for exactly ``new_tokens`` tokens."""
    import torch

    enc = tokenizer(["def read_config(path):"] * batch, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache, pad_token_id=tokenizer.pad_token_id)
    latencies = []
    with torch.inference_mode():
        model.generate(**enc, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model.generate(**enc, **kw)
            latencies.append(time.perf_counter() - started)
    best = min(latencies)
    return {"tokens_per_s": batch * new_tokens / best, "latency_s": best, "latencies": latencies}


def compare(
    fp32_dir: Path, int8_dir: Path, texts: Sequence[str], *, batches: Sequence[int] = (1, 8), new_tokens: int = 16, rows: np.ndarray | None = None
) -> dict[str, Any]:
    """fp32, torchao int8 (saved) and quantize_dynamic int8 (in memory) side by side: size, tokens/s, perplexity
    (on ``rows``, e.g. the model phase's val.bin, else on ``texts`` packed like it)."""
    from phases.evaluate.perplexity import perplexity
    from phases.inference.generate import load_model

    fp32, tokenizer = load_model(fp32_dir)
    torchao, _ = load_model(int8_dir)
    dynamic = dynamic_int8(fp32)
    source = "val.bin" if rows is not None else "held-out text"
    rows = text_rows(tokenizer, texts) if rows is None else rows
    sizes = {"fp32": weights_bytes(fp32_dir), "torchao_int8": weights_bytes(int8_dir), "dynamic_int8": state_dict_bytes(dynamic)}
    out: dict[str, Any] = {"validation_tokens": int(rows.size), "perplexity_on": source}
    for name, model in (("fp32", fp32), ("torchao_int8", torchao), ("dynamic_int8", dynamic)):
        ppl = perplexity(model, rows, batch_size=8, max_batches=64)["perplexity"]
        out[name] = {
            "bytes": sizes[name],
            "perplexity": ppl if math.isfinite(ppl) else None,
            **{f"tokens_per_s_b{b}": tokens_per_s(model, tokenizer, b, new_tokens)["tokens_per_s"] for b in batches},
        }
    for name in ("torchao_int8", "dynamic_int8"):
        out[name]["size_ratio"] = out[name]["bytes"] / out["fp32"]["bytes"]
        out[name]["perplexity_rise"] = out[name]["perplexity"] / out["fp32"]["perplexity"] - 1
    return out
