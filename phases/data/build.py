"""Phase 1 on Spark: read the sources (:mod:`phases.data.sources`), normalize, filter, drop exact duplicates, mix, split.

Per-document logic lives in :mod:`phases.data.documents` (with :mod:`phases.data.records`,
:mod:`phases.data.normalize`, ``quality`` and ``pii``) and runs batch-wise through ``mapInPandas``
(Arrow), never as a per-row Python UDF. Every record that does not reach the output is written
to ``rejected/`` with its source, file (``location``), ``line``, stage, reason and detail.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from phases.config import DataConfig
from phases.data.documents import PII_KINDS, PROCESSED_SCHEMA, process_batches, unread_files
from phases.data.near import indexed_ids, log_cluster_sizes, remove_near_duplicates
from phases.data.sources import read_source
from phases.data.spark import spark_session
from phases.errors import DataError
from phases.metrics import MetricsSink, write_table
from phases.storage import CONTENT_FINGERPRINT

log = logging.getLogger("lifecycle.data")

OUTPUT_COLUMNS = ("id", "source", "text")
REJECTED_COLUMNS = ("id", "source", "location", "line", "stage", "reason", "detail", "chars")


def mixture_targets(available: dict[str, int], weights: dict[str, float], max_epochs: float = 1.0) -> dict[str, int]:
    """Amount (documents or bytes) to take per source so that shares match the weights exactly.

    The total is the largest for which no source is repeated more than ``max_epochs`` times,
    and never more than the sources hold together: with ``max_epochs=1`` abundant sources
    are down-sampled to the scarcest one's share; above 1 the scarce ones are up-sampled
    (repeated) instead, so less of the abundant ones is thrown away.
    """
    total_w = sum(weights[s] for s in available)
    shares = {s: weights[s] / total_w for s in available}
    total = min(min(max_epochs * available[s] / shares[s] for s in available), sum(available.values()))
    return {s: int(round(shares[s] * total)) for s in available}


def mix(unique, cfg: DataConfig):
    """Sample each source to its target, repeating scarce ones (ids of copies end in ``#k``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    unit = F.lit(1) if cfg.mix_by == "documents" else F.col("chars")
    available = {r["source"]: int(r["n"]) for r in unique.groupBy("source").agg(F.sum(unit).alias("n")).collect()}
    for s in cfg.sources:
        if not available.get(s.name):
            raise DataError(f"source {s.name!r} has no document left after filtering and dedup; relax the filters or check its content")
    targets = mixture_targets(available, {s.name: s.weight for s in cfg.sources}, cfg.max_epochs)
    reps = F.create_map(*[x for s, n in targets.items() for x in (F.lit(s), F.lit(max(1, -(-n // available[s]))))])
    target = F.create_map(*[x for s, n in targets.items() for x in (F.lit(s), F.lit(n))])
    copies = unique.withColumn("_copy", F.explode(F.sequence(F.lit(0), reps[F.col("source")] - 1)))
    # Whole passes first (copy 0 of every document before any copy 1), a seeded order within a pass.
    order = Window.partitionBy("source").orderBy("_copy", F.xxhash64("id", F.lit(cfg.seed)), "id").rowsBetween(Window.unboundedPreceding, 0)
    copies = copies.withColumn("_before", F.sum(unit).over(order) - unit)
    mixed = copies.where(F.col("_before") < target[F.col("source")])
    mixed = (
        mixed.withColumn("base_id", F.col("id"))
        .withColumn("id", F.when(F.col("_copy") == 0, F.col("id")).otherwise(F.concat("id", F.lit("#"), F.col("_copy").cast("string"))))
        .drop("_before")
    )
    return mixed, available, targets


def _publish_parquet(df, out: Path, name: str, shards: int) -> list[str]:
    """Write ``df`` as ``out/name/part-0000N.parquet`` (deterministic names, no Spark markers)."""
    tmp = out / f"_spark_{name}"
    # Hash partitioning on the id: a document's shard is the same at any partition count and on
    # any master (range partitioning samples its boundaries, which vary with the input layout).
    df.repartition(shards, "id").sortWithinPartitions("id").write.mode("overwrite").parquet(str(tmp))
    final = out / name
    final.mkdir()
    parts = sorted(tmp.glob("part-*.parquet"))
    names = []
    for i, p in enumerate(parts):
        target = final / f"part-{i:05d}.parquet"
        p.rename(target)
        names.append(target.name)
    shutil.rmtree(tmp)
    return names


def build(cfg: DataConfig, inputs: dict, out: Path, sink: MetricsSink) -> dict[str, Any]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = spark_session(cfg.spark_master, cfg.spark_driver_memory)
    try:
        log.info("data: reading %d sources with Spark (%s)", len(cfg.sources), cfg.spark_master)
        reads = [read_source(spark, s) for s in cfg.sources]
        raw = reads[0].frame
        for r in reads[1:]:
            raw = raw.unionByName(r.frame)
        docs = raw.mapInPandas(process_batches(cfg), PROCESSED_SCHEMA).persist()

        # One pass gives the counts and the files that yielded records; a listed file without any is
        # recorded (empty, or gone since the listing), so that no input disappears without a row.
        per_file = docs.groupBy("source", "location").count().collect()
        listed = {s.name: r.files for s, r in zip(cfg.sources, reads) if r.files is not None}
        unread = unread_files(cfg, listed, {(r["source"], r["location"]) for r in per_file})
        if unread:
            docs = docs.unionByName(spark.createDataFrame(unread, PROCESSED_SCHEMA))
        read_counts: dict[str, int] = {}
        for r in per_file:
            read_counts[r["source"]] = read_counts.get(r["source"], 0) + r["count"]
        for row in unread:
            read_counts[row[1]] = read_counts.get(row[1], 0) + 1
        for s in cfg.sources:
            if not read_counts.get(s.name):
                raise DataError(f"source {s.name!r} yielded no records from {s.path or s.kind}; check the path or remove the source")
        log.info("data: read %s documents", read_counts)

        good = docs.where(F.col("stage").isNull())
        near_index = indexed_ids(spark, cfg)
        # One text per id: the first record in file order (file path, then line) keeps it, the
        # others are quarantined with the place of the one kept.
        by_id = Window.partitionBy("id").orderBy("location", "line")
        kept_at = F.first(F.concat_ws(":", "location", F.col("line").cast("string"))).over(by_id)
        good = good.withColumn("_n", F.row_number().over(by_id)).withColumn("_kept_at", kept_at)
        dup_ids = (
            good.where("_n > 1")
            .withColumn("stage", F.lit("quarantine"))
            .withColumn("reason", F.lit("duplicate_id"))
            .withColumn("detail", F.concat(F.lit("kept "), F.col("_kept_at")))
        )
        good = good.where("_n = 1").drop("_kept_at")
        # Exact dedup on the normalized text: the smallest id of each text is kept, a document the
        # dedup index holds before any other (its verdict stands; a new copy of it goes).
        first = [F.col("_new")] if near_index is not None else []
        if first:
            good = good.join(near_index.select("id", F.lit(False).alias("_new")), "id", "left").fillna({"_new": True})
        by_sha = Window.partitionBy("sha").orderBy(*first, "id")
        good = good.withColumn("_r", F.row_number().over(by_sha)).withColumn("_kept_id", F.first("id").over(by_sha))
        exact = good.where("_r > 1").withColumn("stage", F.lit("dedup")).withColumn("reason", F.lit("exact_duplicate"))
        unique = good.where("_r = 1").drop("_r", "_n", "_kept_id", *(["_new"] if first else [])).persist()
        near, near_stats, cluster_sizes = None, {}, {}
        if cfg.near_dedup.enabled:
            unique, near, near_stats, cluster_sizes = remove_near_duplicates(spark, unique, cfg)

        mixed, available, targets = mix(unique, cfg)
        log.info("data: unique %s %s; mixture takes %s", cfg.mix_by, available, targets)
        # Split on the original id, so repeated copies stay on the side of their original.
        is_val = F.pmod(F.xxhash64("base_id"), F.lit(10_000)) < F.lit(int(cfg.val_fraction * 10_000))

        train_files = _publish_parquet(mixed.where(~is_val).select(*OUTPUT_COLUMNS), out, "train", cfg.shards)
        val_files = _publish_parquet(mixed.where(is_val).select(*OUTPUT_COLUMNS), out, "validation", 1)
        rejected = (
            docs.where(F.col("stage").isNotNull())
            .select(*REJECTED_COLUMNS)
            .unionByName(dup_ids.select(*REJECTED_COLUMNS))
            .unionByName(exact.withColumn("detail", F.col("_kept_id")).select(*REJECTED_COLUMNS))
        )
        if near is not None:
            rejected = rejected.unionByName(near)
        _publish_parquet(rejected, out, "rejected", 1)

        split_counts = {
            (r["source"], r["split"]): r["count"]
            for r in spark.read.parquet(str(out / "train"), str(out / "validation"))
            .withColumn("split", F.when(F.col("_metadata.file_path").contains("/validation/"), "validation").otherwise("train"))
            .groupBy("source", "split")
            .count()
            .collect()
        }
        reasons = [
            r.asDict()
            for r in spark.read.parquet(str(out / "rejected"))
            .groupBy("source", "stage", "reason")
            .count()
            .orderBy("source", "stage", "reason")
            .collect()
        ]
        per_source = unique.groupBy("source").agg(F.count("*").alias("_kept"), *[F.sum(f"pii_{k}").alias(k) for k in PII_KINDS]).collect()
        pii = {r["source"]: {k: int(r[k] or 0) for k in PII_KINDS} for r in per_source}
        kept = {r["source"]: int(r["_kept"]) for r in per_source}
        copies = {r["source"]: r["count"] for r in mixed.where("_copy > 0").groupBy("source").count().collect()}
    finally:
        spark.stop()

    summary = _summarize(cfg, sink, read_counts, kept, available, targets, split_counts, reasons, pii, copies, train_files, val_files)
    summary[CONTENT_FINGERPRINT] = content_digest(out)
    if cfg.near_dedup.enabled:
        summary["near_duplicates"] = sum(r["count"] for r in reasons if r["reason"] == "near_duplicate")
        summary["near_dedup"] = {**near_stats, "cluster_sizes": cluster_sizes}
        if near_stats.get("mode"):
            log.info(
                "data: near-dedup %s (%s): %d new documents, %d indexed",
                near_stats["mode"],
                near_stats["reason"],
                near_stats["new_docs"],
                near_stats["indexed_docs"],
            )
        sink.log_metrics(
            {
                "near_duplicates": summary["near_duplicates"],
                **{f"near_dedup/{k}": v for k, v in near_stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            }
        )
        log_cluster_sizes(cluster_sizes, sink)
    return summary


def content_digest(out: Path) -> str:
    """sha256 over every split's rows in id order: the data, independent of file layout and bytes."""
    import hashlib

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for split in ("train", "validation", "rejected"):
        table = pq.read_table(out / split)
        # Rejected rows may share an id (repeats of one id): their place orders them.
        keys = [k for k in ("id", "location", "line") if k in table.column_names]
        table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))
        h.update(f"{split}:{table.num_rows}:{','.join(table.column_names)}\n".encode())
        for batch in table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                h.update(repr(sorted(row.items())).encode())
    return h.hexdigest()


def _summarize(cfg, sink, read_counts, kept, available, targets, split_counts, reasons, pii, copies, train_files, val_files) -> dict[str, Any]:
    selected = sum(targets.values())
    table = []
    for s in cfg.sources:
        train = split_counts.get((s.name, "train"), 0)
        val = split_counts.get((s.name, "validation"), 0)
        table.append(
            {
                "source": s.name,
                "kind": s.kind,
                "license": s.license,
                "weight": s.weight,
                "unit": cfg.mix_by,
                "read": read_counts.get(s.name, 0),
                # read = kept + quarantined + filtered + deduplicated (rejected/ holds each one not kept)
                "kept": kept.get(s.name, 0),
                "quarantined": sum(r["count"] for r in reasons if r["source"] == s.name and r["stage"] == "quarantine"),
                "filtered": sum(r["count"] for r in reasons if r["source"] == s.name and r["stage"] == "filter"),
                "deduplicated": sum(r["count"] for r in reasons if r["source"] == s.name and r["stage"] == "dedup"),
                "available": available.get(s.name, 0),
                "selected": targets.get(s.name, 0),
                "share": round(targets.get(s.name, 0) / selected, 4) if selected else 0.0,
                "epochs": round(targets.get(s.name, 0) / available[s.name], 4) if available.get(s.name) else 0.0,
                "repeated_docs": copies.get(s.name, 0),
                "train": train,
                "validation": val,
                **{f"pii_{k}": pii.get(s.name, {}).get(k, 0) for k in PII_KINDS},
            }
        )
    by_source_unique = {s: read_counts[s] - sum(r["count"] for r in reasons if r["source"] == s) for s in read_counts}
    by = lambda stage, reason=None: sum(r["count"] for r in reasons if r["stage"] == stage and (reason is None or r["reason"] == reason))  # noqa: E731
    summary = {
        "read_docs": sum(read_counts.values()),
        "quarantined": by("quarantine"),
        "filtered": by("filter"),
        "exact_duplicates": by("dedup", "exact_duplicate"),
        "unique_docs": sum(by_source_unique.values()),
        "pii_redacted": sum(v for p in pii.values() for v in p.values()),
        "train_docs": sum(v for (_, split), v in split_counts.items() if split == "train"),
        "validation_docs": sum(v for (_, split), v in split_counts.items() if split == "validation"),
        "sources": table,
        "rejected_by_reason": reasons,
        "files": {"train": train_files, "validation": val_files},
    }
    sink.log_metrics(
        {
            k: summary[k]
            for k in ("read_docs", "quarantined", "filtered", "exact_duplicates", "unique_docs", "pii_redacted", "train_docs", "validation_docs")
        }
    )
    for row in table:
        sink.log_metrics(
            {
                f"share/{row['source']}": row["share"],
                f"epochs/{row['source']}": row["epochs"],
                **{f"pii_{k}/{row['source']}": row[f"pii_{k}"] for k in PII_KINDS},
            }
        )
    write_table(table, "source_shares.json", sink)
    write_table(reasons or [{"source": None, "stage": None, "reason": None, "count": 0}], "rejected_summary.json", sink)
    log.info(
        "data: %d train / %d validation documents; %d quarantined, %d filtered, %d exact duplicates",
        summary["train_docs"],
        summary["validation_docs"],
        summary["quarantined"],
        summary["filtered"],
        summary["exact_duplicates"],
    )
    return summary
