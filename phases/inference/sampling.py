"""Sampling settings and per-row bookkeeping for batch generation (no model needed).

Kept apart from :mod:`phases.inference.build` so the rules that decide what a run
samples and how its output is counted are testable without loading a model.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence, TypeVar

from phases.config import InferenceConfig
from phases.errors import ConfigError

T = TypeVar("T")


def generation_kwargs(cfg: InferenceConfig, pad_token_id: int, eos_token_id: int | None) -> dict[str, Any]:
    """Keyword arguments for ``model.generate``.

    ``top_k`` is passed as 0 (not None) to switch it off: transformers 5 fills a None
    with its global default (top_k=50) before building the sampler, while 0 skips the
    TopKLogitsWarper. ``min_new_tokens`` stays unset so an eos may end a row early.
    """
    return {
        "do_sample": True,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,  # 0 = off, see above
        "max_new_tokens": cfg.max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
    }


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive batches in input order (the last may be short)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def count_new_tokens(new_ids: Sequence[int], eos_token_id: int | None) -> int:
    """Tokens a row really generated: up to and including its first eos.

    After a row emits eos, ``generate`` keeps it in the batch and fills it with the pad
    token until every row is done; those fillers are not generated text. Counting to the
    first eos also works when pad == eos.
    """
    ids = list(new_ids)
    if eos_token_id is not None and eos_token_id in ids:
        return ids.index(eos_token_id) + 1
    return len(ids)


def prompt_budget(max_positions: int | None, max_new_tokens: int) -> int | None:
    """Longest prompt (in tokens) that leaves room for ``max_new_tokens`` in the context window."""
    if max_positions is None:
        return None
    if max_new_tokens >= max_positions:
        raise ConfigError(
            f"inference.max_new_tokens={max_new_tokens} does not fit the model's context of {max_positions} tokens; "
            f"use at most {max_positions - 1}"
        )
    return max_positions - max_new_tokens


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Throughput and mean length over all rows of a run."""
    total = sum(r["new_tokens"] for r in rows)
    return {
        "num_prompts": len(rows),
        "tokens_per_s": total / seconds if seconds > 0 else 0.0,
        "mean_new_tokens": total / len(rows) if rows else 0.0,
    }
