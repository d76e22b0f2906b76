"""The standalone near-dedup command as a plain function (``lifecycle dedup``, flows/dedup_command.py).

Reads JSONL or Parquet records with ``id`` and ``text``, writes ``OUTPUT/kept/`` (Parquet, the
records that survive, all their columns) and ``OUTPUT/clusters.parquet`` (id, cluster_id, kept for
every input record). Outputs are written to a temporary sibling directory and renamed into
place, so ``OUTPUT`` either holds a complete result or does not exist.

Bad records never stop the good ones: a JSON line that does not parse, a record without an id or
without a text goes to ``OUTPUT/quarantine/`` (file, reason, the raw line or record as JSON) and is
counted in the stats (``quarantined``, ``quarantined_<reason>``); it is in neither ``kept/`` nor
``clusters.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

from phases.config import NearDedupConfig
from phases.data.dedup.frames import small_ids
from phases.data.dedup.index import update_index
from phases.data.dedup.run import WARM_JOB_GROUP, StageTimer, near_dedup, spread, warm_python_workers
from phases.errors import DataError

CORRUPT = "_corrupt_record"
QUARANTINE_REASONS = ("malformed_json", "missing_id", "missing_text")


def _id_missing():
    """A record without an id: null, empty or blank."""
    from pyspark.sql import functions as F

    return F.col("id").isNull() | (F.trim(F.col("id")) == "")


def _split_bad(records):
    """(good records, quarantine rows: file, reason, raw) of ``records``."""
    from pyspark.sql import functions as F

    corrupt = F.col(CORRUPT).isNotNull() if CORRUPT in records.columns else F.lit(False)
    reason = F.when(corrupt, F.lit("malformed_json")).when(_id_missing(), F.lit("missing_id")).when(F.col("text").isNull(), F.lit("missing_text"))
    tagged = records.withColumn("_reason", reason)
    data_cols = [c for c in records.columns if c not in (CORRUPT, "_file")]
    raw = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*data_cols))) if CORRUPT in records.columns else F.to_json(F.struct(*data_cols))
    bad = tagged.where(F.col("_reason").isNotNull()).select(F.col("_file").alias("file"), F.col("_reason").alias("reason"), raw.alias("raw"))
    good = tagged.where(F.col("_reason").isNull()).drop("_reason", "_file", *([CORRUPT] if CORRUPT in records.columns else []))
    return good, bad


class InputSummary(NamedTuple):
    sizes: list[int]  # rows per non-empty input partition
    missing_id: int  # records without an id (null or blank)
    ids_repeat: bool  # some id occurs more than once (among all records: a repeat may be quarantined)


def _summary(df) -> InputSummary:
    """What the input checks need from the records, in one job that reads only the id column: rows per input partition (for :func:`spread`; an id's rows count
    in its first partition), ids missing, ids repeated."""
    from pyspark.sql import functions as F

    id_missing = _id_missing()
    per_id = df.select("id", F.spark_partition_id().alias("p")).groupBy("id").agg(F.count("*").alias("n"), F.min("p").alias("p"))
    rows = (
        per_id.groupBy("p")
        .agg(
            F.sum("n").alias("rows"),
            F.sum(F.when(id_missing, F.col("n")).otherwise(0)).alias("missing"),
            F.max(F.when(~id_missing, F.col("n"))).alias("most"),
        )
        .collect()
    )
    return InputSummary([r["rows"] for r in rows], sum(r["missing"] for r in rows), any((r["most"] or 0) > 1 for r in rows))


def _placed(df, summary: InputSummary):
    """(records, their cache or None): the input as near-dedup and the outputs will read it.

    Splittable Parquet that already spans the cores is read where it lies, each time it is needed
    (signatures, the texts to verify, ``kept/``): re-reading it costs less than building a cache of
    every text. Parquet whose rows sit unevenly (e.g. one big row group: see :func:`spread`) is spread
    by a shuffle, and cached so that the shuffle runs once. ``summary``: the input's :func:`_summary`.
    """
    spread_df = spread(df, sizes=summary.sizes)
    if spread_df is not df:
        cached = spread_df.persist()
        return cached, cached
    return df, None


def _bad_counts(records, summary: InputSummary) -> dict[str, int]:
    """Quarantine counts per reason, one filter each: Parquet statistics skip the row groups that
    cannot match (no corrupt line, no null text), so a clean text column is never read."""
    from pyspark.sql import functions as F

    id_missing = _id_missing()
    parsed = F.col(CORRUPT).isNull() if CORRUPT in records.columns else F.lit(True)
    malformed = records.where(~parsed).count() if CORRUPT in records.columns else 0
    counts = {
        "malformed_json": malformed,
        "missing_id": records.where(parsed & id_missing).count() if malformed else summary.missing_id,
        "missing_text": records.where(parsed & F.col("text").isNull() & ~id_missing).count(),
    }
    return {k: v for k, v in counts.items() if v}


def _read(spark, inputs: list[str], staging: Path):
    """The input records with their ``_file``, as Parquet. JSONL is parsed once into Parquet under
    ``staging`` (its schema inferred by Spark, bad lines in a corrupt-record column): every later read
    (checks, signatures, the texts to verify, ``kept/``) then decodes only the columns it needs,
    where it lies, instead of parsing JSON again or caching every record in memory."""
    from pyspark.sql import functions as F

    paths = [os.path.abspath(p) for p in inputs]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DataError(f"dedup inputs not found: {missing}")
    kinds = {"parquet" if p.endswith(".parquet") or (os.path.isdir(p) and any(Path(p).glob("*.parquet"))) else "json" for p in paths}
    if len(kinds) != 1:
        raise DataError(f"dedup inputs mix JSONL and Parquet ({paths}); pass one kind per run")
    json_input = kinds == {"json"}
    df = spark.read.json(paths, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT) if json_input else spark.read.parquet(*paths)
    for col in ("id", "text"):
        if col not in df.columns:
            raise DataError(f"dedup inputs have no {col!r} column (columns: {df.columns}); each record needs id and text")
    df = df.withColumn("_file", F.col("_metadata.file_path"))
    if not json_input:
        return df
    df.write.parquet(str(staging))
    return spark.read.parquet(str(staging))


def run_dedup(
    inputs: list[str],
    output: str,
    params: NearDedupConfig = NearDedupConfig(),
    spark_master: str = "local[*]",
    spark=None,
    index_dir: str | None = None,
) -> dict[str, Any]:
    """Near-deduplicate ``inputs`` into ``output`` (see the module docstring); returns the stats.

    ``spark``: an existing session to use (left running); by default one is started and stopped.
    ``index_dir``: incremental mode for nightly batches: deduplicate against the documents
    indexed there by earlier runs (and against each other), then add this batch to the index.
    """
    from pyspark.sql import functions as F

    from phases.data.spark import spark_session

    out = Path(output).absolute()
    if out.exists():
        raise DataError(f"dedup output {out} already exists; remove it or choose another directory")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    t = StageTimer("dedup")
    own = spark is None
    spark = spark_session(spark_master) if own else spark
    warming = warm_python_workers(spark) if own else None
    t.done("spark_start")
    try:
        df = _read(spark, inputs, tmp / "_input").withColumn("id", F.col("id").cast("string"))
        summary = _summary(df)
        loaded, cache = _placed(df, summary)
        good, bad = _split_bad(loaded)
        bad_counts = _bad_counts(loaded, summary)
        if bad_counts:  # the good records get their own cache; the input's is dropped
            bad.write.parquet(str(tmp / "quarantine"))
            records = good.persist()
            if records.count() == 0:  # (this count also fills the cache before the input's goes)
                raise DataError(f"dedup inputs {inputs} hold no valid record (quarantined: {bad_counts}); each record needs id and text")
            if cache is not None:
                cache.unpersist()
            cache = records
        else:  # all good: the input as it is (its cache, when it has one), no filter to evaluate
            records = loaded.drop("_file", CORRUPT)
        # Reused ids among the valid records (only when the summary saw an id twice).
        dup_ids = records.groupBy("id").count().where("count > 1").limit(5).collect() if summary.ids_repeat else []
        if dup_ids:
            raise DataError(f"dedup inputs reuse ids (e.g. {[r['id'] for r in dup_ids]}); ids must be unique")
        t.done("input_check")
        docs = records.select("id", "text")
        clusters, stats = near_dedup(spark, records, params, index_dir=index_dir, placed=True)
        t.done("near_dedup")
        clusters.coalesce(1).sortWithinPartitions("id").write.parquet(str(tmp / "_clusters"))
        parts = list((tmp / "_clusters").glob("part-*.parquet"))
        parts[0].rename(tmp / "clusters.parquet")
        shutil.rmtree(tmp / "_clusters")
        # Anti-join with the (few, broadcast) removed ids: the texts are written without a shuffle, in
        # the input's order (sorting them by id first cost ~0.3 s per 100k documents and bought nothing).
        removed = clusters.where(~F.col("kept")).select("id")
        kept = records.join(small_ids(removed), "id", "left_anti")
        kept.write.parquet(str(tmp / "kept"))
        for marker in (tmp / "kept").glob("_*"):
            marker.unlink()
        stats["kept"] = stats["docs"] - stats["removed"]
        stats["quarantined"] = sum(bad_counts.values())
        stats.update({f"quarantined_{r}": bad_counts.get(r, 0) for r in QUARANTINE_REASONS})
        t.done("outputs")
        if index_dir:
            stats["index_generation"] = update_index(spark, index_dir, docs, clusters, params)
            t.done("index_update")
        stats.update(t.stats())
        stats["seconds"] = round(time.perf_counter() - started, 2)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
        clusters.unpersist()
        if cache is not None:
            cache.unpersist()
        shutil.rmtree(tmp / "_input", ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if own:
            spark.sparkContext.cancelJobGroup(WARM_JOB_GROUP)  # a run that failed early does not wait for it
            warming.join(60)
            spark.stop()
    tmp.rename(out)
    return stats
