"""Stage 1: supervised fine-tuning on chat ``messages`` with TRL's SFTTrainer.

The tokenizer's chat template marks each assistant turn (its content and end-of-turn token)
with ``{% generation %}``, so ``assistant_only_loss=True`` trains only what the model should
say, stopping included; the user turn and the role tags are context. The held-out split
gives ``eval_loss`` before and after training.
"""

from __future__ import annotations

from typing import Any

from phases.align.tracking import common_args, peft_config, unpatched_print, without_printer
from phases.config import AlignConfig


def sft_args(cfg: AlignConfig, output_dir: str):
    from trl import SFTConfig

    return SFTConfig(
        **common_args(cfg, output_dir, max_steps=cfg.max_steps, lr=cfg.lr, batch_size=cfg.batch_size),
        max_length=cfg.max_length,
        assistant_only_loss=True,
        packing=False,
    )


def make_trainer(
    cfg: AlignConfig, model, tokenizer, train: list[dict[str, Any]], held_out: list[dict[str, Any]] | None, output_dir: str, callbacks=()
):
    """An SFTTrainer on conversational rows; TRL applies the chat template and masks non-assistant tokens."""
    from datasets import Dataset
    from trl import SFTTrainer

    def dataset(rows):
        return Dataset.from_list([{"messages": r["messages"]} for r in rows])

    with unpatched_print():
        trainer = SFTTrainer(
            model=model,
            args=sft_args(cfg, output_dir),
            train_dataset=dataset(train),
            eval_dataset=dataset(held_out) if held_out else None,
            processing_class=tokenizer,
            callbacks=list(callbacks),
            peft_config=peft_config(cfg),
        )
    return without_printer(trainer)


def run(cfg: AlignConfig, model, tokenizer, train, held_out, scratch: str, callbacks=()) -> tuple[Any, dict[str, Any]]:
    """Train; returns the trained model (a peft model when align.lora) and the held-out loss before and after."""
    trainer = make_trainer(cfg, model, tokenizer, train, held_out, scratch, callbacks)
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    after = trainer.evaluate()["eval_loss"]
    return trainer.model, {
        "eval_loss_before": float(before),
        "eval_loss_after": float(after),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
