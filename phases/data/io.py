"""Reading the data phase's output, and the offline switches the Hugging Face stack needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from phases.errors import DataError


def offline_env() -> None:
    """Nothing may come from a hub: every model and data set is local (set before HF imports)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the dataloader


def read_split(data_dir: Path, split: str, columns: tuple[str, ...] = ("id", "source", "text")) -> list[dict[str, Any]]:
    """Rows of one split of the data phase's output (``<split>/*.parquet``), in file order."""
    import pyarrow.parquet as pq

    files = sorted((Path(data_dir) / split).glob("*.parquet"))
    if not files:
        raise DataError(f"no {split} Parquet files under {Path(data_dir) / split}: run the data phase first (or point align at its output)")
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += pq.read_table(f, columns=list(columns)).to_pylist()
    return rows
