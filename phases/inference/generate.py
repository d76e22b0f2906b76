"""Generation with transformers' ``generate`` (its samplers, stop strings and KV cache).

Own code is only the glue: prompts read and rendered (chat template), batching with left
padding, one output record per completion. Sampling is seeded with ``torch.manual_seed``
inside a forked RNG: the same config gives the same text and the caller's RNG is untouched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from phases.config import InferenceConfig
from phases.errors import DataError
from phases.inference.sampling import (
    count_new_tokens,
    cut_at_stop,
    generation_kwargs,
    prompt_budget,
    prompt_hash,
    sampling_record,
)


def load_model(model_dir: Path, tokenizer_dir: Path | None = None):
    """Model in eval mode (fp32, or the int8 model :mod:`phases.inference.quantize` saved) and a left-padding tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise DataError(f"{model_dir} holds no model (no config.json); give a directory saved with save_pretrained or a models:/ URI")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    tokenizer.padding_side = "left"  # a decoder continues from the last position: pads go left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from phases.inference import quantize

    if quantize.is_int8(model_dir):
        model = quantize.load_int8(model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), tokenizer


def read_prompts(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a prompts JSONL: ``{"prompt": text}`` or ``{"messages": [...]}`` (a trailing assistant turn is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'prompts file {path} does not exist; give a JSONL file with one {{"prompt": ...}} or {{"messages": [...]}} per line')
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f'{path}:{n} is not JSON ({e.msg}); each line must be {{"prompt": text}} or {{"messages": [...]}}') from None
        rows.append(_prompt_row(row, f"{path}:{n}"))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f'prompts file {path} holds no prompts; add lines like {{"prompt": "def add(a, b):"}}')
    return rows


def _prompt_row(row: Any, where: str) -> dict[str, Any]:
    if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"].strip():
        return {"prompt": row["prompt"]}
    if isinstance(row, dict) and isinstance(row.get("messages"), list) and row["messages"]:
        messages = list(row["messages"])
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
            raise DataError(f"{where}: every message needs a string 'role' and 'content'")
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]  # held-out chat rows carry the reference answer: the prompt is what precedes it
        if not messages:
            raise DataError(f"{where}: no message before the assistant's turn")
        return {"messages": messages}
    raise DataError(f'{where}: expected {{"prompt": non-empty text}} or {{"messages": [{{"role", "content"}}, ...]}}, got {str(row)[:80]}')


def render(tokenizer, row: dict[str, Any], chat: bool) -> str:
    """The text the model continues: chat rows (and, with ``chat``, plain prompts) through the chat template."""
    messages = row.get("messages")
    if messages is None and chat and tokenizer.chat_template:
        messages = [{"role": "user", "content": row["prompt"]}]
    if messages is None:
        return row["prompt"]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def check_lengths(tokenizer, texts: Sequence[str], budget: int | None) -> list[int]:
    """Token counts of the prompts; a prompt that leaves no room for max_new_tokens is an error, not cut."""
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    if budget is not None:
        for i, n in enumerate(counts):
            if n > budget:
                raise DataError(
                    f"prompt {i} has {n} tokens; with max_new_tokens the model's context leaves {budget}: shorten the prompt or lower max_new_tokens"
                )
    return counts


def generate(model, tokenizer, rows: Sequence[dict[str, Any]], cfg: InferenceConfig, streamer=None) -> list[dict[str, Any]]:
    """One record per completion: prompt hash, sampling settings, completion, token counts, latency."""
    import torch

    texts = [render(tokenizer, r, cfg.chat) for r in rows]
    budget = prompt_budget(getattr(model.config, "max_position_embeddings", None), cfg.max_new_tokens)
    lengths = check_lengths(tokenizer, texts, budget)
    kwargs = generation_kwargs(cfg, tokenizer.pad_token_id, tokenizer.eos_token_id)
    if cfg.stop:
        kwargs["tokenizer"] = tokenizer
    per_prompt = 1 if cfg.greedy else cfg.num_return_sequences
    settings = sampling_record(cfg)
    out: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(cfg.seed)
        for start in range(0, len(texts), cfg.batch_size):
            batch = texts[start : start + cfg.batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            started = time.perf_counter()
            output = model.generate(**enc, **kwargs, streamer=streamer)
            latency = time.perf_counter() - started
            new = output[:, enc["input_ids"].shape[1] :]  # left padding: every row's prompt ends at one column
            for j, ids in enumerate(new.tolist()):
                i = start + j // per_prompt
                out.append(_record(tokenizer, texts[i], rows[i], ids, lengths[i], j % per_prompt, latency, settings, cfg))
    return out


def _record(tokenizer, text, row, ids, prompt_tokens, sample, latency, settings, cfg) -> dict[str, Any]:
    n = count_new_tokens(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
    completion, stopped = cut_at_stop(tokenizer.decode(ids[:n], skip_special_tokens=True), cfg.stop)
    ended = stopped or (n and ids[n - 1] == tokenizer.eos_token_id)
    return {
        "prompt_sha256": prompt_hash(text),
        "prompt": row.get("prompt", text),
        "sample": sample,
        "completion": completion,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "finish_reason": "stop" if ended else "length",
        "latency_s": round(latency, 6),
        "sampling": settings,
    }


def write_jsonl(records: Sequence[dict[str, Any]], path: Path) -> Path:
    path = Path(path)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
