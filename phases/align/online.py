"""Stage 3 (method grpo / rloo): online RL against the trained reward model.

TRL 1.16 has no PPOTrainer; its PPO-family online trainers are GRPOTrainer and RLOOTrainer.
Both sample ``num_generations`` completions per prompt, score them with the reward model,
and use the group as the baseline. ``beta > 0`` keeps a frozen reference: TRL loads it from
the policy's ``name_or_path``, so the policy is given as the saved SFT directory (a local
path; a model object built in memory would send TRL to the hub by an empty name). TRL logs
``reward``, ``kl``, ``completions/mean_length`` and ``clip_ratio/*``; they reach the sink
through the stage's callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phases.align.tracking import common_args, unpatched_print, without_printer
from phases.config import AlignConfig


def online_args(cfg: AlignConfig, output_dir: str):
    from trl import GRPOConfig, RLOOConfig

    config_cls = GRPOConfig if cfg.method == "grpo" else RLOOConfig
    extra = {"loss_type": "grpo"} if cfg.method == "grpo" else {}
    return config_cls(
        # per_device_train_batch_size counts completions: two prompts' groups per step.
        **common_args(cfg, output_dir, max_steps=cfg.online_steps, lr=cfg.online_lr, batch_size=2 * cfg.num_generations),
        beta=cfg.online_beta,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=1.0,
        log_completions=False,
        **extra,
    )


def run(cfg: AlignConfig, sft_dir: Path, reward_model, tokenizer, train, scratch: str, callbacks=()) -> tuple[Any, dict[str, Any]]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer, RLOOTrainer

    trainer_cls = GRPOTrainer if cfg.method == "grpo" else RLOOTrainer
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32)  # name_or_path = sft_dir: the reference
    with unpatched_print():
        trainer = trainer_cls(
            model=policy,
            reward_funcs=reward_model,
            args=online_args(cfg, scratch),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in train]),
            processing_class=tokenizer,
            reward_processing_classes=tokenizer,
            callbacks=list(callbacks),
        )
    without_printer(trainer)
    result = trainer.train()
    return trainer.model, {"steps": int(result.global_step), "runtime_s": float(result.metrics.get("train_runtime", 0.0))}
