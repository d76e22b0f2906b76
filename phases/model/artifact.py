"""The model phase's output: the contract pretraining, lineage and evaluation read.

One module writes and reads it (the model phase and the test fixtures write through
:func:`write`; every consumer reads through the ``read_*`` functions), so the layout is
spelled out once:

- ``tokenizer/``: the Hugging Face tokenizer (``save_pretrained``), chat template included;
- ``model_config.json``: the Llama architecture (``LlamaConfig.to_dict()``);
- ``train.bin`` / ``val.bin``: packed token rows of ``seq_len`` in ``dtype``;
- ``packed.json``: :class:`Packed`, the rows' layout and the special-token ids;
- ``plan.json``: how the architecture was chosen (explicit, a named size, or a compute
  budget: then it holds the planned tokens ``D`` that pretraining trains for);
- ``train_docs.parquet`` / ``val_docs.parquet``: which documents each row came from (the
  model phase writes them while packing).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phases.errors import DataError

PACKED, ARCHITECTURE, PLAN, TOKENIZER = "packed.json", "model_config.json", "plan.json", "tokenizer"
REQUIRED = (ARCHITECTURE, PACKED, "train.bin", "val.bin", f"{TOKENIZER}/tokenizer.json")


@dataclass(frozen=True)
class Packed:
    """The layout of ``train.bin``/``val.bin`` and the ids the loaders need."""

    dtype: str
    seq_len: int
    train_sequences: int
    val_sequences: int
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write(out: Path, tokenizer, architecture: dict[str, Any], train: np.ndarray, val: np.ndarray, plan: dict[str, Any] | None = None) -> Packed:
    """Write the whole artifact but the per-row document tables; ``train``/``val`` are (rows, seq_len) arrays."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(tokenizer))
    for name, rows in (("train", train), ("val", val)):
        np.ascontiguousarray(rows, dtype=dtype).tofile(out / f"{name}.bin")
    tokenizer.save_pretrained(out / TOKENIZER)
    packed = packed_meta(tokenizer, int(train.shape[1]), len(train), len(val))
    write_meta(out, architecture, packed, plan)
    return packed


def packed_meta(tokenizer, seq_len: int, train_sequences: int, val_sequences: int) -> Packed:
    return Packed(
        dtype=token_dtype(len(tokenizer)).name,
        seq_len=seq_len,
        train_sequences=train_sequences,
        val_sequences=val_sequences,
        vocab_size=len(tokenizer),
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )


def write_meta(out: Path, architecture: dict[str, Any], packed: Packed, plan: dict[str, Any] | None = None) -> None:
    """The JSON files of the artifact (for a writer that streams the ``.bin`` files itself)."""
    out = Path(out)
    (out / ARCHITECTURE).write_text(json.dumps(architecture, indent=2, default=str))
    (out / PACKED).write_text(json.dumps(asdict(packed), indent=2))
    if plan is not None:
        (out / PLAN).write_text(json.dumps(plan, indent=2))


def read_packed(model_dir: Path) -> dict[str, Any]:
    return _read(model_dir, PACKED)


def read_architecture(model_dir: Path) -> dict[str, Any]:
    return _read(model_dir, ARCHITECTURE)


def read_plan(model_dir: Path) -> dict[str, Any]:
    """The sizing plan; empty for artifacts written without one."""
    path = Path(model_dir) / PLAN
    return json.loads(path.read_text()) if path.is_file() else {}


def _read(model_dir: Path, name: str) -> dict[str, Any]:
    path = Path(model_dir) / name
    if not path.is_file():
        raise DataError(f"{model_dir} has no {name}: point this at the model phase's output (outputs/model/<key>)")
    return json.loads(path.read_text())


def rows(model_dir: Path, split: str) -> np.ndarray:
    """The ``(n, seq_len)`` token rows of ``<split>.bin`` (``train`` or ``val``), memory-mapped read-only."""
    meta = read_packed(model_dir)
    path = Path(model_dir) / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"{model_dir} has no {path.name}: point this at the model phase's output")
    seq_len = int(meta["seq_len"])
    flat = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    if flat.size == 0 or flat.size % seq_len:
        raise DataError(f"{path} holds {flat.size} tokens, not a whole number of rows of seq_len={seq_len}")
    return flat.reshape(-1, seq_len)


def check(model_dir: Path) -> None:
    """Fail in one process, with the fix named, what would otherwise fail in every training
    rank after a minute of startup (a missing or short file, token ids beyond the embeddings)."""
    model_dir = Path(model_dir)
    missing = [f for f in REQUIRED if not (model_dir / f).is_file()]
    if missing:
        raise DataError(f"model phase output {model_dir} lacks {', '.join(missing)}; rerun the model phase")
    meta = read_packed(model_dir)
    row_bytes = int(meta["seq_len"]) * np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        expected = meta.get(f"{split}_sequences")
        size = (model_dir / f"{split}.bin").stat().st_size
        if size == 0 or size % row_bytes or (expected is not None and size // row_bytes != expected):
            raise DataError(
                f"{model_dir / f'{split}.bin'} has {size} bytes, not {expected} rows of {row_bytes} bytes "
                f"(packed.json: seq_len={meta['seq_len']}, dtype={meta['dtype']}); rerun the model phase"
            )
    model = read_architecture(model_dir)
    if meta.get("vocab_size") and model.get("vocab_size", 0) < meta["vocab_size"]:
        raise DataError(
            f"model_config.json vocab_size={model.get('vocab_size')} is below the tokenizer's "
            f"{meta['vocab_size']} (packed.json); the model phase must size the embeddings to the tokenizer"
        )
    if model.get("max_position_embeddings", meta["seq_len"]) < meta["seq_len"]:
        raise DataError(
            f"model_config.json max_position_embeddings={model['max_position_embeddings']} is below "
            f"seq_len={meta['seq_len']} (packed.json); raise model.max_position_embeddings"
        )
