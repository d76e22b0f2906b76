"""Near-duplicate detection on Spark: signatures -> buckets -> verify -> clusters -> filter.

- signatures: MinHash per document, batch-wise in ``mapInArrow`` (Arrow tokenization and numpy over
  all shingles of a batch, :mod:`phases.data.minhash`), emitted as one row per document with its
  band keys and its text's SHA-256 (exact copies are grouped by it), exploded to (id, band, key).
- buckets: documents sharing a band key are candidate pairs (a < b), deduplicated across bands.
- verify: each candidate pair's exact Jaccard over the shingle sets, recomputed from both texts
  (only documents that appear in a pair are shuffled; shingles as token tuples, exact). Pairs below
  the threshold are dropped before clustering, so a chain of false candidates cannot merge unrelated
  documents.
- clusters: connected components of the verified edges: union-find on the driver when the edge set
  is small (the usual case: one job), else the large-star / small-star algorithm (Kiveris et al.,
  2014) on DataFrames: O(log^2 n) rounds, nothing collected to the driver.
- filter: one document per cluster is kept: the smallest id (the cluster id).

Input with fewer partitions than cores (one Parquet row group) is hash-partitioned by id first and
cached (unless the caller passes a cached DataFrame).
Identical non-blank texts are collapsed to their smallest id (an exact edge) before buckets are
formed: a bucket of k identical copies would otherwise cost k^2/2 candidate pairs, and their Jaccard
is 1 anyway.
Everything is set-based (min, distinct), so the result does not depend on partitioning.
Document ids must be unique.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from phases.data.minhash import (HASHES, SCHEMES, Permutations, ShingleSets, band_keys, jaccard, optimal_bands, shingle_hashes, shingle_tuples,
                                 SLICE_TEXT_BYTES, signatures_from_hashes, string_buffers, text_lengths, text_slices)

log = logging.getLogger("lifecycle.data.dedup")

SIGNATURE_SCHEMA = "id string, keys array<bigint>, sha binary"
# Id sets up to this size are broadcast: joining them to the documents then moves no text.
BROADCAST_IDS = 2_000_000
PAIR_SCHEMA = "a string, b string, jaccard double"


@dataclass(frozen=True)
class NearDedupParams:
    """Near-dedup parameters; ``bands``/``rows`` override the threshold-derived banding."""

    threshold: float = 0.8       # exact Jaccard at or above which two documents are duplicates
    num_perm: int = 128          # MinHash permutations
    ngram: int = 5               # words per shingle
    seed: int = 1                # datasketch MinHash seed
    fn_weight: float = 0.99      # weight of missed pairs in the banding choice (fp weight = 1 - this):
                                 # verification removes false positives, so recall is what costs
    bands: int | None = None
    rows: int | None = None
    scheme: str = "affine32"     # datasketch 2.0's default permutation scheme ("legacy" = pre-2.0)
    hashing: str = "sha1"        # "sha1" = datasketch's default hashfunc; "token" = faster, see minhash.py

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.fn_weight < 1.0:
            raise ValueError(f"fn_weight must be in (0, 1), got {self.fn_weight}")
        if self.ngram < 1 or self.num_perm < 2:
            raise ValueError(f"ngram must be >= 1 and num_perm >= 2, got {self.ngram}, {self.num_perm}")
        if self.scheme not in SCHEMES or self.hashing not in HASHES:
            raise ValueError(f"scheme in {SCHEMES} and hashing in {HASHES} required, got {self.scheme!r}, {self.hashing!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they follow threshold and fn_weight)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows ({self.bands}*{self.rows}) exceeds num_perm ({self.num_perm})")

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, 1.0 - self.fn_weight, self.fn_weight)


def text_digests(text, rows) -> list[bytes]:
    """SHA-256 of the UTF-8 bytes of ``text[i]`` for each i in ``rows`` (an Arrow string array), read in place."""
    import hashlib

    at, buf = string_buffers(text)
    at = at.tolist()
    sha = hashlib.sha256
    return [sha(buf[at[i]:at[i + 1]]).digest() for i in rows]


def band_rows(params: NearDedupParams):
    """mapInArrow function: (id, text) batches -> SIGNATURE_SCHEMA rows, in one pass over the texts.

    One row per text with shingles: its band keys (one per band, in band order) and the SHA-256 of its
    text (exact copies are grouped by it). A text without shingles (blank) gives none.
    """
    bands, rows = params.banding()

    def one(rb, perms):
        import numpy as np
        import pyarrow as pa

        text = rb.column(rb.schema.get_field_index("text"))
        if params.hashing == "token":
            hv, counts = shingle_hashes(text, params.ngram, "token")
        else:
            hv, counts = shingle_hashes([t or "" for t in text.to_pylist()], params.ngram, params.hashing)
        keys = band_keys(signatures_from_hashes(hv, counts, perms), bands, rows)
        has = np.flatnonzero(counts > 0)
        offsets = pa.array(np.arange(len(has) + 1, dtype=np.int32) * bands)
        return pa.RecordBatch.from_arrays(
            [rb.column(rb.schema.get_field_index("id")).take(pa.array(has)),
             pa.ListArray.from_arrays(offsets, pa.array(keys[has].ravel())),
             pa.array(text_digests(text, has.tolist()), pa.binary())],
            schema=pa.schema([("id", pa.string()), ("keys", pa.list_(pa.int64())), ("sha", pa.binary())]))

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        perms = Permutations(params.num_perm, params.seed, params.scheme)
        for whole in batches:  # Spark's Arrow batches (10,000 rows) are hashed in slices of ~4 MB of text
            for start, stop in text_slices(text_lengths(whole.column(whole.schema.get_field_index("text")))):
                yield one(whole.slice(start, stop - start), perms)

    return run


def signature_rows(docs, params: NearDedupParams):
    """(exact, bands, reps) of ``docs`` (id, text), from one pass over the texts (:func:`band_rows`, its
    rows materialized once by localCheckpoint).

    exact: (id, rep) for every document whose text also appears under a smaller id, materialized;
    bands: (id, band, key) of the other documents; reps: those other documents of ``docs``. Only
    (id, digest) is shuffled to find exact copies, never the text.
    """
    from pyspark.sql import functions as F

    # One row per document, not per band: 18x fewer rows to convert and keep; bands are exploded where
    # they are shuffled.
    rows = docs.select("id", "text").mapInArrow(band_rows(params), SIGNATURE_SCHEMA).localCheckpoint()
    # One shuffle: each digest's ids gathered with their smallest (a group is one text's copies).
    exact = (rows.groupBy("sha").agg(F.min("id").alias("rep"), F.collect_list("id").alias("ids")).where(F.size("ids") > 1)
             .select(F.explode("ids").alias("id"), "rep").where("id != rep").localCheckpoint())
    copies = small_ids(exact.select("id"))
    bands = rows.join(copies, "id", "left_anti").select("id", F.posexplode("keys").alias("band", "key"))
    return exact, bands, docs.join(copies, "id", "left_anti")


def verify_pairs(ngram: int):
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


def _bucket_pairs(band, key, fresh=None):
    """(a, b) index pairs, a < b, of rows in the same bucket; rows sorted by (key, band, id)."""
    import numpy as np

    n = len(band)
    starts = np.r_[0, np.flatnonzero((band[1:] != band[:-1]) | (key[1:] != key[:-1])) + 1]
    sizes = np.diff(np.r_[starts, n])
    a_parts, b_parts = [], []
    for size in np.unique(sizes[sizes > 1]):  # all buckets of one size at once
        i, j = np.triu_indices(int(size), 1)
        first = starts[sizes == size][:, None]
        a_parts.append((first + i).ravel())
        b_parts.append((first + j).ravel())
    if not a_parts:
        return None
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    if fresh is not None:  # incremental: only pairs with a new document
        keep = fresh[a] | fresh[b]
        a, b = a[keep], b[keep]
    return a, b


def _bucket_pairs_fn():
    """mapInArrow function over band rows sorted by (key, band, id) within partitions, each bucket in
    one partition: the (a, b) pairs of every bucket. Streams: only the bucket that straddles two
    batches is carried over, so memory follows the largest bucket, not the partition."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        carry = None
        for rb in batches:
            t = pa.Table.from_batches([rb])
            t = t if carry is None else pa.concat_tables([carry, t])
            if t.num_rows == 0:
                continue
            band = t.column("band").to_numpy()
            key = t.column("key").to_numpy()
            last = np.flatnonzero((band[1:] != band[:-1]) | (key[1:] != key[:-1]))
            cut = int(last[-1]) + 1 if len(last) else 0  # the last bucket may go on in the next batch
            carry = t.slice(cut)
            if cut:
                out = _emit_pairs(t.slice(0, cut), band[:cut], key[:cut])
                if out is not None:
                    yield out
        if carry is not None and carry.num_rows:
            out = _emit_pairs(carry, carry.column("band").to_numpy(), carry.column("key").to_numpy())
            if out is not None:
                yield out

    return run


