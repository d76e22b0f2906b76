"""Sampling settings and per-row bookkeeping for batch generation (no model needed).

Kept apart from :mod:`phases.inference.generate` so the rules that decide what a run
samples and how its output is counted are testable without loading a model.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence, TypeVar

from phases.config import InferenceConfig
from phases.errors import ConfigError

T = TypeVar("T")


def generation_kwargs(cfg: InferenceConfig, pad_token_id: int, eos_token_id: int | None) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` (transformers' own samplers and KV cache).

    ``top_k`` is passed as 0 (not None) to switch it off: transformers 5 fills a None
    with its global default (top_k=50) before building the sampler, while 0 skips the
    TopKLogitsWarper. ``min_new_tokens`` stays unset so an eos may end a row early.
    Stop strings need the tokenizer too: the caller adds ``tokenizer=``.
    """
    kw: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "use_cache": True,
    }
    if cfg.greedy:
        kw["do_sample"] = False  # no sampling flags: generate would warn that they are unused
    else:
        kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, num_return_sequences=cfg.num_return_sequences)
        if cfg.min_p > 0:
            kw["min_p"] = cfg.min_p
    if cfg.repetition_penalty != 1.0:
        kw["repetition_penalty"] = cfg.repetition_penalty
    if cfg.stop:
        kw["stop_strings"] = list(cfg.stop)
    return kw


def sampling_record(cfg: InferenceConfig) -> dict[str, Any]:
    """The settings a completion was sampled with, as stored beside it."""
    if cfg.greedy:
        return {"greedy": True, "max_new_tokens": cfg.max_new_tokens, "repetition_penalty": cfg.repetition_penalty, "stop": list(cfg.stop)}
    return {
        "greedy": False,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "min_p": cfg.min_p,
        "repetition_penalty": cfg.repetition_penalty,
        "stop": list(cfg.stop),
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
    }


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive batches in input order (the last may be short)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def count_new_tokens(new_ids: Sequence[int], eos_token_id: int | None, pad_token_id: int | None = None) -> int:
    """Tokens a row really generated: up to and including its first eos.

    After a row ends (eos or a stop string), ``generate`` keeps it in the batch and fills
    it with the pad token until every row is done; those fillers are not generated text.
    Counting to the first eos also works when pad == eos; trailing pads are dropped.
    """
    ids = list(new_ids)
    if eos_token_id is not None and eos_token_id in ids:
        return ids.index(eos_token_id) + 1
    n = len(ids)
    if pad_token_id is not None and pad_token_id != eos_token_id:
        while n and ids[n - 1] == pad_token_id:
            n -= 1
    return n


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text up to and including the first stop string, and whether one was found."""
    ends = [text.index(s) + len(s) for s in stops if s in text]
    return (text[: min(ends)], True) if ends else (text, False)


def prompt_budget(max_positions: int | None, max_new_tokens: int) -> int | None:
    """Longest prompt (in tokens) that leaves room for ``max_new_tokens`` in the context window."""
    if max_positions is None:
        return None
    if max_new_tokens >= max_positions:
        raise ConfigError(
            f"inference.max_new_tokens={max_new_tokens} does not fit the model's context of {max_positions} tokens; use at most {max_positions - 1}"
        )
    return max_positions - max_new_tokens


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1)))))
    return float(ordered[rank])


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Throughput and mean length over all rows of a run."""
    total = sum(r["completion_tokens"] for r in rows)
    return {
        "num_prompts": len({r["prompt_sha256"] for r in rows}),
        "num_completions": len(rows),
        "tokens_per_s": total / seconds if seconds > 0 else 0.0,
        "mean_new_tokens": total / len(rows) if rows else 0.0,
    }
