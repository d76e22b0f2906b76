"""The capability check: validation perplexity on the pretraining data, before and after each stage.

Alignment on a few hundred short chats can erase what pretraining taught (the tiny preset
measured +39% validation perplexity after SFT alone). The check packs the data phase's
validation split as the model phase does (each document's tokens, then eos; no bos), takes
the first ``align.ppl_rows`` rows of ``align.max_length`` tokens, and scores them with the
evaluate phase's token-weighted :func:`phases.evaluate.perplexity.perplexity`. A rise above
``align.max_ppl_rise`` over the pretrained model warns or fails (``align.on_ppl_rise``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phases.errors import DataError, LifecycleError

log = logging.getLogger("lifecycle.align")


class CapabilityError(LifecycleError):
    """Alignment raised validation perplexity above align.max_ppl_rise (with align.on_ppl_rise=fail)."""


def validation_rows(texts: list[str], tokenizer, seq_len: int, max_rows: int) -> np.ndarray:
    """``(n, seq_len)`` token rows packed from the validation documents, at most ``max_rows``."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= seq_len * max_rows:
            break
    n = min(len(ids) // seq_len, max_rows)
    if n == 0:
        raise DataError(
            f"the validation split holds {len(ids)} tokens, fewer than one row of align.max_length={seq_len}: "
            "lower align.max_length or give the data phase more validation documents"
        )
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


@dataclass
class CapabilityCheck:
    """Perplexity after each stage, compared with the pretrained model's."""

    rows: np.ndarray
    max_rise: float
    on_rise: str
    batch_size: int = 8
    table: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, stage: str, model) -> dict[str, Any]:
        from phases.evaluate.perplexity import perplexity

        was_training = model.training
        model.eval()
        ppl = perplexity(model, self.rows, batch_size=self.batch_size, max_batches=len(self.rows))["perplexity"]
        model.train(was_training)
        base = self.table[0]["perplexity"] if self.table else ppl
        row = {"stage": stage, "perplexity": ppl, "rise": ppl / base - 1.0}
        self.table.append(row)
        log.info(
            "align capability: validation perplexity %.1f after %s (%+.1f%% vs pretrained, limit +%.0f%%)",
            ppl,
            stage,
            100 * row["rise"],
            100 * self.max_rise,
        )
        return row

    def enforce(self, row: dict[str, Any]) -> str | None:
        """Warn or raise when ``row`` exceeds the allowed rise; returns the message, if any."""
        if row["rise"] <= self.max_rise:
            return None
        msg = (
            f"validation perplexity rose {100 * row['rise']:.1f}% after {row['stage']} "
            f"({self.table[0]['perplexity']:.1f} -> {row['perplexity']:.1f}), above align.max_ppl_rise={self.max_rise}; "
            "lower align.lr / align.max_steps (or dpo_lr / dpo_steps), or raise align.max_ppl_rise"
        )
        if self.on_rise == "fail":
            raise CapabilityError(msg)
        log.warning("align capability: %s", msg)
        return msg
