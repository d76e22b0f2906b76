"""The reward model: a sequence-classification head on the SFT backbone, trained with TRL's
RewardTrainer on the preference rows (Bradley-Terry: score(chosen) above score(rejected)).

Its held-out accuracy is computed here per row, with the standard error of a proportion
(sqrt(p(1-p)/n), p Laplace-smoothed), so "better than chance" can be judged against the noise of a small split.
GRPO and RLOO use the trained model as their reward function.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from phases.align.tracking import common_args, unpatched_print, without_printer
from phases.config import AlignConfig


def load_reward_model(sft_dir: Path, tokenizer):
    """The SFT backbone with a fresh one-logit head (seeded by the trainer's set_seed)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # The head is new and lm_head unused by design: transformers' load report would print a table saying so.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(level)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model


def scores(model, tokenizer, rows: list[dict[str, Any]], key: str, batch_size: int = 8) -> list[float]:
    """The reward of each row's prompt + ``key`` turn (batched; the head reads the last non-pad token)."""
    import torch

    out: list[float] = []
    model.eval()
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            fulls = [
                tokenizer.apply_chat_template(r["prompt"] + r[key], tokenize=True, return_dict=True)["input_ids"]
                for r in rows[start : start + batch_size]
            ]
            width = max(map(len, fulls))
            ids = torch.tensor([f + [pad] * (width - len(f)) for f in fulls])
            mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in fulls])
            out += [float(v) for v in model(input_ids=ids, attention_mask=mask).logits[:, 0]]
    return out


def held_out_accuracy(model, tokenizer, rows) -> dict[str, float]:
    chosen, rejected = scores(model, tokenizer, rows, "chosen"), scores(model, tokenizer, rows, "rejected")
    n = len(rows)
    wins = sum(c > r for c, r in zip(chosen, rejected))
    # Standard error of the proportion with Laplace smoothing ((wins+1)/(n+2)), so a perfect
    # score on a small split still carries its uncertainty instead of a standard error of 0.
    smoothed = (wins + 1) / (n + 2)
    return {
        "accuracy": wins / n,
        "stderr": math.sqrt(smoothed * (1 - smoothed) / n),
        "margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "n": n,
    }


def reward_args(cfg: AlignConfig, output_dir: str):
    from trl import RewardConfig

    return RewardConfig(
        **common_args(cfg, output_dir, max_steps=cfg.reward_steps, lr=cfg.reward_lr, batch_size=cfg.batch_size),
        max_length=cfg.max_length,
    )


def run(cfg: AlignConfig, sft_dir: Path, tokenizer, train, held_out, scratch: str, callbacks=()):
    """Train the reward model; returns it and its held-out figures."""
    from datasets import Dataset
    from trl import RewardTrainer

    model = load_reward_model(sft_dir, tokenizer)
    with unpatched_print():
        trainer = RewardTrainer(
            model=model,
            args=reward_args(cfg, scratch),
            train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train]),
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )
    without_printer(trainer)
    before = held_out_accuracy(trainer.model, tokenizer, held_out)
    result = trainer.train()
    after = held_out_accuracy(trainer.model, tokenizer, held_out)
    figures = {
        "accuracy_before": before["accuracy"],
        "accuracy": after["accuracy"],
        "stderr": after["stderr"],
        "margin": after["margin"],
        "held_out": after["n"],
        "steps": int(result.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
    return trainer.model, figures
