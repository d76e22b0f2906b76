"""Near-dedup on real Spark (local[2]) over small planted corpora."""

import json
import random

import pyarrow.parquet as pq
import pytest

from phases.config import NearDedupConfig
from phases.data.dedup import command, components, near_dedup, update_index, verify
from phases.data.dedup import index as dedup_index
from phases.data.dedup.command import run_dedup
from phases.data.dedup.components import connected_components, union_find
from phases.data.dedup.shingles import jaccard, shingles
from phases.data.dedup.verify import link_buckets

WORDS = [f"w{i}" for i in range(5000)]


def _doc(rng, n=120):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(rng, text, k):
    tk = text.split()
    for _ in range(k):
        tk[rng.randrange(len(tk))] = rng.choice(WORDS)
    return " ".join(tk)


@pytest.fixture(scope="module")
def spark():
    from phases.data.spark import spark_session

    s = spark_session("local[2]")
    s.conf.set("spark.sql.shuffle.partitions", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def corpus():
    """20 unique docs; d03, d07 have near copies (2 words changed, J ~ 0.85); d05 an exact copy; blanks."""
    rng = random.Random(5)
    rows = {f"d{i:02d}": _doc(rng) for i in range(20)}
    rows["n03"] = _edit(rng, rows["d03"], 2)
    rows["n07a"] = _edit(rng, rows["d07"], 2)
    rows["c07b"] = _edit(rng, rows["d07"], 1)  # sorts before d07: the smallest id is kept, not the first seen
    rows["x05"] = rows["d05"]
    rows["blank1"], rows["blank2"] = "  ", "\n"
    assert jaccard(shingles(rows["d03"], 5), shingles(rows["n03"], 5)) >= 0.8
    return rows


def test_candidate_buckets_are_distinct_member_sets(spark):
    from phases.data.dedup.candidates import bucket_pairs, candidate_buckets

    rows = (
        [("d", 0, 7), ("c", 0, 7), ("a", 0, 7), ("b", 0, 7)]  # one bucket of 4
        + [("z", 0, 8)]  # a singleton: no bucket
        + [("a", 1, 7), ("b", 1, 7), ("a", 2, 5), ("b", 2, 5)]  # {a, b} in two bands: one row
        + [("x", 2, -3), ("y", 2, -3)]
    )
    bands = spark.createDataFrame(rows, "id string, band int, key long")
    buckets = candidate_buckets(bands)
    assert sorted(r["ids"] for r in buckets.collect()) == [["a", "b"], ["a", "b", "c", "d"], ["x", "y"]]
    assert sorted(tuple(r) for r in bucket_pairs(buckets).collect()) == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
        ("c", "d"),
        ("x", "y"),
    ]
    fresh = bands.withColumn("fresh", bands.id.isin("x", "c"))  # against an index: buckets with a fresh member
    assert sorted(r["ids"] for r in candidate_buckets(fresh).collect()) == [["a", "b", "c", "d"], ["x", "y"]]


def _all_pairs_labels(buckets, sim, threshold, cluster=lambda i: None):
    """The reference: every pair of every bucket verified (pairs of two indexed documents excepted)."""
    node = lambda i: "0" + cluster(i) if cluster(i) is not None else "1" + i  # noqa: E731
    edges = [
        (node(a), node(b))
        for ids in buckets
        for k, a in enumerate(ids)
        for b in ids[k + 1 :]
        if (cluster(a) is None or cluster(b) is None) and sim(a, b) >= threshold
    ]
    nodes = [(node(i), node(i)) for ids in buckets for i in ids]
    return union_find(edges + nodes)


@pytest.mark.parametrize("seed", range(30))
def test_link_buckets_gives_the_components_of_verifying_every_pair(seed):
    """Random buckets and similarities (with and without indexed documents): the verified edges give
    the same components as verifying all pairs, each edge is verified, no pair is computed twice."""
    rng = random.Random(seed)
    docs = [f"d{i:02d}" for i in range(rng.randint(3, 25))]
    buckets = [sorted(rng.sample(docs, rng.randint(2, min(8, len(docs))))) for _ in range(rng.randint(1, 8))]
    score = {(a, b): rng.choice([0.5, 0.79, 0.8, 0.95]) for a in docs for b in docs if a < b}
    calls = []

    def sims(x, ys):
        calls.extend(tuple(sorted((x, y))) for y in ys)
        return [score[tuple(sorted((x, y)))] for y in ys]

    sim = lambda a, b: score[(a, b)]  # noqa: E731

    stored = {d: rng.choice(["d00", "d01", None]) for d in docs} if seed % 2 else {}
    cluster = lambda i: stored.get(i)  # noqa: E731
    edges, computed = link_buckets(buckets, sims, 0.8, cluster)
    assert computed == len(calls) == len(set(calls)) and all(j >= 0.8 and score[(a, b)] == j for a, b, j in edges)
    node = lambda i: "0" + cluster(i) if cluster(i) is not None else "1" + i  # noqa: E731
    got = union_find([(node(a), node(b)) for a, b, _ in edges] + [(node(i), node(i)) for ids in buckets for i in ids])
    assert got == _all_pairs_labels(buckets, sim, 0.8, cluster)


