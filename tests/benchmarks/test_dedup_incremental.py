"""Incremental near-dedup speed: a nightly batch of new documents against a persisted index.

Run: .venv/bin/pytest -m benchmark tests/benchmarks/test_dedup_incremental.py -s
DEDUP_INC_INDEX_DOCS (default 100000) documents are indexed (near_dedup + update_index, untimed), then
DEDUP_INC_NEW_DOCS (default 10000) new ones are deduplicated against the index (timed: the
``near_dedup(..., index_dir=...)`` call and collecting its clusters, DEDUP_INC_REPEATS times (default 3), the best
asserted; ``update_index`` timed separately).
The new documents' clusters must equal a full recompute over index + new documents (new ids sort after
the indexed ones, the case where the documented equality holds).
Writes tests/benchmarks/results/dedup-incremental-<date>.md, then asserts the goal (<= 10 s at 100k + 10k).
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phases.config import NearDedupConfig
from phases.data.dedup import near_dedup, update_index
from tests.benchmarks.dedup_corpus import synthetic_corpus
from tests.benchmarks.test_dedup_quality import load, machine, versions
from tests.benchmarks.test_dedup_speed import signature_rate

INDEX_DOCS = int(os.environ.get("DEDUP_INC_INDEX_DOCS", "100000"))
NEW_DOCS = int(os.environ.get("DEDUP_INC_NEW_DOCS", "10000"))
# Timed incremental calls (the first follows the index build in the same session); the best is asserted,
# as this machine's speed drifts by up to ~30% within minutes.
REPEATS = int(os.environ.get("DEDUP_INC_REPEATS", "3"))
RESULTS = Path(__file__).parent / "results"


@pytest.mark.benchmark
def test_dedup_incremental(tmp_path):
    from phases.data.spark import spark_session

    rows = sorted(synthetic_corpus(INDEX_DOCS + NEW_DOCS, seed=1))  # ids shuffled: near copies span both sets
    # A fixed workload before and after, for the machine's speed at the time (it drifts by up to ~30%).
    sample = [t for _, t in rows[:5000]]
    probe_before = signature_rate(sample, "token")
    old, new = rows[:INDEX_DOCS], rows[INDEX_DOCS:]
    params = NearDedupConfig()  # hashing=token, the default
    spark = spark_session("local[2]")
    try:
        for name, part in (("old", old), ("new", new)):  # read back as Parquet, as the CLI does
            pq.write_table(pa.table({"id": [r[0] for r in part], "text": [r[1] for r in part]}), tmp_path / f"{name}.parquet")
        old_df, new_df = (spark.read.parquet(str(tmp_path / f"{n}.parquet")) for n in ("old", "new"))
        t0 = time.perf_counter()
        old_clusters, _ = near_dedup(spark, old_df, params)
        update_index(spark, tmp_path / "index", old_df, old_clusters, params)
        old_clusters.unpersist()
        build_s = time.perf_counter() - t0

        runs = []  # each call reads the index as it is: repeats measure the same work
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            inc, stats = near_dedup(spark, new_df, params, index_dir=tmp_path / "index")
            got = {r["id"]: (r["cluster_id"], r["kept"]) for r in inc.collect()}
            runs.append(time.perf_counter() - t0)
            if len(runs) < REPEATS:
                inc.unpersist()
        inc_s = min(runs)
        t0 = time.perf_counter()
        update_index(spark, tmp_path / "index", new_df, inc, params)
        upd_s = time.perf_counter() - t0
        inc.unpersist()

        t0 = time.perf_counter()
        full, _ = near_dedup(spark, old_df.unionByName(new_df), params)
        expected = {r["id"]: (r["cluster_id"], r["kept"]) for r in full.collect() if r["id"] >= new[0][0]}
        full_s = time.perf_counter() - t0
        full.unpersist()
    finally:
        spark.stop()
    probe_after = signature_rate(sample, "token")
    equal = got == expected
    removed_vs_old = sum(1 for c, k in got.values() if not k and c < new[0][0])
    lines = [
        f"# Incremental near-dedup speed, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}. {versions()}. At the end: {load()}.",
        f"Corpus: synthetic_corpus({INDEX_DOCS + NEW_DOCS}, seed=1) sorted by id: the first {INDEX_DOCS} indexed, "
        f"the last {NEW_DOCS} new. ngram=5, num_perm=128, tau=0.8, hashing=token, Spark local[2], warm session.",
        f"Machine speed probe (the speed benchmark's signature rate on 5,000 documents, one core): {probe_before:,.0f} docs/s "
        f"before, {probe_after:,.0f} after.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| index build (near_dedup + update_index, {INDEX_DOCS} docs) | {build_s:.1f} s | - |",
        f"| incremental: {NEW_DOCS} new vs the index (near_dedup with index_dir + collect), best of {len(runs)} | {inc_s:.1f} s "
        f"(runs: {', '.join(f'{r:.1f}' for r in runs)} s; "
        f"{stats['candidate_buckets']} candidate buckets, {stats['jaccards_computed']} Jaccards computed, {stats['verified_pairs']} verified, {stats['removed']} removed, "
        f"{removed_vs_old} of them into indexed clusters) | <= 10 s |",
        f"| update_index with the new batch | {upd_s:.1f} s | - |",
        f"| full recompute ({INDEX_DOCS + NEW_DOCS} docs, for comparison) | {full_s:.1f} s | - |",
        f"| new documents' clusters equal the full recompute | {equal} | True |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dedup-incremental-{datetime.date.today().isoformat()}.md").write_text(report)
    assert equal
    if INDEX_DOCS >= 100_000 and NEW_DOCS >= 10_000:  # the goal is stated for this size
        assert inc_s <= 10.0
