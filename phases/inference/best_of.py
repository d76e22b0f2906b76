"""Best-of-N (test-time compute): sample N completions, keep the one the reward model scores highest.

The reward model is the align phase's ``reward_model/`` (a one-logit
``AutoModelForSequenceClassification`` on the chat template, as :mod:`phases.align.reward`
trains and scores it). Without one, best-of-N is reported unavailable rather than faked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from phases.errors import DataError


def reward_dir(model_dir: Path) -> Path | None:
    d = Path(model_dir) / "reward_model"
    return d if (d / "config.json").is_file() else None


def load_reward_model(path: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer


def conversation(row: dict[str, Any], completion: str) -> list[dict[str, str]]:
    messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
    return [*messages, {"role": "assistant", "content": completion}]


def score(model, tokenizer, conversations: Sequence[list[dict[str, str]]], batch_size: int = 8) -> list[float]:
    """Reward of each conversation (right-padded batches; the head reads the last non-pad token)."""
    import torch

    pad = tokenizer.pad_token_id
    limit = getattr(model.config, "max_position_embeddings", None)
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(conversations), batch_size):
            ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations[start : start + batch_size]]
            if limit:
                ids = [i[-limit:] for i in ids]
            width = max(map(len, ids))
            x = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
            out += [float(v) for v in model(input_ids=x, attention_mask=mask).logits[:, 0]]
    return out


def pick(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], n: int, rewards: Sequence[float]) -> list[dict[str, Any]]:
    """Per prompt (``n`` consecutive records each), the highest-reward record, marked with its reward and rank."""
    if len(records) != len(rows) * n or len(rewards) != len(records):
        raise DataError(f"best-of-{n}: {len(records)} completions and {len(rewards)} rewards for {len(rows)} prompts")
    best = []
    for p in range(len(rows)):
        group = list(range(p * n, (p + 1) * n))
        i = max(group, key=lambda k: rewards[k])  # ties: the first sample, so N=1 equals plain sampling
        best.append({**records[i], "reward": rewards[i], "best_of": n, "rewards": [rewards[k] for k in group]})
    return best


def best_of_n(model, tokenizer, reward, reward_tokenizer, rows, cfg) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Best-of-N completions and the mean reward of the first sample (best-of-1) against best-of-N."""
    from phases.inference.generate import generate

    n = cfg.best_of
    sampled = cfg.model_copy(update={"greedy": False, "num_return_sequences": n})
    records = generate(model, tokenizer, rows, sampled)
    rewards = score(reward, reward_tokenizer, [conversation(rows[k // n], r["completion"]) for k, r in enumerate(records)])
    best = pick(records, rows, n, rewards)
    first = [rewards[p * n] for p in range(len(rows))]
    figures = {"best_of": n, "mean_reward_best_of_1": sum(first) / len(first), "mean_reward_best_of_n": sum(b["reward"] for b in best) / len(best)}
    return best, figures
