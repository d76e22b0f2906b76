"""Stage 1, signatures: one pass over the texts gives each document's LSH band keys and text digest.

MinHash runs batch-wise in ``mapInArrow`` (Arrow tokenization and numpy over all shingles of a batch,
:mod:`phases.data.dedup.minhash`). Identical non-blank texts are collapsed to their smallest id here
(an exact edge): a bucket of k identical copies would otherwise hold k documents whose Jaccard is 1
anyway. Only (id, digest) is shuffled to find them, never the text.
"""

from __future__ import annotations

from typing import Any, Iterator

from phases.config import NearDedupConfig
from phases.data.dedup.frames import small_ids
from phases.data.dedup.minhash import Permutations, band_keys, shingle_hashes, signatures_from_hashes
from phases.data.dedup.shingles import string_buffers, text_lengths, text_slices

SIGNATURE_SCHEMA = "id string, keys array<bigint>, sha binary"


def text_digests(text, rows) -> list[bytes]:
    """SHA-256 of the UTF-8 bytes of ``text[i]`` for each i in ``rows`` (an Arrow string array), read in place."""
    import hashlib

    at, buf = string_buffers(text)
    at = at.tolist()
    sha = hashlib.sha256
    return [sha(buf[at[i] : at[i + 1]]).digest() for i in rows]


def band_rows(params: NearDedupConfig):
    """mapInArrow function: (id, text) batches -> SIGNATURE_SCHEMA rows.

    One row per text with shingles: its band keys (one per band, in band order) and the SHA-256 of its
    text. A text without shingles (blank) gives none: it duplicates nothing.
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
            [
                rb.column(rb.schema.get_field_index("id")).take(pa.array(has)),
                pa.ListArray.from_arrays(offsets, pa.array(keys[has].ravel())),
                pa.array(text_digests(text, has.tolist()), pa.binary()),
            ],
            schema=pa.schema([("id", pa.string()), ("keys", pa.list_(pa.int64())), ("sha", pa.binary())]),
        )

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        perms = Permutations(params.num_perm, params.seed, params.scheme)
        for whole in batches:  # Spark's Arrow batches are hashed in slices that fit the caches
            for start, stop in text_slices(text_lengths(whole.column(whole.schema.get_field_index("text")))):
                yield one(whole.slice(start, stop - start), perms)

    return run


def signature_rows(docs, params: NearDedupConfig):
    """(exact, bands, reps) of ``docs`` (id, text), from one pass over the texts.

    exact: (id, rep) for every document whose text also appears under a smaller id, materialized;
    bands: (id, band, key) of the other documents; reps: those other documents of ``docs``.
    """
    from pyspark.sql import functions as F

    # One row per document, not per band: bands-times fewer rows to convert and keep; they are exploded
    # where they are shuffled. localCheckpoint: the texts are hashed once, whatever reads the rows.
    rows = docs.select("id", "text").mapInArrow(band_rows(params), SIGNATURE_SCHEMA).localCheckpoint()
    exact = (
        rows.groupBy("sha")
        .agg(F.min("id").alias("rep"), F.collect_list("id").alias("ids"))
        .where(F.size("ids") > 1)
        .select(F.explode("ids").alias("id"), "rep")
        .where("id != rep")
        .localCheckpoint()
    )
    copies = small_ids(exact.select("id"))
    bands = rows.join(copies, "id", "left_anti").select("id", F.posexplode("keys").alias("band", "key"))
    return exact, bands, docs.join(copies, "id", "left_anti")