@pytest.mark.parametrize("seed", range(6))
def test_a_big_group_verified_at_once_gives_the_components_of_verifying_every_pair(seed):
    """candidate_edges (bitsets, every Jaccard of a group at once) on real texts: a cluster of 40 edited
    copies, half of them below the threshold from each other, in random overlapping buckets (with and
    without indexed documents): the components of verifying every candidate pair, exact Jaccards."""
    import numpy as np
    import pyarrow as pa

    from phases.data.dedup.shingles import GroupBits, ShingleSets

    rng = random.Random(seed)
    base = _doc(rng, 200)
    texts = {f"c{i:02d}": _edit(rng, base, rng.choice([2, 4, 9, 14])) for i in range(40)}
    ids = sorted(texts)
    buckets = [sorted(rng.sample(ids, rng.randint(2, 25))) for _ in range(12)]
    members = sorted({i for b in buckets for i in b})
    sets = ShingleSets(pa.array([texts[i] for i in members]), 5)
    bits = GroupBits.build(sets, np.arange(len(members)), 1 << 26)
    stored = {i: rng.choice(["s0", "s1", None]) for i in members} if seed % 2 else {}
    cluster = lambda i: stored.get(i)  # noqa: E731
    edges, computed = verify.candidate_edges(bits, members, buckets, [cluster(i) for i in members], 0.8)
    exact = lambda a, b: jaccard(shingles(texts[a], 5), shingles(texts[b], 5))  # noqa: E731
    assert all(j >= 0.8 and j == pytest.approx(exact(a, b), abs=1e-12) for a, b, j in edges)
    pairs = {
        tuple(p) for b in buckets for k, x in enumerate(b) for p in [(x, y) for y in b[k + 1 :]] if cluster(p[0]) is None or cluster(p[1]) is None
    }
    assert computed == len(pairs)
    node = lambda i: "0" + cluster(i) if cluster(i) is not None else "1" + i  # noqa: E731
    got = union_find([(node(a), node(b)) for a, b, _ in edges] + [(node(i), node(i)) for b in buckets for i in b])
    assert got == _all_pairs_labels(buckets, exact, 0.8, cluster)
    assert 0 < len(edges) < len(members) - 1 or seed % 2  # some copies are duplicates, some are not


def test_link_buckets_cost_follows_the_documents_not_the_pairs():
    """A bucket of 300 near copies costs about 300 Jaccards, not 44,850; a copy that fails against the
    representative (the member in most buckets) is tried against the others and joins through one of them."""
    ids = [f"c{i:03d}" for i in range(300)]
    sims = lambda x, ys: [0.5 if {x, y} == {"c010", "c007"} else 0.9 for y in ys]  # noqa: E731
    edges, computed = link_buckets([ids, ids[10:50]], sims, 0.8)
    assert len(edges) == 299 and computed <= 299 + 4
    assert len(union_find((a, b) for a, b, _ in edges)) == 300 and len(set(union_find((a, b) for a, b, _ in edges).values())) == 1


def _clusters(spark, rows, params=NearDedupConfig(), partitions=2):
    df = spark.createDataFrame(sorted(rows.items()), "id string, text string").repartition(partitions)
    clusters, stats = near_dedup(spark, df, params)
    out = {r["id"]: (r["cluster_id"], r["kept"]) for r in clusters.collect()}
    clusters.unpersist()
    return out, stats


def test_planted_near_duplicates_are_found(spark, corpus):
    out, stats = _clusters(spark, corpus)
    removed = {i: c for i, (c, kept) in out.items() if not kept}
    assert removed == {"n03": "d03", "n07a": "c07b", "d07": "c07b", "x05": "d05"}
    assert out["c07b"] == ("c07b", True) and out["blank1"] == ("blank1", True) and out["blank2"] == ("blank2", True)
    assert set(out) == set(corpus) and stats["removed"] == 4 and stats["exact_duplicates"] == 1


