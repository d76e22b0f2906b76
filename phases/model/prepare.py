"""Phase 2: train the tokenizer, tokenize and pack the splits, size the architecture."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from phases.config import ModelConfig
from phases.errors import ConfigError, DataError
from phases.metrics import MetricsSink
from phases.model.packing import pack_split, token_dtype
from phases.model.tokenizer import SPECIAL_TOKENS, train_tokenizer

log = logging.getLogger("lifecycle.model")


def llama_config(cfg: ModelConfig, tokenizer) -> dict[str, Any]:
    """A from-scratch Llama-style decoder config sized by the model section."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).to_dict()


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of the model, counted on the meta device (no memory allocated)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    return sum(p.numel() for p in model.parameters())


def build(cfg: ModelConfig, inputs: dict, out: Path, sink: MetricsSink) -> dict[str, Any]:
    data = inputs["data"].path
    train_dir, val_dir = data / "train", data / "validation"
    if not any(train_dir.glob("*.parquet")):
        raise DataError(f"the data phase's train split at {train_dir} is empty; rerun the data phase with more sources")
    if cfg.vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ConfigError(f"model.vocab_size={cfg.vocab_size} cannot hold 256 bytes + {len(SPECIAL_TOKENS)} special tokens")

    tokenizer = train_tokenizer(train_dir, cfg.vocab_size, cfg.min_frequency, cfg.tokenizer_max_bytes)
    tokenizer.model_max_length = cfg.max_position_embeddings
    tokenizer.save_pretrained(out / "tokenizer")

    split_stats = {}
    for name, split in (("train", train_dir), ("val", val_dir)):
        stats = pack_split(split, tokenizer, cfg.seq_len, out / f"{name}.bin", out / f"{name}_docs.parquet")
        if stats.sequences == 0:
            raise DataError(f"the {name} split holds {stats.doc_tokens} tokens, fewer than one sequence of model.seq_len={cfg.seq_len}; lower seq_len or add data")
        split_stats[name] = stats

    config = llama_config(cfg, tokenizer)
    (out / "model_config.json").write_text(json.dumps(config, indent=2, default=str))
    packed = {
        "dtype": token_dtype(len(tokenizer)).name,
        "seq_len": cfg.seq_len,
        "train_sequences": split_stats["train"].sequences,
        "val_sequences": split_stats["val"].sequences,
        "vocab_size": len(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
    }
    (out / "packed.json").write_text(json.dumps(packed, indent=2))

    tr = split_stats["train"]
    summary = {
        "vocab_size": len(tokenizer),
        "train_tokens": tr.doc_tokens + tr.separators,
        "val_tokens": split_stats["val"].doc_tokens + split_stats["val"].separators,
        "train_sequences": tr.sequences,
        "val_sequences": split_stats["val"].sequences,
        "dropped_tail_tokens": tr.dropped_tail_tokens,
        "fertility": round(tr.doc_tokens / max(tr.words, 1), 4),
        "bytes_per_token": round(tr.bytes / max(tr.doc_tokens, 1), 4),
        "parameters": count_parameters(config),
    }
    sink.log_metrics({k: v for k, v in summary.items()})
    sink.log_dict(packed, "packed.json")
    log.info("model: %d train sequences of %d tokens, %d parameters", tr.sequences, cfg.seq_len, summary["parameters"])
    return summary