def _emit_pairs(t, band, key):
    """The (a, b) id pairs of the complete buckets in ``t`` (``band``, ``key``: its columns as arrays)."""
    import pyarrow as pa

    fresh = t.column("fresh").combine_chunks().to_numpy(zero_copy_only=False) if "fresh" in t.column_names else None
    ab = _bucket_pairs(band, key, fresh)
    if ab is None:
        return None
    ids = t.column("id").combine_chunks()
    return pa.RecordBatch.from_arrays([ids.take(pa.array(ab[0])), ids.take(pa.array(ab[1]))], names=["a", "b"])


def candidate_pairs(bands):
    """Distinct (a, b), a < b, of documents sharing a band key.

    One shuffle of the band rows by bucket, sorted within partitions (Spark's external sort: spills,
    no partition held in memory), then each bucket's pairs in numpy; the pairs (few) are deduplicated
    across bands. With a boolean ``fresh`` column (incremental mode), only pairs touching a fresh row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cols = ["id", "band", "key"] + (["fresh"] if "fresh" in bands.columns else [])
    # Key first: Spark's sort compares an 8-byte prefix of the first column and the full rows only on
    # ties. With band first (18 values) nearly every comparison was a tie (~2x slower); keys are
    # nearly all distinct. Each (band, key) bucket stays contiguous and ordered by id.
    ordered = bands.select(*cols).repartition("key").sortWithinPartitions("key", "band", "id")
    # Nearly every bucket holds one document: a count per bucket drops those rows before they go to
    # Python (the window reuses the partitioning and order above: no further shuffle or sort; 100k
    # documents, 1.8M band rows: 3.6 s -> 3.3 s).
    shared = ordered.withColumn("_n", F.count("*").over(Window.partitionBy("key", "band"))).where("_n > 1").drop("_n")
    return shared.mapInArrow(_bucket_pairs_fn(), "a string, b string").distinct()


def string_frame(spark, names: tuple[str, ...], rows: list[tuple]):
    """A DataFrame of string columns ``names`` from driver-side ``rows``, sent to the JVM as Arrow: no
    Python worker converts the rows (measured for 50k rows on a cold session: 0.7 s against 1.9 s)."""
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


# Candidate pair sets up to this size are verified group-wise (see verified_pairs); larger ones by joins.
GROUPED_VERIFY_PAIRS = 1_000_000
# ... unless a group of candidates linked by pairs is larger than this (one task would hold all its texts).
GROUPED_VERIFY_MAX_GROUP = 20_000


def _verify_groups(group_pairs: dict, ngram: int):
    """mapInArrow function: (id, text, g) rows, all of a group in one partition -> (a, b, jaccard).

    Groups are verified in chunks of about :data:`SLICE_TEXT_BYTES` of text: each chunk's shingle sets
    are built at once in numpy (:class:`ShingleSets`, exact); a pair it cannot prove exact (a 64-bit
    key collision) is recomputed from Python sets.
    """

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        got = [rb for rb in batches if rb.num_rows]
        if not got:
            return
        table = pa.Table.from_batches(got)
        ids = table.column(0).to_pylist()
        text = table.column(1).combine_chunks()
        row = {i: k for k, i in enumerate(ids)}
        groups = sorted(g for g, pairs in group_pairs.items() if pairs[0][0] in row)  # this partition's groups
        size = text_lengths(text)
        a_out, b_out, j_out = [], [], []
        chunk, chunk_docs, chunk_bytes = [], set(), 0
        for n, g in enumerate(groups):
            members = {i for pair in group_pairs[g] for i in pair}
            chunk.append(g)
            chunk_docs |= members
            chunk_bytes += int(size[[row[i] for i in members]].sum())
            if chunk_bytes < SLICE_TEXT_BYTES and n + 1 < len(groups):
                continue
            docs = sorted(chunk_docs)
            local = {i: k for k, i in enumerate(docs)}
            sub = text.take(pa.array(np.array([row[i] for i in docs], dtype=np.int64)))
            sets = ShingleSets(sub, ngram)
            for c in chunk:
                for x, y in group_pairs[c]:
                    j = sets.jaccard(local[x], local[y])
                    if j is None:  # not provably exact: Python sets
                        j = jaccard(shingle_tuples(sub[local[x]].as_py() or "", ngram), shingle_tuples(sub[local[y]].as_py() or "", ngram))
                    a_out.append(x)
                    b_out.append(y)
                    j_out.append(j)
            chunk, chunk_docs, chunk_bytes = [], set(), 0
        yield pa.RecordBatch.from_arrays([pa.array(a_out, pa.string()), pa.array(b_out, pa.string()), pa.array(j_out, pa.float64())],
                                         names=["a", "b", "jaccard"])

    return run


def verified_pairs(pairs, texts, params: NearDedupParams):
    """Candidate pairs whose exact Jaccard reaches the threshold, with that Jaccard.

    Up to :data:`GROUPED_VERIFY_PAIRS` pairs: the pairs are collected, grouped on the driver (connected
    components of the candidate graph), each needed text is shuffled once to its group's partition, and
    each document's shingle set is built once. Otherwise both texts are joined to every pair.
    """
    from pyspark.sql import functions as F

    collected = collect_at_most(pairs.select("a", "b"), GROUPED_VERIFY_PAIRS)
    if collected is not None:
        rows = [(r[0], r[1]) for r in collected]
        group = _union_find(rows)
        group_pairs: dict[str, list] = {}
        for a, b in sorted(rows):
            group_pairs.setdefault(group[a], []).append((a, b))
        if max(Counter(group.values()).values(), default=0) <= GROUPED_VERIFY_MAX_GROUP:
            spark = pairs.sparkSession
            if not rows:
                return spark.createDataFrame([], PAIR_SCHEMA)
            gdf = string_frame(spark, ("id", "g"), sorted(group.items()))
            parts = max(2 * spark.sparkContext.defaultParallelism, len(group) // 20_000)
            needed = texts.join(F.broadcast(gdf), "id").select("id", "text", "g").repartition(parts, "g")
            return needed.mapInArrow(_verify_groups(group_pairs, params.ngram), PAIR_SCHEMA).where(F.col("jaccard") >= params.threshold)
    ids = pairs.select(F.col("a").alias("id")).unionByName(pairs.select(F.col("b").alias("id"))).distinct().localCheckpoint()
    needed = texts.join(small_ids(ids), "id", "left_semi")
    joined = (pairs.join(needed.select(F.col("id").alias("a"), F.col("text").alias("ta")), "a")
              .join(needed.select(F.col("id").alias("b"), F.col("text").alias("tb")), "b")
              .select("a", "b", "ta", "tb"))
    return joined.mapInPandas(verify_pairs(params.ngram), PAIR_SCHEMA).where(F.col("jaccard") >= params.threshold)


def _canonical(df, x: str, y: str):
    from pyspark.sql import functions as F

    return df.select(F.least(x, y).alias("a"), F.greatest(x, y).alias("b")).where("a != b").distinct()


def _both_ways(e):
    from pyspark.sql import functions as F

    return e.select(F.col("a").alias("u"), F.col("b").alias("v")).unionByName(e.select(F.col("b").alias("u"), F.col("a").alias("v")))


def _large_star(e):
    """Each node's larger neighbours are attached to the smallest node of its neighbourhood."""
    from pyspark.sql import functions as F

    s = _both_ways(e)
    m = s.groupBy("u").agg(F.min("v").alias("m")).withColumn("m", F.least("m", "u"))
    return _canonical(s.where("v > u").join(m, "u"), "v", "m")