def test_verification_breaks_a_false_candidate_chain(spark):
    rng = random.Random(11)
    a = _doc(rng, 200)
    b = _edit(rng, a, 2)  # J(a, b) ~ 0.9: a true pair
    c = _edit(rng, b, 25)  # J(b, c) ~ 0.4: shares many min-hashes with b, not a duplicate
    assert jaccard(shingles(b, 5), shingles(c, 5)) < 0.6
    # One row per band makes b and c collide in some band almost surely: a false candidate.
    loose = NearDedupConfig(bands=32, rows=1)
    out, stats = _clusters(spark, {"a": a, "b": b, "c": c}, loose)
    assert stats["jaccards_computed"] == 3 and stats["verified_pairs"] == 1
    assert out == {"a": ("a", True), "b": ("a", False), "c": ("c", True)}


def test_same_clusters_across_partitions_and_runs(spark, corpus):
    first, _ = _clusters(spark, corpus, partitions=1)
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        again, _ = _clusters(spark, corpus, partitions=4)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert first == again
    assert sum(not k for _, k in first.values()) == 4


def test_connected_components_of_a_long_chain(spark):
    chain = [(f"n{i:02d}", f"n{i + 1:02d}") for i in range(0, 24)]  # one path of 25 nodes
    edges = spark.createDataFrame(chain[::-1] + [("x", "y"), ("z", "y")], "a string, b string")
    labels = dict(connected_components(edges).collect())  # large-star / small-star on Spark
    assert union_find(chain[::-1] + [("x", "y"), ("z", "y")]) == labels
    assert {k: v for k, v in labels.items() if k.startswith("n")} == {f"n{i:02d}": "n00" for i in range(25)}
    assert labels["x"] == labels["y"] == labels["z"] == "x"


@pytest.mark.parametrize("driver_edges", [None, 0])  # the graph labelled on the driver (default), or on Spark
def test_incremental_equals_full_recompute_and_old_stays_kept(spark, corpus, tmp_path, monkeypatch, driver_edges):
    if driver_edges is not None:
        monkeypatch.setattr(components, "DRIVER_COMPONENTS_EDGES", driver_edges)
    rng = random.Random(3)
    old = {k: v for k, v in corpus.items() if k.startswith(("d", "b"))}
    new = {"p01": _edit(rng, corpus["d03"], 1), "p02": _doc(rng), "p03": corpus["d05"], "p04": _edit(rng, corpus["d11"], 2)}
    new["p05"] = new["p02"]
    index = tmp_path / "index"
    params = NearDedupConfig()
    old_df = spark.createDataFrame(sorted(old.items()), "id string, text string")
    old_clusters, _ = near_dedup(spark, old_df, params)
    update_index(spark, index, old_df, old_clusters, params)
    new_df = spark.createDataFrame(sorted(new.items()), "id string, text string")
    inc, stats = near_dedup(spark, new_df, params, index_dir=index)
    got = {r["id"]: (r["cluster_id"], r["kept"]) for r in inc.collect()}
    full, _ = _clusters(spark, {**old, **new})
    assert got == {k: full[k] for k in new}
    assert got["p01"] == ("d03", False) and got["p02"] == ("p02", True) and got["p05"] == ("p02", False)
    assert stats["indexed_generations"] == 1

    # A second night: a new id that sorts before the old one still loses to the indexed document.
    update_index(spark, index, new_df, inc, params)
    night2 = spark.createDataFrame([("a00", _edit(rng, corpus["d03"], 1)), ("a01", new["p02"])], "id string, text string")
    got2 = {r["id"]: (r["cluster_id"], r["kept"]) for r in near_dedup(spark, night2, params, index_dir=index)[0].collect()}
    assert got2 == {"a00": ("d03", False), "a01": ("p02", False)}
    with pytest.raises(ValueError, match="same parameters"):
        near_dedup(spark, night2, NearDedupConfig(ngram=3), index_dir=index)
    # An index whose signatures came from another version of the shingle hash is refused, not matched.
    meta = json.loads((index / "params.json").read_text())
    assert meta.pop("signature_version") == dedup_index.SIGNATURE_VERSIONS[params.hashing]
    (index / "params.json").write_text(json.dumps({**meta, "signature_version": 0}))
    with pytest.raises(ValueError, match="rebuild the index"):
        near_dedup(spark, night2, params, index_dir=index)
    with pytest.raises(ValueError, match="rebuild the index"):  # written before versions were kept: version 1, not token's
        (index / "params.json").write_text(json.dumps(meta))
        near_dedup(spark, night2, params, index_dir=index)
    assert dedup_index.SIGNATURE_VERSIONS["token"] == 2 and params.hashing == "token"
    # ... and an index of the other hash is refused by its parameters, naming them.
    (index / "params.json").write_text(json.dumps({**meta, "hashing": "sha1", "signature_version": 1}))
    with pytest.raises(ValueError, match='"hashing": "sha1"'):
        near_dedup(spark, night2, params, index_dir=index)
    (index / "params.json").write_text(json.dumps({**meta, "signature_version": 2}))
    near_dedup(spark, night2, params, index_dir=index)[0].unpersist()
    reused = spark.createDataFrame([("d03", "a new text under an indexed id")], "id string, text string")
    with pytest.raises(ValueError, match="reuse ids already in the index"):
        near_dedup(spark, reused, params, index_dir=index)


