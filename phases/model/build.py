"""Phase 2: train the tokenizer, tokenize and pack the splits, size the architecture."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from phases.config import ModelConfig
from phases.errors import DataError
from phases.metrics import MetricsSink, write_table
from phases.model import artifact
from phases.model.packing import pack_split
from phases.model.sizing import SIZE_PRESETS, llama_parameters, plan
from phases.model.tokenizer import load_tokenizer, train_tokenizer

log = logging.getLogger("lifecycle.model")


def budget_plan(cfg: ModelConfig, vocab: int, tokens_available: int | None = None):
    """The sizing plan (N, D, batch) for the configured compute budget; None without one."""
    if cfg.budget_flops is None and cfg.gpu_hours is None:
        return None
    law = json.loads(Path(cfg.loss_law).read_text()) if cfg.loss_law else None
    return plan(
        vocab=vocab,
        seq_len=cfg.seq_len,
        budget_flops=cfg.budget_flops,
        gpu_hours=cfg.gpu_hours,
        gpu=cfg.gpu,
        num_gpus=cfg.num_gpus,
        mfu=cfg.mfu,
        tokens_available=tokens_available,
        loss_law=law,
    )


def resolve_shape(cfg: ModelConfig, vocab: int, tokens_available: int) -> tuple[tuple[int, int, int, int], dict[str, Any]]:
    """(hidden, layers, heads, intermediate) and the plan behind them: explicit, a named size, or a budget."""
    p = budget_plan(cfg, vocab, tokens_available)
    if p is not None:
        return (p.hidden_size, p.num_layers, p.num_heads, p.intermediate_size), p.to_dict()
    shape = SIZE_PRESETS[cfg.size] if cfg.size else (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size)
    n = llama_parameters(vocab, shape[0], shape[1], shape[3])
    # Without a budget, report what the data implies for this shape (one epoch, and Chinchilla's 20 N).
    report = {
        "method": f"size:{cfg.size}" if cfg.size else "explicit",
        "parameters": n,
        "tokens_available": tokens_available,
        "compute_one_epoch_flops": 6.0 * n * tokens_available,
        "chinchilla_tokens": 20 * n,
        "chinchilla_epochs": round(20 * n / max(tokens_available, 1), 3),
    }
    return shape, report


def llama_config(shape: tuple[int, int, int, int], cfg: ModelConfig, tokenizer) -> dict[str, Any]:
    """A from-scratch Llama-style decoder config of the given shape."""
    from transformers import LlamaConfig

    hidden, layers, heads, intermediate = shape
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
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
    if _rows(train_dir) == 0:
        raise DataError(f"the data phase's train split at {train_dir} is empty; rerun the data phase with more sources")

    if cfg.tokenizer_path:
        tokenizer = load_tokenizer(cfg.tokenizer_path)
    else:
        tokenizer = train_tokenizer(train_dir, cfg.vocab_size, cfg.min_frequency, cfg.tokenizer_max_bytes, cfg.special_tokens)
    tokenizer.model_max_length = cfg.max_position_embeddings
    tokenizer.save_pretrained(out / artifact.TOKENIZER)

    split_stats = {}
    for name, split in (("train", train_dir), ("val", val_dir)):
        stats = pack_split(split, tokenizer, cfg.seq_len, out / f"{name}.bin", out / f"{name}_docs.parquet")
        if stats.sequences == 0:
            raise DataError(
                f"the {name} split holds {stats.doc_tokens} tokens, fewer than one sequence of model.seq_len={cfg.seq_len}; lower seq_len or add data"
            )
        split_stats[name] = stats

    tr = split_stats["train"]
    shape, sizing = resolve_shape(cfg, len(tokenizer), tr.doc_tokens + tr.separators)
    config = llama_config(shape, cfg, tokenizer)
    packed = artifact.packed_meta(tokenizer, cfg.seq_len, split_stats["train"].sequences, split_stats["val"].sequences)

    per_source = [
        {"source": src, **v, "fertility": round(v["tokens"] / max(v["words"], 1), 4), "bytes_per_token": round(v["bytes"] / max(v["tokens"], 1), 4)}
        for src, v in sorted(tr.by_source.items())
    ]
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
        "hidden_size": shape[0],
        "num_layers": shape[1],
        "tokenizer_source": cfg.tokenizer_path or "trained",
        "per_source": per_source,
        "plan": sizing,
    }
    artifact.write_meta(out, config, packed, sizing)
    sink.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    for row in per_source:
        sink.log_metrics(
            {
                f"fertility/{row['source']}": row["fertility"],
                f"bytes_per_token/{row['source']}": row["bytes_per_token"],
                f"tokens/{row['source']}": row["tokens"],
            }
        )
    sink.log_dict(asdict(packed), artifact.PACKED)
    write_table([{"key": k, "value": v} for k, v in sizing.items()], "plan_table.json", sink)
    write_table(per_source, "tokenizer_stats.json", sink)
    sink.log_artifact(out / "tokenizer", "tokenizer")
    log.info("model: %d train sequences of %d tokens, %d parameters", tr.sequences, cfg.seq_len, summary["parameters"])
    return summary


def _rows(split_dir: Path) -> int:
    """Rows in a split, from the Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(split_dir).glob("*.parquet"))
