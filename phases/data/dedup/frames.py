"""Small DataFrame helpers shared by the near-dedup stages."""

from __future__ import annotations

# Id sets up to this size are broadcast: joining them to the documents then moves no text.
BROADCAST_IDS = 2_000_000


def string_frame(spark, names: tuple[str, ...], rows: list[tuple]):
    """A DataFrame of string columns ``names`` from driver-side ``rows``, sent to the JVM as Arrow: no
    Python worker has to convert the rows (a cold session's first Python worker costs seconds)."""
    import pyarrow as pa

    cols = list(zip(*rows)) if rows else [()] * len(names)
    return spark.createDataFrame(pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, cols)}))


def collect_at_most(df, limit: int) -> list | None:
    """The rows of ``df`` when it has at most ``limit`` of them (one job), else None."""
    rows = df.limit(limit + 1).collect()
    return rows if len(rows) <= limit else None


def small_ids(ids):
    """A broadcast hint for an id set that is small enough (one count job to find out)."""
    from pyspark.sql import functions as F

    return F.broadcast(ids) if ids.count() <= BROADCAST_IDS else ids