@pytest.mark.parametrize("driver_edges", [None, 0])
def test_incremental_new_document_bridging_two_indexed_clusters(spark, tmp_path, monkeypatch, driver_edges):
    """x and y (Jaccard 0.79) are two indexed clusters; the new z (0.89 to both) joins them under the smaller
    id, and the bridge is counted (the indexed documents keep their stored ids)."""
    if driver_edges is not None:
        monkeypatch.setattr(components, "DRIVER_COMPONENTS_EDGES", driver_edges)
    old = {"x1": " ".join(WORDS[0:200]), "y1": " ".join(WORDS[23:223])}
    assert jaccard(shingles(old["x1"], 5), shingles(old["y1"], 5)) < 0.8
    params = NearDedupConfig()
    old_df = spark.createDataFrame(sorted(old.items()), "id string, text string")
    old_clusters, old_stats = near_dedup(spark, old_df, params)
    assert old_stats["removed"] == 0
    update_index(spark, tmp_path / "index", old_df, old_clusters, params)
    new_df = spark.createDataFrame([("z1", " ".join(WORDS[11:211]))], "id string, text string")
    inc, stats = near_dedup(spark, new_df, params, index_dir=tmp_path / "index")
    assert {r["id"]: (r["cluster_id"], r["kept"]) for r in inc.collect()} == {"z1": ("x1", False)}
    assert stats["bridged_clusters"] == 1 and stats["verified_pairs"] == 2