def _small_star(e):
    """Each node and its smaller neighbours are attached to the smallest of them."""
    from pyspark.sql import functions as F

    s = _both_ways(e).where("v < u")
    m = s.groupBy("u").agg(F.min("v").alias("m"))
    return _canonical(s.join(m, "u").select("v", "m").unionByName(m.select(F.col("u").alias("v"), "m")), "v", "m")


def _is_star_forest(e) -> bool:
    """Every edge (a, b) is centre -> leaf: no leaf has two centres and no centre is a leaf (one job)."""
    from pyspark.sql import functions as F

    leaves = e.groupBy("b").count()
    centres_as_leaves = leaves.join(e.select("a"), leaves.b == F.col("a"), "left_semi").select("b")
    return leaves.where("count > 1").select("b").unionByName(centres_as_leaves).limit(1).count() == 0


# Edge sets up to this size are labelled on the driver (union-find over collected edges: one Spark job
# instead of 2-3 per large-star/small-star round); 2M string pairs are ~0.5 GB of Python objects at most.
DRIVER_COMPONENTS_EDGES = 2_000_000


def _union_find(rows) -> dict[str, str]:
    """id -> the smallest id of its component over the edges ``rows`` (order-independent)."""
    parent: dict[str, str] = {}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in rows:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra
    return {x: find(x) for x in parent}


