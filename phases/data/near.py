"""Near-duplicate removal in the data phase: the whole corpus, or only what is new against the index
of earlier runs (a nightly run on sources that grew).

With ``data.dedup_index`` on (the default) and a ``LIFECYCLE_HOME``, each run leaves its near-deduplicated documents in an
index (:mod:`phases.data.dedup.index`) under ``$LIFECYCLE_HOME/index/dedup/<id>``, where ``<id>``
digests the data section without the mixture and split settings: a changed filter, source list or
dedup parameter starts another index. A later run whose corpus still holds every indexed document
with the same text (sources that only grew, as a nightly drop does) near-deduplicates only the
documents not in the index, against it; the indexed ones keep their verdict (an indexed cluster
keeps its document, so a new document never displaces an old one). When an indexed document has
changed or disappeared, or the index was built by another release, the run deduplicates everything
and rebuilds the index, and says why. One run at a time updates an index (a file lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from phases.config import DataConfig
from phases.metrics import MetricsSink
from phases.storage import file_lock

log = logging.getLogger("lifecycle.data")

# Part of the index id: a change to what an index holds (not to its parameters) gets a new number.
INDEX_LAYOUT = 1
# Settings that act after dedup (what is sampled, how it is split and written) or only on where it runs:
# changing them keeps the index.
AFTER_DEDUP = ("seed", "val_fraction", "shards", "max_epochs", "mix_by", "spark_master", "spark_driver_memory", "dedup_index")


def index_dir(cfg: DataConfig) -> Path | None:
    """Where this data section's index lives; None when no LIFECYCLE_HOME is set (no state to keep it in)."""
    home = os.environ.get("LIFECYCLE_HOME")
    if not (home and cfg.near_dedup.enabled and cfg.dedup_index):
        return None
    section = cfg.model_dump(mode="json", exclude=set(AFTER_DEDUP))
    for s in section["sources"]:
        s.pop("weight", None)
    digest = hashlib.sha256(json.dumps({"layout": INDEX_LAYOUT, "data": section}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(home) / "index" / "dedup" / digest


def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.parent / f".{path.name}.lock", f"data: the dedup index {path} is in use by another run: waiting for it")


def indexed_ids(spark, cfg: DataConfig):
    """The ids (column ``id``) in this section's index, or None (no index in use, or an empty one)."""
    from phases.data.dedup.index import generations

    where = index_dir(cfg)
    gens = generations(where) if where else []
    # Materialized: a rebuild replaces the index files while later stages still read these ids.
    return spark.read.parquet(*[str(g / "docs") for g in gens]).select("id").localCheckpoint() if gens else None


def remove_near_duplicates(spark, unique, cfg: DataConfig):
    """Drop all but one document of each verified near-duplicate cluster (see the module docstring).

    Returns the remaining documents, the removed ones as rejected rows, the dedup stats and the
    cluster-size distribution ({size: clusters}).
    """
    from pyspark.sql import functions as F

    from phases.data.dedup.frames import small_ids

    nd = cfg.near_dedup
    log.info(
        "data: near-dedup (MinHash %d perms, %d-grams, threshold %.2f, bands x rows %s, %s hash)",
        nd.num_perm,
        nd.ngram,
        nd.threshold,
        nd.banding(),
        nd.hashing,
    )
    where = index_dir(cfg)
    if where is not None:
        with _locked(where):
            verdicts, stats = _against_index(spark, unique, cfg, where)
    else:
        verdicts, stats = _full(spark, unique, cfg)
    removed = verdicts.where(F.col("id") != F.col("cluster_id")).select("id", "cluster_id").persist()
    near = unique.join(removed, "id").select(
        "id",
        "source",
        "location",
        "line",
        F.lit("dedup").alias("stage"),
        F.lit("near_duplicate").alias("reason"),
        F.col("cluster_id").alias("detail"),
        "chars",
    )
    remaining = unique.join(small_ids(removed.select("id")), "id", "left_anti").persist()
    sizes = {
        int(r["size"]): int(r["clusters"])
        for r in verdicts.groupBy("cluster_id")
        .count()
        .where("count > 1")
        .groupBy(F.col("count").alias("size"))
        .agg(F.count("*").alias("clusters"))
        .collect()
    }
    return remaining, near, stats, dict(sorted(sizes.items()))


def _full(spark, unique, cfg: DataConfig):
    """(verdicts (id, cluster_id) of every document of ``unique``, stats): kept ones are their own cluster."""
    from phases.data.dedup import near_dedup

    clusters, stats = near_dedup(spark, unique, cfg.near_dedup)  # cached: its texts are read from memory
    return clusters.select("id", "cluster_id"), stats


def _against_index(spark, unique, cfg: DataConfig, where: Path):
    """Verdicts and stats of ``unique`` against the index at ``where``, which is updated (or rebuilt)."""
    from pyspark.sql import functions as F

    from phases.data.dedup import near_dedup, update_index
    from phases.data.dedup.index import check_params, generations

    gens = generations(where)
    why = None
    if gens:
        try:
            check_params(where, cfg.near_dedup)
        except ValueError as err:
            why = str(err)
    if not gens:
        return _full_and_index(spark, unique, cfg, where, "full", "no index yet")
    if why:
        return _full_and_index(spark, unique, cfg, where, "full, index rebuilt", why)

    old = spark.read.parquet(*[str(g / "docs") for g in gens]).select("id", "cluster_id", F.col("text").alias("_old_text"))
    matched = unique.select("id", "text").join(old, "id", "full_outer")
    counts = matched.agg(
        F.count(F.when(F.col("_old_text").isNull(), 1)).alias("new"),
        F.count(F.when(F.col("text").isNull(), 1)).alias("gone"),
        F.count(F.when(F.col("text").isNotNull() & F.col("_old_text").isNotNull() & (F.col("text") != F.col("_old_text")), 1)).alias("changed"),
        F.count(F.when(F.col("text").isNotNull() & F.col("_old_text").isNotNull(), 1)).alias("indexed"),
    ).first()
    if counts["gone"] or counts["changed"]:
        why = f"{counts['changed']} indexed documents changed their text and {counts['gone']} are no longer in the sources (only sources that grow are deduplicated incrementally)"
        return _full_and_index(spark, unique, cfg, where, "full, index rebuilt", why)

    kept_verdicts = unique.select("id").join(old.select("id", "cluster_id"), "id")
    log.info(
        "data: near-dedup of %d new documents against the %d indexed by %d earlier runs (%s)", counts["new"], counts["indexed"], len(gens), where
    )
    stats = {"mode": "incremental", "reason": f"{counts['indexed']} documents indexed by earlier runs", "indexed_docs": counts["indexed"]}
    if not counts["new"]:
        return kept_verdicts, {**stats, "new_docs": 0, "docs": 0, "removed": 0, "clusters": 0, "indexed_generations": len(gens)}
    new = unique.join(old.select("id"), "id", "left_anti")
    clusters, new_stats = near_dedup(spark, new, cfg.near_dedup, index_dir=str(where))
    update_index(spark, str(where), new, clusters, cfg.near_dedup)
    verdicts = kept_verdicts.unionByName(clusters.select("id", "cluster_id"))
    return verdicts, {**new_stats, **stats, "new_docs": counts["new"]}


def _full_and_index(spark, unique, cfg: DataConfig, where: Path, mode: str, why: str):
    """A full pass over ``unique``, whose documents then make up the index at ``where``."""
    if mode != "full":
        log.warning("data: deduplicating every document again and rebuilding the index: %s", why)
    verdicts, stats = _full(spark, unique, cfg)
    _rebuild(spark, where, unique, verdicts, cfg)
    return verdicts, {**stats, "mode": mode, "reason": why, "indexed_docs": 0, "new_docs": stats["docs"]}


def _rebuild(spark, where: Path, unique, verdicts, cfg: DataConfig) -> None:
    """A new index of ``unique`` in place of the one at ``where`` (none there while it is swapped:
    a crash in between leaves no index, and the next run deduplicates everything)."""
    from phases.data.dedup import update_index

    fresh = where.parent / f".{where.name}.rebuild"
    shutil.rmtree(fresh, ignore_errors=True)
    update_index(spark, str(fresh), unique, verdicts, cfg.near_dedup)
    old = where.parent / f".{where.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if where.exists():
        where.rename(old)
    fresh.rename(where)
    shutil.rmtree(old, ignore_errors=True)


def log_cluster_sizes(sizes: dict[int, int], sink: MetricsSink) -> None:
    """A bar chart of the near-duplicate cluster-size distribution, as an artifact."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(sizes)), list(sizes.values()))
    ax.set_xticks(range(len(sizes)), [str(k) for k in sizes])
    ax.set_xlabel("documents in cluster")
    ax.set_ylabel("clusters")
    ax.set_title("Near-duplicate clusters by size")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dedup_cluster_sizes.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        sink.log_artifact(path)
