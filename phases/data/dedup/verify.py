"""Stage 3, verification: exact Jaccard of the candidate pairs that the clusters need.

The guarantee: a document is removed only along a path of verified edges (exact Jaccard >= the
threshold) to its kept document, and the clusters equal those of verifying every candidate pair.
What is verified: each bucket against a representative member first; a member that fails is then
tried against every other member. A pair whose two documents are already connected by verified edges
is skipped, and no pair is computed twice. So the cost follows the documents, not the pairs: a
cluster of k near copies costs about k Jaccards, not k^2/2 (:func:`link_buckets`).

Skipping a connected pair leaves the components as they are, and every candidate pair of a bucket is
either verified or skipped that way; hence the equality above. Against an index, two indexed
documents are never compared (they stay as the index clustered them): a bucket's representative is
a new document, indexed documents of one stored cluster count as connected, and only pairs with a new
document are computed.

A group of buckets (buckets linked by a shared member) of 16 to 4,000 documents is verified all at
once instead (:func:`candidate_edges`): its shingle sets as bitsets over the group's distinct keys,
every Jaccard of the group by popcounts, kept for the pairs that share a bucket, and a spanning forest
of those at or above the threshold: the same clusters again, since every candidate pair is computed.
In a heavy-tailed cluster most members are not duplicates of each other, and proving that pair by
pair in Python cost more than computing all of them in numpy.

Small candidate sets are verified group-wise: buckets linked by a member form a group, each group's
texts are shuffled once to one task and their shingle sets built once, in numpy
(:class:`~phases.data.dedup.shingles.ShingleSets`). Larger ones (or a giant group) take the scale-out
path: every pair of every bucket, joined to both texts (quadratic in a bucket, nothing on the driver).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator

from phases.config import NearDedupConfig
from phases.data.dedup.candidates import bucket_pairs
from phases.data.dedup.components import union_find
from phases.data.dedup.frames import collect_at_most, small_ids, string_frame
from phases.data.dedup.shingles import SLICE_TEXT_BYTES, GroupBits, ShingleSets, jaccard, shingle_tuples, text_lengths

EDGE_SCHEMA = "a string, b string, jaccard double"
# Bucket sets up to this many rows are collected and verified group-wise; larger ones by joins.
GROUPED_BUCKETS = 1_000_000
# ... unless a group holds more documents than this (one task would hold all its texts).
MAX_GROUP_DOCS = 20_000
# Most members verified against one document at once (chunks grow from 4): one numpy pass per chunk,
# and small first chunks let an early link make the other members connected (skipped).
LINK_CHUNK = 64
# A group of BITSET_MIN_DOCS to BITSET_MAX_DOCS documents whose bitsets (GroupBits) fit in BITSET_BYTES
# is verified all at once (candidate_edges): every Jaccard of the group by popcounts, in blocks of rows
# of about MATRIX_BLOCK_BYTES of AND-ed words. A cluster's copies share most shingles, so its bitsets are
# small, and a popcount per pair costs less than the Python of picking which pairs to compute.
BITSET_MIN_DOCS, BITSET_MAX_DOCS, BITSET_BYTES, MATRIX_BLOCK_BYTES = 16, 4_000, 64 << 20, 64 << 20


def link_buckets(
    buckets: list[list[str]],
    similarities: Callable[[str, list[str]], list[float]],
    threshold: float,
    cluster: Callable[[str], str | None] = lambda i: None,
) -> tuple[list[tuple[str, str, float]], int]:
    """(verified edges (a, b, jaccard), Jaccards computed) that connect the members of ``buckets`` as
    verifying all their pairs would (see the module docstring).

    ``similarities(x, ys)``: the Jaccards of x with each of ys. ``cluster``: the stored cluster of an
    indexed document, None for a new one. A bucket's representative is its member found in the most
    buckets (the original of a cluster of copies is close to all of them), then the smallest id.
    """
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in sorted({i for ids in buckets for i in ids if cluster(i) is not None}):
        parent[find(i)] = find("\0" + cluster(i))  # one stored cluster is one node
    seen = Counter(i for ids in buckets for i in ids)
    computed: dict[tuple[str, str], float] = {}
    edges = []

    def link(x, ys) -> list[str]:
        """Verifies x against those of ys it is not connected to (in chunks: the first links make the
        rest connected); returns the ys left unconnected."""
        left, at, size = [], 0, 4
        root, fresh = find(x), cluster(x) is None  # x's root stays the root: others are linked under it
        while at < len(ys):
            chunk, at, size = ys[at : at + size], at + size, min(2 * size, LINK_CHUNK)
            todo = [(y, (x, y) if x < y else (y, x)) for y in chunk if find(y) != root and (fresh or cluster(y) is None)]
            new = [(y, p) for y, p in todo if p not in computed]
            for (_, p), j in zip(new, similarities(x, [y for y, _ in new]) if new else []):
                computed[p] = j
            for y, p in todo:
                other = find(y)
                if other == root:
                    continue
                if computed[p] >= threshold:
                    parent[other] = root
                    edges.append((*p, computed[p]))
                else:
                    left.append(y)
        return left

    for ids in buckets:
        fresh = [i for i in ids if cluster(i) is None]
        if not fresh:
            continue
        rep = min(fresh, key=lambda i: (-seen[i], i))
        for f in link(rep, [y for y in ids if y != rep]):
            link(f, [y for y in ids if y != f])
    return edges, len(computed)


def candidate_edges(bits, members: list[str], buckets: list[list[str]], stored: list[str | None], threshold: float):
    """(verified edges that connect ``members`` as verifying all their candidate pairs would, Jaccards
    computed): every Jaccard of the group at once from its bitsets (:class:`GroupBits`), kept where the
    pair shares a bucket and holds a new document, then a spanning forest of those at or above the
    threshold. ``stored``: each member's indexed cluster or None; one stored cluster is one node."""
    import numpy as np

    at = {i: k for k, i in enumerate(members)}
    k = len(members)
    incidence = np.zeros((k, len(buckets)), np.float32)
    for b, ids in enumerate(buckets):
        incidence[[at[i] for i in ids], b] = 1.0
    candidate = np.triu((incidence @ incidence.T) > 0, 1)  # pairs sharing a bucket, each once
    fresh = np.array([c is None for c in stored])
    candidate &= fresh[:, None] | fresh[None, :]
    block = max(1, MATRIX_BLOCK_BYTES // max(1, bits.bits.nbytes))
    ai, bi, js = [], [], []
    for start in range(0, k, block):
        rows = np.arange(start, min(k, start + block))
        inter = np.bitwise_count(bits.bits[rows, None, :] & bits.bits[None, :, :]).sum(axis=2, dtype=np.int64)
        union = bits.sizes[rows, None] + bits.sizes[None, :] - inter
        jac = np.divide(inter, union, out=np.zeros(union.shape), where=(union > 0) & (bits.sizes[rows, None] > 0) & (bits.sizes[None, :] > 0))
        r, c = np.nonzero(candidate[rows] & (jac >= threshold))
        ai += (rows[r]).tolist()
        bi += c.tolist()
        js += jac[r, c].tolist()
    return _spanning_edges(members, stored, np.array(ai, np.int64), np.array(bi, np.int64), js), int(candidate.sum())


def _spanning_edges(members: list[str], stored: list[str | None], a, b, js: list[float]) -> list[tuple[str, str, float]]:
    """A spanning forest of the verified pairs (a[i], b[i]) (scipy's minimum spanning tree, weights =
    pair order); members of one stored cluster are tied by zero-cost links that are not edges."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    by_cluster: dict[str, list[int]] = {}
    for k, c in enumerate(stored):
        if c is not None:
            by_cluster.setdefault(c, []).append(k)
    tie_a = [m for ks in by_cluster.values() for m in ks[:-1]]
    tie_b = [m for ks in by_cluster.values() for m in ks[1:]]
    weight = np.concatenate([np.arange(1, len(a) + 1, dtype=np.float64), np.full(len(tie_a), 0.5)])
    graph = coo_matrix(
        (weight, (np.concatenate([a, tie_a]).astype(np.int64), np.concatenate([b, tie_b]).astype(np.int64))), shape=(len(members),) * 2
    )
    tree = minimum_spanning_tree(graph.tocsr()).tocoo()
    return [(members[a[int(w) - 1]], members[b[int(w) - 1]], js[int(w) - 1]) for w in tree.data if w >= 1]


def _pair(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)


def _verify_groups(group_buckets: dict[str, list], params: NearDedupConfig):
    """mapInArrow function: (id, text, cluster, g) rows, all of a group in one partition -> EDGE_SCHEMA
    rows of its verified edges, plus one row (a = null, jaccard = Jaccards computed) per chunk.

    Groups are verified in chunks of about :data:`SLICE_TEXT_BYTES` of text; a pair whose shingle keys
    are not proven injective is recomputed from Python sets (exact either way).
    """

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        got = [rb for rb in batches if rb.num_rows]
        if not got:
            return
        table = pa.Table.from_batches(got)
        ids, text, stored = table.column("id").to_pylist(), table.column("text").combine_chunks(), table.column("cluster").to_pylist()
        row = {i: k for k, i in enumerate(ids)}
        size = text_lengths(text)
        groups = sorted(g for g in group_buckets if group_buckets[g][0][0] in row)
        chunk, chunk_bytes = [], 0
        for n, g in enumerate(groups):
            chunk.append(g)
            chunk_bytes += int(size[[row[i] for i in {i for ids in group_buckets[g] for i in ids}]].sum())
            if chunk_bytes >= SLICE_TEXT_BYTES or n + 1 == len(groups):
                yield _verify_chunk([group_buckets[c] for c in chunk], text, row, stored, params)
                chunk, chunk_bytes = [], 0

    return run


def _verify_chunk(groups: list[list[list[str]]], text, row, stored, params: NearDedupConfig):
    """The verified edges of ``groups`` (each a group's buckets) as an EDGE_SCHEMA batch, plus the count row."""
    import numpy as np
    import pyarrow as pa

    docs = sorted({i for group in groups for ids in group for i in ids})
    local = {i: k for k, i in enumerate(docs)}
    sub = text.take(pa.array(np.array([row[i] for i in docs], dtype=np.int64)))
    sets = ShingleSets(sub, params.ngram)

    def exact(i):
        return shingle_tuples(sub[local[i]].as_py() or "", params.ngram)

    def similarities(x, ys):
        js = sets.jaccards(local[x], [local[y] for y in ys])
        # A pair that the keys cannot prove exact (a 64-bit collision) is recomputed from Python sets.
        return [j if j is not None else jaccard(exact(x), exact(y)) for y, j in zip(ys, js)]

    small, edges, computed = [], [], 0
    for group in groups:
        members = sorted({i for ids in group for i in ids})
        rows = np.array([local[i] for i in members], dtype=np.int64)
        bits = None
        if BITSET_MIN_DOCS <= len(members) <= BITSET_MAX_DOCS and not sets.unsure.intersection(rows.tolist()):
            bits = GroupBits.build(sets, rows, BITSET_BYTES)
        if bits is None:
            small += group
            continue
        found, n = candidate_edges(bits, members, group, [stored[row[i]] for i in members], params.threshold)
        edges += found
        computed += n
    found, n = link_buckets(small, similarities, params.threshold, lambda i: stored[row[i]])
    edges += found
    computed += n
    a, b, j = (list(c) for c in zip(*edges)) if edges else ([], [], [])
    return pa.RecordBatch.from_arrays(
        [pa.array(a + [None], pa.string()), pa.array(b + [None], pa.string()), pa.array(j + [float(computed)], pa.float64())],
        names=["a", "b", "jaccard"],
    )


def verified_edges(buckets, texts, params: NearDedupConfig):
    """(verified edges: a, b, jaccard >= threshold, materialized; Jaccards computed).

    ``texts``: (id, text, cluster) of every document a bucket may hold; cluster is the stored cluster
    of an indexed document and null for a new one.
    """
    from pyspark.sql import functions as F

    spark = buckets.sparkSession
    rows = collect_at_most(buckets, GROUPED_BUCKETS)
    if rows is not None:
        lists = sorted(r["ids"] for r in rows)
        group = union_find((ids[0], i) for ids in lists for i in ids[1:])
        group_buckets: dict[str, list] = {}
        for ids in lists:
            group_buckets.setdefault(group[ids[0]], []).append(ids)
        biggest = max((len({i for b in bs for i in b}) for bs in group_buckets.values()), default=0)
        if biggest <= MAX_GROUP_DOCS:
            if not lists:
                return spark.createDataFrame([], EDGE_SCHEMA), 0
            gdf = string_frame(spark, ("id", "g"), sorted(group.items()))
            parts = max(2 * spark.sparkContext.defaultParallelism, len(group) // 20_000)
            needed = texts.join(F.broadcast(gdf), "id").select("id", "text", "cluster", "g").repartition(parts, "g")
            out = needed.mapInArrow(_verify_groups(group_buckets, params), EDGE_SCHEMA).localCheckpoint()
            computed = int(out.where(F.col("a").isNull()).agg(F.sum("jaccard")).first()[0] or 0)
            return out.where(F.col("a").isNotNull() & (F.col("jaccard") >= params.threshold)), computed
    return _verify_by_joins(bucket_pairs(buckets), texts, params)


def _verify_by_joins(pairs, texts, params: NearDedupConfig):
    """The scale-out path: each pair with a new document joined to both texts, its Jaccard in pandas."""
    from pyspark.sql import functions as F

    ids = pairs.select(F.col("a").alias("id")).unionByName(pairs.select(F.col("b").alias("id"))).distinct().localCheckpoint()
    needed = texts.join(small_ids(ids), "id", "left_semi")
    side = lambda s: needed.select(F.col("id").alias(s), F.col("text").alias(f"t{s}"), F.col("cluster").alias(f"c{s}"))  # noqa: E731
    joined = pairs.join(side("a"), "a").join(side("b"), "b").where(F.col("ca").isNull() | F.col("cb").isNull())
    out = joined.select("a", "b", "ta", "tb").mapInPandas(_pair_jaccards(params.ngram), EDGE_SCHEMA).localCheckpoint()
    return out.where(F.col("jaccard") >= params.threshold), out.count()


def _pair_jaccards(ngram: int):
    """mapInPandas function: (a, b, ta, tb) -> (a, b, exact Jaccard of the shingle sets)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        for pdf in batches:
            cache: dict[str, set] = {}  # a document often sits in several pairs of one batch

            def sh(i, t):
                if i not in cache:
                    cache[i] = shingle_tuples(t or "", ngram)
                return cache[i]

            sims = [jaccard(sh(a, ta), sh(b, tb)) for a, b, ta, tb in zip(pdf.a, pdf.b, pdf.ta, pdf.tb)]
            yield pd.DataFrame({"a": pdf.a, "b": pdf.b, "jaccard": sims})

    return run