def _driver_components(spark, rows):
    """(id, label) rows by union-find; label = the smallest id of each component."""
    return string_frame(spark, ("id", "label"), sorted(_union_find(rows).items()))


def connected_components(edges, max_rounds: int = 64, driver_max_edges: int | None = None):
    """(id, label) for every node of ``edges`` (columns a, b): label = the smallest node of its component.

    Up to ``driver_max_edges`` edges (default :data:`DRIVER_COMPONENTS_EDGES`) are collected and
    labelled on the driver; larger edge sets run large-star / small-star rounds on Spark.
    """
    from pyspark.sql import functions as F

    limit = DRIVER_COMPONENTS_EDGES if driver_max_edges is None else driver_max_edges
    if limit > 0:
        rows = collect_at_most(edges.select(F.col("a").cast("string"), F.col("b").cast("string")), limit)
        if rows is not None:
            return _driver_components(edges.sparkSession, rows)
    e = _canonical(edges, "a", "b").localCheckpoint()
    for _ in range(max_rounds):
        if _is_star_forest(e):
            break
        # localCheckpoint cuts the lineage: the plan would otherwise grow with every round.
        e = _small_star(_large_star(e)).localCheckpoint()
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    roots = e.select(F.col("a").alias("id"), F.col("a").alias("label")).distinct()
    return e.select(F.col("b").alias("id"), F.col("a").alias("label")).unionByName(roots)


