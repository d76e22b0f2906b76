"""Phase 5: sample completions of the configured prompts from the aligned model.

Prompts are generated in batches of ``cfg.batch_size`` with left padding (a decoder-only
model continues from the last position, so padding must sit on the left). Sampling is
seeded with ``torch.manual_seed(cfg.seed)`` inside a forked RNG: the same config gives the
same text, and the caller's global RNG state is left as it was.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from phases.config import InferenceConfig
from phases.inference.sampling import batches, count_new_tokens, generation_kwargs, prompt_budget, summarize
from phases.metrics import MetricsSink
from phases.refs import PhaseRef


def load_model(model_dir: Path):
    """Model in eval mode and a left-padding tokenizer with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # an over-long prompt keeps its end, the part being continued
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def generate_rows(model, tokenizer, cfg: InferenceConfig) -> tuple[list[dict[str, Any]], float]:
    """One row per prompt (prompt, completion, new_tokens) and the seconds spent in generate()."""
    import torch

    kwargs = generation_kwargs(cfg, tokenizer.pad_token_id, tokenizer.eos_token_id)
    budget = prompt_budget(getattr(model.config, "max_position_embeddings", None), cfg.max_new_tokens)
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(cfg.seed)
        for batch in batches(list(cfg.prompts), cfg.batch_size):
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=budget is not None, max_length=budget)
            started = time.perf_counter()
            output = model.generate(**enc, **kwargs)
            seconds += time.perf_counter() - started
            new = output[:, enc["input_ids"].shape[1] :]  # left padding: every row's prompt ends at the same column
            for prompt, ids in zip(batch, new.tolist()):
                n = count_new_tokens(ids, tokenizer.eos_token_id)
                completion = tokenizer.decode(ids[:n], skip_special_tokens=True)
                rows.append({"prompt": prompt, "completion": completion, "new_tokens": n})
    return rows, seconds


def build(cfg: InferenceConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    from phases.env import offline_env

    offline_env()
    model, tokenizer = load_model(inputs["align"].path)
    rows, seconds = generate_rows(model, tokenizer, cfg)
    with (Path(out) / "generations.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = summarize(rows, seconds)
    sink.log_metrics({"inference/tokens_per_s": summary["tokens_per_s"], "inference/mean_new_tokens": summary["mean_new_tokens"]})
    return summary
