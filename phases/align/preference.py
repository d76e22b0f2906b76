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

from phases.align.tracking import common_args, unpatched_print, without_printer
from phases.config import AlignConfig


def completion_logps(model, tokenizer, rows: list[dict[str, Any]], key: str) -> list[float]:
    """Summed log-probability of each row's ``key`` turn given its prompt (chat template applied)."""
    import torch

    out: list[float] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for row in rows:
            prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            full = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True, return_dict=True)["input_ids"]
            ids = torch.tensor([full])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            token_logps = logps.gather(-1, targets[:, None])[:, 0]
            out.append(float(token_logps[len(prompt) - 1 :].sum()))
    model.train(was_training)
    return out


def preference_accuracy(model, tokenizer, rows, ref_model=None) -> dict[str, float]:
    """Held-out accuracies and mean margin (see the module docstring)."""
    chosen, rejected = completion_logps(model, tokenizer, rows, "chosen"), completion_logps(model, tokenizer, rows, "rejected")
    n = len(rows)
    result = {"pref_accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
              "logp_margin": sum(c - r for c, r in zip(chosen, rejected)) / n, "n": n}
    if ref_model is not None:
        ref_c, ref_r = completion_logps(ref_model, tokenizer, rows, "chosen"), completion_logps(ref_model, tokenizer, rows, "rejected")
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

    with unpatched_print():
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=dpo_args(cfg, output_dir),
            train_dataset=dataset(train),
            eval_dataset=dataset(held_out) if held_out else None,
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )
    return without_printer(trainer)


def run(cfg: AlignConfig, model, ref_model, tokenizer, train, held_out, scratch: str, callbacks=()) -> dict[str, Any]:
    before = preference_accuracy(model, tokenizer, held_out)
    trainer = make_trainer(cfg, model, ref_model, tokenizer, train, held_out, scratch, callbacks)
    result = trainer.train()
    metrics = trainer.evaluate()
    after = preference_accuracy(trainer.model, tokenizer, held_out, ref_model)
    return {
        "pref_accuracy_before": before["pref_accuracy"], "pref_accuracy_after": after["pref_accuracy"],
        "logp_margin_before": before["logp_margin"], "logp_margin_after": after["logp_margin"],
        "implicit_accuracy": after["implicit_accuracy"], "held_out": after["n"],
        "eval_rewards_accuracies": float(metrics.get("eval_rewards/accuracies", float("nan"))),
        "eval_rewards_margins": float(metrics.get("eval_rewards/margins", float("nan"))),
        "steps": int(result.global_step), "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
