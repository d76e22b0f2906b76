"""Token-to-document lineage of a pretrained model: which documents its training steps saw.

The packed rows a run trained on follow from its seed, world size and batch layout (see
``PackedSequences.rows_seen``); the model phase's ``train_docs.parquet`` maps token
offsets back to document ids and sources.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phases.config import PretrainConfig
from phases.errors import DataError
from phases.model import artifact


def rows_to_documents(docs: pa.Table, rows: np.ndarray, seq_len: int) -> pa.Table:
    """Documents with at least one token in the given packed rows, and how many of those rows hold them."""
    starts = docs.column("start").to_numpy()
    ends = starts + docs.column("length").to_numpy()
    rows = np.asarray(rows, dtype=np.int64)
    first = np.searchsorted(ends, rows * seq_len, side="right")
    last = np.searchsorted(starts, (rows + 1) * seq_len, side="left")
    counts = np.zeros(len(starts) + 1, dtype=np.int64)  # difference array over document indices
    np.add.at(counts, first, 1)
    np.add.at(counts, last, -1)
    per_doc = np.cumsum(counts)[:-1]
    keep = np.nonzero(per_doc)[0]
    return pa.table(
        {
            "id": docs.column("id").take(pa.array(keep)),
            "source": docs.column("source").take(pa.array(keep)),
            "rows": pa.array(per_doc[keep]),
        }
    )


def _run(pretrain_dir: Path) -> tuple[PretrainConfig, Path, dict]:
    """A pretraining output's config, model phase directory and summary."""
    pretrain_dir = Path(pretrain_dir)
    try:
        spec = json.loads((pretrain_dir / "training_args.json").read_text())
        summary = json.loads((pretrain_dir / "summary.json").read_text())
    except FileNotFoundError as e:
        raise DataError(f"{pretrain_dir} is not a pretraining output ({e.filename} missing)") from None
    return PretrainConfig.model_validate(spec["pretrain"]), Path(spec["model_dir"]), summary


def rows_seen(pretrain_dir: Path, steps: int | None = None) -> tuple[np.ndarray, Path]:
    """The packed train rows a pretraining output's first ``steps`` steps (all by default)
    trained on, in order (repeats after an epoch included), and its model phase directory."""
    from phases.pretrain.loop import PackedSequences

    cfg, model_dir, summary = _run(pretrain_dir)
    done = int(summary["steps"])
    steps = done if steps is None else steps
    if not 0 <= steps <= done:
        raise DataError(f"--step {steps} is outside the run's 0..{done} steps")
    world = cfg.num_gpus * cfg.num_nodes
    data = PackedSequences(model_dir / "train.bin", artifact.read_packed(model_dir), rank=0, world_size=world, seed=cfg.seed)
    return data.rows_seen(cfg.micro_batch_size, cfg.grad_accum, steps), model_dir


def documents_seen(pretrain_dir: Path, steps: int | None = None) -> tuple[pa.Table, dict]:
    """The documents a pretraining output (or its first ``steps`` steps) trained on, and a summary."""
    rows, model_dir = rows_seen(pretrain_dir, steps)
    summary = _run(pretrain_dir)[2]
    steps = int(summary["steps"]) if steps is None else steps
    meta = artifact.read_packed(model_dir)
    table = rows_to_documents(pq.read_table(model_dir / "train_docs.parquet"), rows, int(meta["seq_len"]))
    by_source: dict[str, int] = {}
    for s in table.column("source").to_pylist():
        by_source[s] = by_source.get(s, 0) + 1
    info = {
        "steps": steps,
        "rows": int(len(rows)),
        "distinct_rows": int(len(np.unique(rows))),
        "documents": table.num_rows,
        "documents_available": pq.read_metadata(model_dir / "train_docs.parquet").num_rows,
        "by_source": by_source,
        # After a warm start (generation > 0) the data position was reset: earlier
        # generations trained on other data, recorded in their own outputs.
        "generation": summary.get("generation", 0),
        "model_dir": str(model_dir),
    }
    return table, info
