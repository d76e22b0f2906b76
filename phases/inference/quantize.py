"""int8 weights for small devices, and the fp32-vs-int8 comparison the phase logs.

The saved method is torchao's weight-only int8 through transformers' ``TorchAoConfig``:
linear layers (lm_head included) as ``Int8WeightOnlyConfig``, the input embedding as
``IntxWeightOnlyConfig(int8, per row)``. ``save_pretrained`` writes it as safetensors with
the quantization config in ``config.json``, so a plain ``from_pretrained`` (``lifecycle
generate``, ``transformers serve``) loads it: no pickle anywhere.

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


def torchao_config():
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, ModuleFqnToConfig
    from torchao.quantization.granularity import PerAxis
    from transformers import TorchAoConfig

    per_module = ModuleFqnToConfig({
        # "_default" (every other nn.Linear, lm_head included) warns of a future deprecation in torchao 0.18 (pytorch/ao#3229)
        # but is what TorchAoConfig applies per module today; revisit when it goes.
        "_default": Int8WeightOnlyConfig(),
        "model.embed_tokens": IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
    })
    return TorchAoConfig(per_module, include_input_output_embeddings=True)


def save_int8(src: Path, out: Path, tokenizer_dir: Path | None = None) -> Path:
    """The model of ``src`` quantized to int8 and saved (safetensors + tokenizer) in ``out``.

    A model with a tied lm_head (the model phase ties it) is first saved untied in fp32 to a
    scratch directory: transformers re-ties at load by comparing the two tensors, which an
    int8 embedding cannot do, and the embedding and the linear want different int8 layouts.
    """
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = Path(src)
    with tempfile.TemporaryDirectory(prefix="untied-") as scratch:
        fp32 = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        if getattr(fp32.config, "tie_word_embeddings", False):
            fp32.lm_head.weight = torch.nn.Parameter(fp32.get_input_embeddings().weight.detach().clone())
            fp32.config.tie_word_embeddings = False
            fp32.save_pretrained(scratch)
            src = Path(scratch)
        model = AutoModelForCausalLM.from_pretrained(src, quantization_config=torchao_config(), dtype=torch.float32)
        out = Path(out)
        model.save_pretrained(out)  # safetensors: transformers 5 writes no other format
    AutoTokenizer.from_pretrained(tokenizer_dir or original).save_pretrained(out)
    return out


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
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
              pad_token_id=tokenizer.pad_token_id)
    latencies = []
    with torch.inference_mode():
        model.generate(**enc, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model.generate(**enc, **kw)
            latencies.append(time.perf_counter() - started)
    best = min(latencies)
    return {"tokens_per_s": batch * new_tokens / best, "latency_s": best, "latencies": latencies}


def compare(fp32_dir: Path, int8_dir: Path, texts: Sequence[str], *, batches: Sequence[int] = (1, 8), new_tokens: int = 16) -> dict[str, Any]:
    """fp32, torchao int8 (saved) and quantize_dynamic int8 (in memory) side by side: size, tokens/s, perplexity."""
    from phases.evaluate.perplexity import perplexity
    from phases.inference.generate import load_model

    fp32, tokenizer = load_model(fp32_dir)
    torchao, _ = load_model(int8_dir)
    dynamic = dynamic_int8(fp32)
    rows = text_rows(tokenizer, texts)
    sizes = {"fp32": weights_bytes(fp32_dir), "torchao_int8": weights_bytes(int8_dir), "dynamic_int8": state_dict_bytes(dynamic)}
    out: dict[str, Any] = {"validation_tokens": int(rows.size)}
    for name, model in (("fp32", fp32), ("torchao_int8", torchao), ("dynamic_int8", dynamic)):
        ppl = perplexity(model, rows, batch_size=8, max_batches=64)["perplexity"]
        out[name] = {"bytes": sizes[name], "perplexity": ppl if math.isfinite(ppl) else None,
                     **{f"tokens_per_s_b{b}": tokens_per_s(model, tokenizer, b, new_tokens)["tokens_per_s"] for b in batches}}
    for name in ("torchao_int8", "dynamic_int8"):
        out[name]["size_ratio"] = out[name]["bytes"] / out["fp32"]["bytes"]
        out[name]["perplexity_rise"] = out[name]["perplexity"] / out["fp32"]["perplexity"] - 1
    return out