def test_run_dedup_writes_outputs(spark, corpus, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": v, "meta": len(v)}) + "\n" for k, v in corpus.items()))
    stats = run_dedup([str(src)], str(tmp_path / "out"), spark_master="local[2]", spark=spark)
    clusters = pq.read_table(tmp_path / "out" / "clusters.parquet").to_pylist()
    kept = pq.read_table(tmp_path / "out" / "kept").to_pylist()
    assert len(clusters) == len(corpus) and {r["id"] for r in clusters if not r["kept"]} == {"n03", "n07a", "d07", "x05"}
    assert {r["id"] for r in kept} == set(corpus) - {"n03", "n07a", "d07", "x05"} and all("meta" in r for r in kept)
    assert stats["removed"] == 4 and json.loads((tmp_path / "out" / "stats.json").read_text())["kept"] == len(kept)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    # Each stage's seconds, for the user who wonders where the time went.
    stages = {k for k in stats if k.startswith("seconds_")}
    assert {"seconds_input_check", "seconds_signatures", "seconds_candidates", "seconds_verification", "seconds_outputs"} <= stages
    assert all(stats[k] >= 0 for k in stages)
    with pytest.raises(Exception, match="already exists"):
        run_dedup([str(src)], str(tmp_path / "out"), spark=spark)


def test_run_dedup_quarantines_bad_records_and_keeps_the_good(spark, tmp_path):
    src = tmp_path / "in.jsonl"
    good = {"a": "the same words in the same order here", "b": "the same words in the same order here", "d": "something else entirely"}
    lines = [json.dumps({"id": k, "text": v}) for k, v in good.items()] + ['{"id": "x", "text": "cut off', '{"id": "c"}', '{"text": "no id at all"}']
    src.write_text("\n".join(lines) + "\n")
    stats = run_dedup([str(src)], str(tmp_path / "out"), spark=spark)
    bad = pq.read_table(tmp_path / "out" / "quarantine").to_pylist()
    assert sorted(r["reason"] for r in bad) == ["malformed_json", "missing_id", "missing_text"]
    assert all(r["file"].endswith("in.jsonl") for r in bad) and any(r["raw"] == '{"id": "x", "text": "cut off' for r in bad)
    assert (stats["quarantined"], stats["quarantined_malformed_json"], stats["quarantined_missing_id"], stats["quarantined_missing_text"]) == (
        3,
        1,
        1,
        1,
    )
    assert stats["docs"] == 3 and stats["removed"] == 1
    assert sorted(pq.read_table(tmp_path / "out" / "kept").column_names) == ["id", "text"]
    assert {r["id"] for r in pq.read_table(tmp_path / "out" / "clusters.parquet").to_pylist()} == set(good)
    # Nothing valid at all: one message naming the inputs, no output left behind.
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text('not json\n{"id": "c"}\n{"id": " ", "text": "a blank id"}\n')
    with pytest.raises(Exception, match="no valid record"):
        run_dedup([str(only_bad)], str(tmp_path / "out2"), spark=spark)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("row_groups", [1, 4])
def test_run_dedup_parquet_read_in_place_or_spread_gives_the_same_result(spark, corpus, tmp_path, row_groups):
    """Parquet spanning the cores is read where it lies; one row group is spread and cached. Null ids
    and texts are quarantined from Parquet too (counted without reading a null-free text column)."""
    import pyarrow as pa

    rows = [{"id": k, "text": v} for k, v in sorted(corpus.items())] + [{"id": None, "text": "no id"}, {"id": "z-null", "text": None}]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=-(-len(rows) // row_groups))
    # A tiny file is one split by default; small splits let its row groups spread over the cores.
    conf = {"spark.sql.files.maxPartitionBytes": "1k", "spark.sql.files.openCostInBytes": "1"}
    before = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        read = command._read(spark, [str(src)], tmp_path / "staging")
        summary = command._summary(read)
        assert (sum(summary.sizes), summary.missing_id, summary.ids_repeat) == (len(rows), 1, False)
        placed, cache = command._placed(read, summary)
        assert (cache is None) == (row_groups > 1)
        if cache is not None:
            cache.unpersist()
        stats = run_dedup([str(src)], str(tmp_path / "out"), spark=spark)
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)
    assert (stats["quarantined_missing_id"], stats["quarantined_missing_text"], stats["docs"]) == (1, 1, len(corpus))
    removed = {r["id"] for r in pq.read_table(tmp_path / "out" / "clusters.parquet").to_pylist() if not r["kept"]}
    assert removed == {"n03", "n07a", "d07", "x05"}
    assert {r["id"] for r in pq.read_table(tmp_path / "out" / "kept").to_pylist()} == set(corpus) - removed
    raw = command._read(spark, [str(src)], tmp_path / "staging")
    assert command._bad_counts(raw, command._summary(raw)) == {"missing_id": 1, "missing_text": 1}


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_run_dedup_rejects_reused_ids_unless_the_repeat_is_quarantined(spark, tmp_path, kind):
    import pyarrow as pa

    from phases.errors import DataError

    def write(name, rows):
        path = tmp_path / f"{name}.{kind}"
        if kind == "parquet":
            pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("text", pa.string())])), path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    reused = write("reused", [{"id": "a", "text": "one text here"}, {"id": "b", "text": "two"}, {"id": "a", "text": "another text"}])
    with pytest.raises(DataError, match=r"reuse ids \(e.g. \['a'\]\)"):
        run_dedup([reused], str(tmp_path / "out1"), spark=spark)
    assert not (tmp_path / "out1").exists()
    # The second "a" has no text: it is quarantined, and the valid records' ids are unique.
    quarantined = write("ok", [{"id": "a", "text": "one text here"}, {"id": "b", "text": "two"}, {"id": "a", "text": None}])
    stats = run_dedup([quarantined], str(tmp_path / "out2"), spark=spark)
    assert (stats["docs"], stats["quarantined_missing_text"]) == (2, 1)


def test_join_verification_agrees_with_grouped_verification(spark, corpus, monkeypatch):
    grouped, stats = _clusters(spark, corpus)
    monkeypatch.setattr(verify, "GROUPED_BUCKETS", 0)  # every bucket set takes the scale-out path
    joined, stats2 = _clusters(spark, corpus)
    assert joined == grouped and stats2["verified_pairs"] >= stats["verified_pairs"]


def test_python_workers_are_started_in_a_background_job(spark):
    from phases.data.dedup.run import WARM_JOB_GROUP, warm_python_workers

    thread = warm_python_workers(spark)
    thread.join(120)
    assert not thread.is_alive()
    tracker = spark.sparkContext.statusTracker()
    jobs = tracker.getJobIdsForGroup(WARM_JOB_GROUP)
    assert jobs, "no warm-up job ran"
    assert all(tracker.getJobInfo(j).status == "SUCCEEDED" for j in jobs)
    # One task per core: each core's worker has started.
    stages = [s for j in jobs for s in tracker.getJobInfo(j).stageIds]
    assert sum(tracker.getStageInfo(s).numTasks for s in stages if tracker.getStageInfo(s)) >= spark.sparkContext.defaultParallelism
