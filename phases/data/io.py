"""Reading the data phase's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phases.errors import DataError


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
