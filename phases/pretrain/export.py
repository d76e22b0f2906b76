"""The model card (``README.md``) published with the pretrained model.

Rank 0 writes the HF model (safetensors) and tokenizer (``loop.save``); the card is written
by the parent process from the summary, so it describes the run as a whole, resumed
attempts included. It is what someone finding the folder on its own needs: what data
(the model phase output's fingerprint), which settings, how far it trained, how good.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phases.config import PretrainConfig
from phases.model import artifact

CARD = "README.md"


def model_card(cfg: PretrainConfig, summary: dict[str, Any], data_fingerprint: str, data_uri: str, architecture: dict[str, Any]) -> str:
    arch_keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "tie_word_embeddings",
    )
    arch = {k: architecture.get(k) for k in arch_keys}
    results = "\n".join(
        f"| {k} | {_fmt(summary.get(k))} |"
        for k in (
            "steps",
            "tokens_seen",
            "first_loss",
            "final_loss",
            "val_loss",
            "val_perplexity",
            "global_batch_size",
            "world_size",
            "generation",
            "resumed_from",
        )
    )
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [llm-lifecycle, pretrained-from-scratch, llama]
---

# Pretrained Llama-style decoder (llm-lifecycle, phase `pretrain`)

Trained from scratch with DeepSpeed (ZeRO stage {cfg.zero_stage}, {cfg.precision}) on the packed
sequences of the model phase. Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`;
the tokenizer files are beside the weights.

## Training data

- data digest (model phase output fingerprint): `{data_fingerprint}`
- model phase output: `{data_uri}`

## Results

| figure | value |
| --- | --- |
{results}

## Architecture

```json
{json.dumps(arch, indent=2)}
```

## Configuration (`pretrain` section)

```json
{json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True)}
```
"""


def write_model_card(out: Path, cfg: PretrainConfig, summary: dict[str, Any], data_fingerprint: str, model_dir: Path) -> Path:
    architecture = artifact.read_architecture(model_dir)
    path = Path(out) / CARD
    path.write_text(model_card(cfg, summary, data_fingerprint, str(model_dir), architecture))
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)
