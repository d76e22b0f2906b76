"""Phase 4: supervised fine-tuning of the pretrained model with TRL's SFTTrainer.

Pairs come from :mod:`phases.align.recipes` (signature -> docstring summary). The dataset
is in TRL's prompt-completion format, so the loss covers only the completion tokens
(TRL 1.16 sets ``completion_only_loss`` from the dataset format; we set it explicitly).
The trainer writes its scratch files to a temporary directory, never into ``out``: ``out``
holds exactly the published model, tokenizer and ``pairs.jsonl``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

from phases.align.recipes import PairStats, derive_pairs
from phases.data.io import offline_env, read_split
from phases.config import AlignConfig
from phases.errors import DataError
from phases.metrics import MetricsSink
from phases.refs import PhaseRef


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with Path(path).open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def no_pairs_message(stats: PairStats, data_dir: Path) -> str:
    if stats.docs_parsed == 0:
        return (
            f"no instruction pairs: none of the {stats.docs_seen} train documents under {data_dir} parses as Python "
            f"(failures by source: {stats.failures_by_kind}); add a Python source (e.g. kind python_stdlib) to data.sources"
        )
    return (
        f"no instruction pairs: {stats.docs_parsed} train documents parse as Python but contain no public function "
        f"with a docstring ({stats.functions_seen} functions seen); add documented Python sources to data.sources"
    )


def loss_callback(sink: MetricsSink, losses: list[float]):
    """A TrainerCallback that forwards each logged step to the sink and keeps the losses."""
    from transformers import TrainerCallback

    class SinkCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            # Per-step logs carry "loss"; the end-of-training summary carries "train_loss" instead.
            if not logs or "loss" not in logs:
                return
            losses.append(float(logs["loss"]))
            metrics = {"train/loss": logs["loss"]}
            for key in ("grad_norm", "learning_rate"):
                if key in logs:
                    metrics[f"train/{key}"] = logs[key]
            sink.log_metrics(metrics, step=state.global_step)

    return SinkCallback()


def sft_args(cfg: AlignConfig, output_dir: str):
    """SFTConfig for a small CPU run; every default that would hurt here is overridden on purpose."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        max_length=cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=True,
        # TRL's defaults: bf16=True and gradient_checkpointing=True. On CPU bf16 autocast is
        # slow and lossy for a tiny model, and checkpointing only trades speed for memory we have.
        # transformers 5 renamed gradient_checkpointing to activation_checkpointing (setting
        # the new name also silences the deprecation warning TRL's default triggers).
        bf16=False,
        activation_checkpointing=False,
        completion_only_loss=True,
        packing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def make_trainer(cfg: AlignConfig, model, tokenizer, pairs: list[dict[str, str]], output_dir: str, callbacks=()):
    """An SFTTrainer on prompt-completion pairs; TRL tokenizes them and masks the prompt in the labels."""
    from datasets import Dataset
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=sft_args(cfg, output_dir),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def build(cfg: AlignConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    offline_env()
    data_dir, model_dir, out = inputs["data"].path, inputs["pretrain"].path, Path(out)

    pairs, stats = derive_pairs(read_split(data_dir, "train"), cfg.num_pairs, cfg.seed)
    sink.log_params({f"align.pairs.{k}": v for k, v in stats.to_dict().items()})
    if not pairs:
        raise DataError(no_pairs_message(stats, data_dir))
    write_jsonl(out / "pairs.jsonl", pairs)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # the collator pads with it; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    losses: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sft-") as scratch:
        trainer = make_trainer(cfg, model, tokenizer, pairs, scratch, [loss_callback(sink, losses)])
        result = trainer.train()

    trainer.model.save_pretrained(out)  # safetensors is the only format transformers 5 writes
    tokenizer.save_pretrained(out)
    summary = {
        "num_pairs": len(pairs),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "steps": int(result.global_step),
    }
    sink.log_metrics({"align/num_pairs": len(pairs), "align/train_runtime_s": result.metrics.get("train_runtime", 0.0)})
    return summary
