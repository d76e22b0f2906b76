"""Phase 5: batch inference from the aligned model, best-of-N, and int8 for small devices.

Prompts are, in order of precedence, ``inference.prompts``, ``inference.prompts_file``, or the
align phase's held-out chat prompts (``sft_eval.jsonl``, the reference answer dropped).
``out`` receives ``generations.jsonl`` (one record per completion: prompt hash, sampling
settings, completion, token counts, latency), ``best_of.jsonl`` when the align output has a
reward model, ``int8/`` (the quantized model, safetensors, loadable by ``lifecycle generate``
and ``lifecycle serve-model``) and ``quantization.json`` (fp32 vs int8: size, speed, perplexity).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from phases.config import InferenceConfig
from phases.errors import DataError
from phases.inference import best_of as B
from phases.inference.generate import generate, load_model, read_prompts, write_jsonl
from phases.inference.sampling import summarize
from phases.metrics import MetricsSink, write_table
from phases.refs import PhaseRef

log = logging.getLogger("lifecycle.inference")
HELD_OUT = "sft_eval.jsonl"


def prompt_rows(cfg: InferenceConfig, align_dir: Path) -> list[dict[str, Any]]:
    if cfg.prompts:
        return [{"prompt": p} for p in cfg.prompts[: cfg.num_prompts]]
    if cfg.prompts_file:
        return read_prompts(cfg.prompts_file, cfg.num_prompts)
    held_out = Path(align_dir) / HELD_OUT
    if not held_out.is_file():
        raise DataError(f"the align output {align_dir} has no {HELD_OUT}; set inference.prompts_file to a JSONL of prompts")
    return read_prompts(held_out, cfg.num_prompts)


def held_out_texts(tokenizer, align_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Validation text for perplexity: the held-out chat rows with their answers, else the prompts."""
    path = Path(align_dir) / HELD_OUT
    if path.is_file():
        convs = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
        return [tokenizer.apply_chat_template(m, tokenize=False) for m in convs]
    return [r.get("prompt") or tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]


def build(cfg: InferenceConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    from phases.env import offline_env

    offline_env()
    out, align_dir = Path(out), inputs["align"].path
    model, tokenizer = load_model(align_dir)
    rows = prompt_rows(cfg, align_dir)
    started = time.perf_counter()
    records = generate(model, tokenizer, rows, cfg)
    seconds = time.perf_counter() - started
    write_jsonl(records, out / "generations.jsonl")
    if cfg.table_rows:
        write_table([{k: v for k, v in r.items() if k != "sampling"} for r in records[: cfg.table_rows]], "inference_samples.json", sink)
    summary: dict[str, Any] = summarize(records, seconds)
    sink.log_params({"inference/prompt_source": "prompts" if cfg.prompts else (cfg.prompts_file or HELD_OUT)})
    sink.log_metrics({f"inference/{k}": v for k, v in summary.items()})

    if cfg.best_of > 1:
        summary.update(_best_of(model, tokenizer, rows, cfg, align_dir, out, sink))
    if cfg.quantize:
        # With the model phase among the inputs, perplexity is on its val.bin (as evaluate measures it).
        val = _val_rows(inputs["model"].path) if "model" in inputs else None
        summary.update(_quantize(align_dir, out, held_out_texts(tokenizer, align_dir, rows), sink, val))
    return summary


def _best_of(model, tokenizer, rows, cfg, align_dir, out, sink) -> dict[str, Any]:
    path = B.reward_dir(align_dir)
    if path is None:
        log.info("best-of-%d unavailable: the align output has no reward_model/ (align.method sft/dpo)", cfg.best_of)
        return {"best_of_status": "unavailable: no reward_model/ in the align output (use align.method grpo or rloo)"}
    reward, reward_tok = B.load_reward_model(path)
    best, figures = B.best_of_n(model, tokenizer, reward, reward_tok, rows, cfg)
    write_jsonl(best, out / "best_of.jsonl")
    sink.log_metrics({f"inference/{k}": float(v) for k, v in figures.items()})
    return {"best_of_status": "ok", **figures}


def _val_rows(model_dir: Path, most: int = 64):
    from phases.evaluate.perplexity import read_packed

    return read_packed(model_dir)[:most]


def _quantize(align_dir, out, texts, sink, val_rows=None) -> dict[str, Any]:
    from phases.inference.quantize import compare, save_int8

    int8_dir = save_int8(align_dir, out / "int8")
    figures = compare(align_dir, int8_dir, texts, rows=val_rows)
    (out / "quantization.json").write_text(json.dumps(figures, indent=2))
    flat = {
        f"inference/quant/{m}/{k}": float(v)
        for m in ("fp32", "torchao_int8", "dynamic_int8")
        for k, v in figures[m].items()
        if isinstance(v, (int, float)) and v is not None
    }
    sink.log_metrics(flat)
    q = figures["torchao_int8"]
    return {
        "int8_size_ratio": q["size_ratio"],
        "int8_perplexity_rise": q["perplexity_rise"],
        "fp32_perplexity": figures["fp32"]["perplexity"],
        "perplexity_on": figures["perplexity_on"],
    }
