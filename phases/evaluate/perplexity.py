"""Validation perplexity of a causal LM over the model phase's packed ``val.bin``.

Perplexity = exp(token-weighted mean next-token NLL). Token-weighted (sum of NLLs over
sum of predicted tokens), not a mean of per-batch means, so a short last batch does not
count as much as a full one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from phases.errors import DataError
from phases.model import artifact


def read_packed(model_dir: Path) -> np.ndarray:
    """The ``(n, seq_len)`` token array of ``val.bin``, memory-mapped (read only)."""
    return artifact.rows(model_dir, "val")


def nll_sum(logits, input_ids) -> tuple[float, int]:
    """Summed next-token NLL and the number of predicted tokens: position t predicts t+1."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    targets = input_ids[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return float(loss), int(targets.numel())


def perplexity(model, rows: np.ndarray, *, batch_size: int, max_batches: int) -> dict[str, Any]:
    """Perplexity over the first ``max_batches * batch_size`` rows (all rows if fewer).

    The first rows rather than a sample: the model phase already shuffled documents into
    the split, and a fixed prefix makes the figure comparable across runs and models.
    ``model`` is anything whose ``model(input_ids=...)`` returns an object with ``.logits``.
    """
    import torch

    vocab = model.config.vocab_size if hasattr(model, "config") else None
    total_nll, total_tokens, batches = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, min(len(rows), batch_size * max_batches), batch_size):
            # uint16 has no torch equivalent for indexing embeddings: widen to int64.
            ids = torch.from_numpy(np.asarray(rows[start : start + batch_size], dtype=np.int64))
            if vocab is not None and int(ids.max()) >= vocab:
                raise DataError(
                    f"val.bin has token id {int(ids.max())} but the model's vocabulary has {vocab}: the model and val.bin come from different tokenizers"
                )
            nll, n = nll_sum(model(input_ids=ids).logits, ids)
            total_nll, total_tokens, batches = total_nll + nll, total_tokens + n, batches + 1
    if total_tokens == 0:
        raise DataError("val.bin rows are too short to predict any token (seq_len must be at least 2)")
    mean = total_nll / total_tokens
    return {"perplexity": math.exp(mean), "mean_nll": mean, "tokens": total_tokens, "batches": batches}