WARM_JOB_GROUP = "warm-python-workers"


def _warm(batches: Iterator[Any]) -> Iterator[Any]:
    """mapInArrow function that emits nothing: its worker has imported this module (numpy, pyarrow,
    pandas with pyspark's Arrow path) by the time it runs."""
    for _ in batches:
        pass
    yield from ()


def warm_python_workers(spark):
    """Starts the session's Python workers in a background job (one task per core), so that their
    start and imports (~2.5 s in a new session) overlap the driver's first queries instead of
    delaying the signature stage. Returns the thread; join it before stopping the session. A failure
    only loses the head start (the stage starts its workers itself)."""
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


class StageTimer:
    """Seconds per stage (each stage ends in an action), logged as progress and kept for the stats."""

    def __init__(self, what: str):
        self.what, self.seconds, self._t = what, {}, time.perf_counter()

    def done(self, stage: str, df=None):
        """Marks ``stage`` finished (after materializing ``df`` when given); returns ``df``."""
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._t, 2)
        self._t = now
        log.info("%s: %s done in %.1f s", self.what, stage, self.seconds[stage])
        return df

    def stats(self) -> dict[str, float]:
        return {f"seconds_{k}": v for k, v in self.seconds.items()}


def spread(docs, sizes: list[int] | None = None):
    """``docs`` hash-partitioned by id when its rows would otherwise sit on fewer cores than there are.

    By default that is when it has fewer partitions than cores (e.g. one small file). ``sizes`` (the
    rows of each non-empty partition, e.g. from one job that reads no column data) also spreads when
    one partition holds most of them: Spark splits a large Parquet file by bytes, but a row group is
    read whole by the split holding its middle, so a file of one big row group comes as one full
    partition and empty ones.
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


def _cached_docs(docs, cached: bool = False):
    """(id, text as strings, a cached DataFrame to unpersist when done or None).

    ``cached``: the caller placed ``docs`` (cached and spread, or splittable Parquet that spans the
    cores, cheaper to read again than to cache), so it is used as it is, its other columns ignored:
    the standalone command reads the records it also writes out.
    """
    from pyspark.sql import functions as F

    level = docs.storageLevel
    owned = None
    if not (cached or level.useMemory or level.useDisk):
        docs = owned = spread(docs).persist()
    types = dict(docs.dtypes)
    cols = [F.col(c) if types[c] == "string" else F.col(c).cast("string").alias(c) for c in ("id", "text")]
    return docs.select(*cols), owned


def near_dedup(spark, docs, params: NearDedupParams = NearDedupParams(), with_edges: bool = False, cached: bool = False):
    """(clusters, stats): clusters has one row per input document (id, cluster_id, kept).

    ``docs`` needs columns id (unique) and text; others are ignored. ``clusters`` is persisted; unpersist it when
    done. ``cached``: see :func:`_cached_docs`. ``with_edges`` adds a third item: the duplicate edges (a, b, jaccard; exact ones with 1.0).
    """
    from pyspark.sql import functions as F

    t = StageTimer("near-dedup")
    docs, owned = _cached_docs(docs, cached)
    exact, bands, reps = t.done("signatures", signature_rows(docs, params))
    # localCheckpoint materializes each stage once and cuts the lineage: later plans stay small
    # (deep plans made Spark spend more time planning and describing queries than running them).
    pairs = t.done("candidates", candidate_pairs(bands).localCheckpoint())
    verified = t.done("verification", verified_pairs(pairs, reps, params).localCheckpoint())
    exact_edges = exact.select(F.col("rep").alias("a"), F.col("id").alias("b"), F.lit(1.0).alias("jaccard"))
    edges = verified.unionByName(exact_edges).localCheckpoint()
    labels = connected_components(edges)
    clusters = (docs.select("id").join(labels, "id", "left")
                .select("id", F.coalesce("label", "id").alias("cluster_id"))
                .withColumn("kept", F.col("id") == F.col("cluster_id")).persist())
    b, r = params.banding()
    totals = clusters.agg(F.count("*").alias("docs"), F.count(F.when(~F.col("kept"), 1)).alias("removed"),
                          F.countDistinct(F.when(~F.col("kept"), F.col("cluster_id"))).alias("clusters")).first()
    t.done("components")
    stats = {
        **totals.asDict(),
        "exact_duplicates": exact.count(),
        "candidate_pairs": pairs.count(),
        "verified_pairs": verified.count(),
        "bands": b, "rows": r, **{f"param_{k}": v for k, v in asdict(params).items()},
    }
    stats.update(t.stats())
    if owned is not None:
        owned.unpersist()
    return (clusters, stats, edges) if with_edges else (clusters, stats)


# --- incremental mode: a nightly batch against a persisted index of the documents already seen ---
#
# index_dir/gen-NNNNN/{bands,docs}/ (Parquet) + index_dir/params.json. bands: (id, band, key) of every
# indexed document that was banded; docs: (id, cluster_id, text) of every indexed document (kept or
# not: a new document may be a near-duplicate of a removed one, and a full recompute would join it to
# that cluster). Each update adds one generation directory, renamed into place when complete.


def _generations(index_dir) -> list:
    from pathlib import Path

    return sorted(p for p in Path(index_dir).glob("gen-*") if p.is_dir()) if index_dir else []


# The version of each shingle hash's signatures, kept in an index's params.json: an index whose band
# keys came from another version cannot be matched against (its near-duplicates would go unseen).
# token 2 (2026-11-27): one 64-bit mix per window instead of one per token.
SIGNATURE_VERSIONS = {"sha1": 1, "token": 2}


def _index_meta(params: NearDedupParams) -> dict:
    return {**asdict(params), "signature_version": SIGNATURE_VERSIONS[params.hashing]}


def _check_index_params(index_dir, params: NearDedupParams) -> None:
    import json
    from pathlib import Path

    meta = Path(index_dir) / "params.json"
    if not meta.exists():
        return
    stored = json.loads(meta.read_text())
    version = stored.pop("signature_version", 1)  # indexes written before versions were kept: version 1
    if stored != asdict(params):
        raise ValueError(f"index {index_dir} was built with {json.dumps(stored, sort_keys=True)}; near-dedup it with the same parameters, got {asdict(params)}")
    if version != SIGNATURE_VERSIONS[params.hashing]:
        raise ValueError(f"index {index_dir} holds {params.hashing!r} signatures of version {version}, but this release computes version "
                         f"{SIGNATURE_VERSIONS[params.hashing]} (their band keys would not match): rebuild the index from its documents "
                         f"(near_dedup + update_index over index_dir/gen-*/docs), or use the release that built it")


def near_dedup_incremental(spark, new_docs, index_dir, params: NearDedupParams = NearDedupParams(), cached: bool = False):
    """(clusters, stats) for ``new_docs`` deduplicated against the index and against each other.

    Cost follows the new batch: only index bands sharing a key with a new document are read past the
    scan, and only pairs touching a new document are verified. Indexed documents enter the graph as
    their stored cluster, and an indexed cluster outranks any new document, so an old kept document
    stays kept. For new documents the result equals a full recompute whenever new ids sort after the
    indexed ones (the full run's smallest-id rule then agrees). A new document that bridges two
    indexed clusters gets the smaller cluster id; the indexed documents keep their stored ids
    (counted in stats as ``bridged_clusters``).
    """
    from pyspark.sql import functions as F

    _check_index_params(index_dir, params)
    gens = _generations(index_dir)
    t = StageTimer("near-dedup (incremental)")
    docs, owned = _cached_docs(new_docs, cached)
    exact, new_bands, reps = t.done("signatures", signature_rows(docs, params))
    bands = new_bands.withColumn("fresh", F.lit(True))
    old = None
    texts = reps
    if gens:
        old = spark.read.parquet(*[str(g / "docs") for g in gens])
        # A nightly batch is small next to the index: its ids and keys are broadcast where the index is
        # read (no shuffle of the index). Its size bounds both, so no count job per set is needed.
        small = docs.count() * params.banding()[0] <= BROADCAST_IDS
        new_ids = F.broadcast(docs.select("id")) if small else docs.select("id")
        if old.select("id").join(new_ids, "id", "left_semi").limit(1).count():
            raise ValueError("new documents reuse ids already in the index; ids must be unique across batches")
        t.done("id_check")
        keys = new_bands.select("band", "key").distinct()
        old_bands = spark.read.parquet(*[str(g / "bands") for g in gens]).join(F.broadcast(keys) if small else keys, ["band", "key"], "left_semi")
        bands = bands.unionByName(old_bands.select("id", "band", "key").withColumn("fresh", F.lit(False)))
        texts = reps.unionByName(old.select("id", "text"))
    pairs = t.done("candidates", candidate_pairs(bands).localCheckpoint())
    verified = t.done("verification", verified_pairs(pairs, texts, params).localCheckpoint())
    labels, bridged, n_verified = _incremental_labels(spark, verified, exact, old)
    clusters = (docs.select("id", F.concat(F.lit("1"), "id").alias("node")).join(labels.withColumnRenamed("id", "node"), "node", "left")
                .select("id", F.coalesce("label", "node").alias("label"))
                .select("id", F.expr("substring(label, 2)").alias("cluster_id"), (F.col("label") == F.concat(F.lit("1"), "id")).alias("kept"))
                .persist())
    totals = clusters.agg(F.count("*").alias("docs"), F.count(F.when(~F.col("kept"), 1)).alias("removed")).first()
    stats = {
        "docs": totals["docs"], "indexed_generations": len(gens),
        "candidate_pairs": pairs.count(), "verified_pairs": n_verified,
        "removed": totals["removed"], "bridged_clusters": bridged,
    }
    t.done("components")
    stats.update(t.stats())
    if owned is not None:
        owned.unpersist()
    return clusters, stats


def _incremental_labels(spark, verified, exact, old):
    """(labels, bridged clusters, verified pair count) of the incremental graph.

    Nodes: "0"+cluster for an indexed document (its whole stored cluster), "1"+id for a new one; labels
    (id = node, label) = the smallest node of each component, so an indexed cluster outranks any new
    document. ``old``: the indexed (id, cluster_id, ...) or None. Up to :data:`DRIVER_COMPONENTS_EDGES`
    edges the graph is built and labelled on the driver (three small jobs: a nightly batch's edges are
    few); above that, on Spark.
    """
    from pyspark.sql import functions as F

    limit = DRIVER_COMPONENTS_EDGES
    pair_rows = collect_at_most(verified.select("a", "b"), limit)
    exact_rows = collect_at_most(exact.select("rep", "id"), limit) if pair_rows is not None else None
    if exact_rows is not None and len(pair_rows) + len(exact_rows) <= limit:
        stored: dict[str, str] = {}
        ids = sorted({i for r in pair_rows for i in r})
        if old is not None and ids:
            wanted = F.broadcast(string_frame(spark, ("id",), [(i,) for i in ids]))
            stored = dict(old.select("id", "cluster_id").join(wanted, "id", "left_semi").collect())

        def node(i):
            return "0" + stored[i] if i in stored else "1" + i

        label = _union_find([(node(a), node(b)) for a, b in pair_rows] + [("1" + rep, "1" + i) for rep, i in exact_rows])
        bridged = sum(1 for n, lab in label.items() if n[0] == "0" and lab[0] == "0" and n != lab)
        return string_frame(spark, ("id", "label"), sorted(label.items())), bridged, len(pair_rows)
    if old is None:
        old = spark.createDataFrame([], "id string, cluster_id string")
    ids = verified.select(F.col("a").alias("id")).unionByName(verified.select(F.col("b").alias("id"))).distinct()
    nodes = (ids.join(old.select("id", "cluster_id"), "id", "left")
             .select("id", F.coalesce(F.concat(F.lit("0"), "cluster_id"), F.concat(F.lit("1"), "id")).alias("node")).localCheckpoint())
    new_edges = (verified.join(nodes.withColumnRenamed("id", "a").withColumnRenamed("node", "na"), "a")
                 .join(nodes.withColumnRenamed("id", "b").withColumnRenamed("node", "nb"), "b").select(F.col("na").alias("a"), F.col("nb").alias("b")))
    exact_edges = exact.select(F.concat(F.lit("1"), "rep").alias("a"), F.concat(F.lit("1"), "id").alias("b"))
    labels = connected_components(new_edges.unionByName(exact_edges), driver_max_edges=0).localCheckpoint()  # too many for the driver
    bridged = labels.where(F.col("label").startswith("0")).where(F.col("id").startswith("0")).where("id != label").count()
    return labels, bridged, verified.count()


def update_index(spark, index_dir, new_docs, clusters, params: NearDedupParams = NearDedupParams()) -> str:
    """Add ``new_docs`` with their ``clusters`` rows (from :func:`near_dedup_incremental`) as a new generation."""
    import json
    import shutil
    from pathlib import Path

    from pyspark.sql import functions as F

    _check_index_params(index_dir, params)
    root = Path(index_dir)
    root.mkdir(parents=True, exist_ok=True)
    gens = _generations(root)
    name = f"gen-{int(gens[-1].name[4:]) + 1 if gens else 0:05d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    docs = new_docs.select(F.col("id").cast("string"), F.col("text").cast("string"))
    signature_rows(docs, params)[1].write.parquet(str(tmp / "bands"))
    docs.join(clusters.select("id", "cluster_id"), "id").select("id", "cluster_id", "text").write.parquet(str(tmp / "docs"))
    (root / "params.json").write_text(json.dumps(_index_meta(params), sort_keys=True))
    tmp.rename(root / name)
    return str(root / name)
