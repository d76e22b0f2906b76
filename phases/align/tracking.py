"""Glue between the TRL trainers and the sink: a log-forwarding callback, shared trainer
arguments, and greedy sample generations for the before/after table.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from typing import Any

from phases.metrics import MetricsSink

log = logging.getLogger("lifecycle.align")


def common_args(cfg, output_dir: str, *, max_steps: int, lr: float, batch_size: int) -> dict[str, Any]:
    """TrainingArguments every stage shares; each TRL default that would hurt on CPU is overridden.

    TRL's defaults are bf16=True and gradient checkpointing on: on CPU bf16 autocast is slow and
    lossy for a tiny model, and checkpointing trades speed for memory we have. transformers 5
    renamed gradient_checkpointing to activation_checkpointing (setting the new name also
    silences the deprecation warning TRL's default triggers).
    """
    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=lr,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",  # tracking goes through the sink (SinkCallback), one nested run per stage
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        disable_tqdm=True,  # progress is one log line per logged step (SinkCallback)
        dataloader_num_workers=0,
    )


def peft_config(cfg):
    """A LoRA config on every linear layer when ``align.lora`` is on, else None (full fine-tuning)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules="all-linear")


def export_adapter(model, adapter_dir):
    """Save the LoRA adapter (when ``model`` is a peft model) and return the merged plain model."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    model.save_pretrained(adapter_dir)  # adapter_config.json + adapter_model.safetensors
    return model.merge_and_unload()


# The figures a progress line shows (the sink receives every logged key).
PROGRESS_KEYS = (
    "train/loss",
    "eval/loss",
    "train/grad_norm",
    "rewards/accuracies",
    "rewards/margins",
    "accuracy",
    "reward",
    "kl",
    "completions/mean_length",
    "clip_ratio/region_mean",
)


def sink_callback(sink: MetricsSink, stage: str, history: list[dict[str, float]]):
    """A TrainerCallback forwarding each log (TRL's metrics included) to the sink, one progress line each.

    Keys keep TRL's names (``rewards/accuracies``, ``kl``, ``reward``...); ``loss`` is logged as
    ``train/loss`` and ``eval_*`` as ``eval/*``. ``history`` receives every numeric log.
    """
    from transformers import TrainerCallback

    class SinkCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            numeric = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
            if "train_runtime" in numeric:  # the end-of-training summary, not a step
                return
            metrics = {}
            for k, v in numeric.items():
                if k == "loss":
                    k = "train/loss"
                elif k.startswith("eval_"):
                    k = "eval/" + k[len("eval_") :]
                elif k in ("grad_norm", "learning_rate", "epoch"):
                    k = f"train/{k}"
                metrics[k] = v
            history.append({"step": state.global_step, **metrics})
            sink.log_metrics(metrics, step=state.global_step)
            shown = " ".join(f"{k.removeprefix('train/')}={metrics[k]:.4g}" for k in PROGRESS_KEYS if k in metrics)
            log.info("align %s step %d/%d %s", stage, state.global_step, state.max_steps, shown)

    return SinkCallback()


def generate_samples(model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    """Greedy completions of chat prompts (deterministic, so before/after differ only by the weights)."""
    import torch

    outputs: list[str] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for messages in prompts:
            enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
            )
            outputs.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    model.train(was_training)
    return outputs


def _plain_print(*args, sep=" ", end="\n", file=None, flush=False):
    """What the builtin print does, without any patch: write to ``file`` or the current sys.stdout."""
    import sys

    stream = sys.stdout if file is None else file
    stream.write((" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end))
    if flush:
        stream.flush()


@contextmanager
def unpatched_print():
    """Run dataset preparation with a plain ``print``.

    TRL's ``Dataset.map`` calls fingerprint their functions with dill, whose
    ``detect.nestedglobals`` runs ``dis.dis(func)`` inside ``dill.temp.capture('stdout')``.
    Under a Prefect flow with ``log_prints=True``, ``builtins.print`` is replaced by a function
    that sends anything printed to ``sys.stdout`` (the capture buffer included) to the run
    logger, so every map logged a full bytecode disassembly (268 lines per stage). A plain
    print writes into the capture buffer, where dill expects it.
    """
    import builtins

    saved = builtins.print
    builtins.print = _plain_print
    try:
        yield
    finally:
        builtins.print = saved


def quiet_libraries() -> None:
    """No progress bars from datasets' maps or transformers' weight loading: progress is our log lines."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    # TRL 1.16's DPO and online trainers still call the deprecated name (once per trainer).
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def without_printer(trainer):
    """The trainer minus transformers' PrinterCallback (with tqdm off it prints every log dict)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer
