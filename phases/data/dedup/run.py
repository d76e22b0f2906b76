"""Near-duplicate removal on Spark, one run of the five stages, for a whole corpus or for a batch
against an index of earlier ones (the same stages either way):

signatures (:mod:`.signatures`) -> candidate buckets (:mod:`.candidates`) -> verification
(:mod:`.verify`) -> components (:mod:`.components`) -> the index (:mod:`.index`, incremental runs).

One document per cluster is kept: the smallest id, or the indexed one. Everything is set-based
(min, distinct), so the result does not depend on partitioning. Document ids must be unique.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

from phases.config import NearDedupConfig
from phases.data.dedup.candidates import candidate_buckets
from phases.data.dedup.components import cluster_labels
from phases.data.dedup.index import check_params, generations, indexed
from phases.data.dedup.signatures import signature_rows
from phases.data.dedup.verify import verified_edges

log = logging.getLogger("lifecycle.data.dedup")

WARM_JOB_GROUP = "warm-python-workers"


class StageTimer:
    """Seconds per stage (each stage ends in an action), logged as progress and kept for the stats."""

    def __init__(self, what: str):
        self.what, self.seconds, self._t = what, {}, time.perf_counter()

    def done(self, stage: str, result=None):
        """Marks ``stage`` finished; returns ``result`` (so a stage's call can be wrapped)."""
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._t, 2)
        self._t = now
        log.info("%s: %s done in %.1f s", self.what, stage, self.seconds[stage])
        return result

    def stats(self) -> dict[str, float]:
        return {f"seconds_{k}": v for k, v in self.seconds.items()}


def _warm(batches: Iterator[Any]) -> Iterator[Any]:
    """mapInArrow function that emits nothing: its worker has imported the stage modules (numpy,
    pyarrow, pandas with pyspark's Arrow path) by the time it runs."""
    for _ in batches:
        pass
    yield from ()


def warm_python_workers(spark):
    """Starts the session's Python workers in a background job (one task per core), so that their
    start and imports overlap the driver's first queries instead of delaying the signature stage.
    Returns the thread; join it before stopping the session. A failure only loses the head start."""
    import threading

    def job():
        try:
            sc = spark.sparkContext
            sc.setJobGroup(WARM_JOB_GROUP, "start the Python workers", interruptOnCancel=True)
            n = sc.defaultParallelism
            spark.range(n, numPartitions=n).mapInArrow(_warm, "id long").collect()
        except Exception as e:  # noqa: BLE001 (a head start, not a result)
            log.debug("python worker warm-up failed: %s", e)

    thread = threading.Thread(target=job, name="warm-python-workers", daemon=True)
    thread.start()
    return thread


def spread(docs, sizes: list[int] | None = None):
    """``docs`` hash-partitioned by id when its rows would otherwise sit on fewer cores than there are.

    By default that is when it has fewer partitions than cores (e.g. one small file). ``sizes`` (the
    rows of each non-empty partition) also spreads when one partition holds most of them: a Parquet
    row group is read whole by the split holding its middle, so a file of one big row group comes as
    one full partition and empty ones.
    """
    try:
        cores = docs.sparkSession.sparkContext.defaultParallelism
        if sizes is not None:
            uneven = len(sizes) < cores or max(sizes) > 1.5 * sum(sizes) / cores
        else:
            uneven = docs.rdd.getNumPartitions() < cores
        if uneven:
            return docs.repartition(2 * cores, "id")
    except Exception:  # no RDD API (Spark Connect): leave the partitioning to Spark
        pass
    return docs


def _prepared(docs, placed: bool):
    """(id and text as strings, a cache of ours to drop when done or None). ``placed``: the caller
    spread (and cached, where that pays) ``docs`` itself, so it is read as it is."""
    from pyspark.sql import functions as F

    level = docs.storageLevel
    owned = None
    if not (placed or level.useMemory or level.useDisk):
        docs = owned = spread(docs).persist()
    types = dict(docs.dtypes)
    cols = [F.col(c) if types[c] == "string" else F.col(c).cast("string").alias(c) for c in ("id", "text")]
    return docs.select(*cols), owned


def near_dedup(spark, docs, params: NearDedupConfig = NearDedupConfig(), index_dir=None, placed: bool = False, with_edges: bool = False):
    """(clusters, stats[, edges]): clusters has one row per document of ``docs`` (id, cluster_id, kept).

    ``docs`` needs columns id (unique) and text; others are ignored. ``index_dir``: deduplicate against
    the documents indexed there as well (:func:`~phases.data.dedup.index.update_index` adds these
    afterwards); an indexed cluster outranks any new document, and a new document that bridges two
    indexed clusters joins the smaller (``bridged_clusters``; the indexed documents keep their ids).
    For new ids that sort after the indexed ones, the result equals a full recompute.
    ``clusters`` is persisted: unpersist it when done. ``with_edges``: the duplicate edges too
    (a, b, jaccard; exact copies with 1.0).
    """
    from pyspark.sql import functions as F

    if index_dir is not None:
        check_params(index_dir, params)
    t = StageTimer("near-dedup" + (" (incremental)" if index_dir is not None else ""))
    docs, owned = _prepared(docs, placed)
    exact, bands, reps = t.done("signatures", signature_rows(docs, params))
    texts = reps.withColumn("cluster", F.lit(None).cast("string"))
    old, old_bands = indexed(spark, index_dir, docs, bands, params) if index_dir is not None else (None, None)
    if old is not None:
        t.done("id_check")
        bands = bands.withColumn("fresh", F.lit(True)).unionByName(old_bands.withColumn("fresh", F.lit(False)))
        texts = texts.unionByName(old.select("id", "text", F.col("cluster_id").alias("cluster")))
    buckets = t.done("candidates", candidate_buckets(bands).localCheckpoint())
    verified, computed = t.done("verification", verified_edges(buckets, texts, params))
    labels, bridged = cluster_labels(spark, verified, exact, old)
    node = F.concat(F.lit("1"), "id")
    clusters = (
        docs.select("id", node.alias("node"))
        .join(labels.withColumnRenamed("id", "node"), "node", "left")
        .select("id", F.coalesce("label", "node").alias("label"))
        .select("id", F.expr("substring(label, 2)").alias("cluster_id"), (F.col("label") == node).alias("kept"))
        .persist()
    )
    totals = clusters.agg(
        F.count("*").alias("docs"),
        F.count(F.when(~F.col("kept"), 1)).alias("removed"),
        F.countDistinct(F.when(~F.col("kept"), F.col("cluster_id"))).alias("clusters"),
    ).first()
    t.done("components")
    b, r = params.banding()
    stats = {
        **totals.asDict(),
        "exact_duplicates": exact.count(),
        "candidate_buckets": buckets.count(),
        "jaccards_computed": computed,
        "verified_pairs": verified.count(),
        "bands": b,
        "rows": r,
        **{f"param_{k}": v for k, v in params.signature_params().items()},
        **t.stats(),
    }
    if index_dir is not None:
        stats.update(indexed_generations=len(generations(index_dir)), bridged_clusters=bridged)
    if owned is not None:
        owned.unpersist()
    if not with_edges:
        return clusters, stats
    copies = exact.select(F.col("rep").alias("a"), F.col("id").alias("b"), F.lit(1.0).alias("jaccard"))
    return clusters, stats, verified.unionByName(copies)
