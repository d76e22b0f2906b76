"""Stage 2 (method dpo): direct preference optimization with TRL's DPOTrainer.

The SFT model is both the starting point and the frozen reference, passed explicitly
(TRL 1.16 otherwise loads the reference by the config's name, which for a model object
built here is empty and sends it to the hub). Held-out figures are computed here, per row:
- preference accuracy: log p(chosen | prompt) > log p(rejected | prompt), the same measure
  for the SFT model and the DPO model, so the two are comparable;
- implicit-reward accuracy: beta * (log pi - log pi_ref) of chosen above that of rejected
  (DPO's own ``rewards/accuracies``; 0 by definition for the reference itself).
"""

from __future__ import annotations

from typing import Any

from phases.align.tracking import common_args, peft_config, unpatched_print, without_printer
from phases.config import AlignConfig


def completion_logps(model, tokenizer, rows: list[dict[str, Any]], key: str, batch_size: int = 8) -> list[float]:
    """Summed log-probability of each row's ``key`` turn given its prompt (chat template applied).

    Batched with right padding: each row's completion tokens are those after its own prompt,
    up to its own length, so padding never enters a sum.
    """
    import torch

    out: list[float] = []
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            prompts = [
                len(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
                for r in batch
            ]
            fulls = [tokenizer.apply_chat_template(r["prompt"] + r[key], tokenize=True, return_dict=True)["input_ids"] for r in batch]
            width = max(map(len, fulls))
            ids = torch.tensor([f + [pad] * (width - len(f)) for f in fulls])
            mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in fulls])
            logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            token_logps = logps.gather(-1, ids[:, 1:, None])[..., 0]
            for i, (n_prompt, full) in enumerate(zip(prompts, fulls)):
                out.append(float(token_logps[i, n_prompt - 1 : len(full) - 1].sum()))
    model.train(was_training)
    return out


def preference_logps(model, tokenizer, rows) -> tuple[list[float], list[float]]:
    return completion_logps(model, tokenizer, rows, "chosen"), completion_logps(model, tokenizer, rows, "rejected")


def preference_accuracy(logps: tuple[list[float], list[float]], ref_logps: tuple[list[float], list[float]] | None = None) -> dict[str, float]:
    """Held-out accuracies and mean log-prob margin (see the module docstring)."""
    chosen, rejected = logps
    n = len(chosen)
    result = {
        "pref_accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
        "logp_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "n": n,
    }
    if ref_logps is not None:
        ref_c, ref_r = ref_logps
        result["implicit_accuracy"] = sum((c - rc) > (r - rr) for c, rc, r, rr in zip(chosen, ref_c, rejected, ref_r)) / n
    return result


def dpo_args(cfg: AlignConfig, output_dir: str):
    from trl import DPOConfig

    return DPOConfig(
        **common_args(cfg, output_dir, max_steps=cfg.dpo_steps, lr=cfg.dpo_lr, batch_size=cfg.batch_size),
        beta=cfg.dpo_beta,
        max_length=cfg.max_length,
    )


def make_trainer(cfg: AlignConfig, model, ref_model, tokenizer, train, held_out, output_dir: str, callbacks=()):
    from datasets import Dataset
    from trl import DPOTrainer

    def dataset(rows):
        return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])

    peft = peft_config(cfg)
    with unpatched_print():
        trainer = DPOTrainer(
            model=model,
            # With LoRA the reference is the base with the adapter switched off: the SFT weights.
            ref_model=None if peft is not None else ref_model,
            peft_config=peft,
            args=dpo_args(cfg, output_dir),
            train_dataset=dataset(train),
            eval_dataset=dataset(held_out) if held_out else None,
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )
    return without_printer(trainer)


def run(cfg: AlignConfig, model, ref_model, tokenizer, train, held_out, scratch: str, callbacks=()) -> tuple[Any, dict[str, Any]]:
    """Train; held-out figures before (the SFT model, which is also the reference) and after."""
    ref_logps = preference_logps(model, tokenizer, held_out)  # model == the reference's weights here
    before = preference_accuracy(ref_logps)
    trainer = make_trainer(cfg, model, ref_model, tokenizer, train, None, scratch, callbacks)
    result = trainer.train()
    after = preference_accuracy(preference_logps(trainer.model, tokenizer, held_out), ref_logps)
    return trainer.model, {
        "pref_accuracy_before": before["pref_accuracy"],
        "pref_accuracy_after": after["pref_accuracy"],
        "logp_margin_before": before["logp_margin"],
        "logp_margin_after": after["logp_margin"],
        "implicit_accuracy": after["implicit_accuracy"],
        "held_out": after["n"],
        "steps": int(result.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
