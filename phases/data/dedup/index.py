"""Stage 5, index: the documents of earlier runs, for a nightly batch to be deduplicated against.

index_dir/gen-NNNNN/{bands,docs}/ (Parquet) + index_dir/params.json. bands: (id, band, key) of every
indexed document that was banded; docs: (id, cluster_id, text) of every indexed document (kept or
not: a new document may be a near-duplicate of a removed one, and a full recompute would join it to
that cluster). Each update adds one generation directory, renamed into place when complete.
params.json keeps the parameters and the shingle hash's signature version: an index is matched only
by the same parameters and version (other band keys would leave its near-duplicates unseen).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from phases.config import NearDedupConfig
from phases.data.dedup.frames import BROADCAST_IDS
from phases.data.dedup.signatures import signature_rows

# The version of each shingle hash's signatures; a change to a hash's output gets a new version
# (token 2: one 64-bit mix per window instead of one per token).
SIGNATURE_VERSIONS = {"sha1": 1, "token": 2}


def generations(index_dir) -> list[Path]:
    return sorted(p for p in Path(index_dir).glob("gen-*") if p.is_dir()) if index_dir else []


def check_params(index_dir, params: NearDedupConfig) -> None:
    """Refuses an index built with other parameters or another version of the shingle hash."""
    meta = Path(index_dir) / "params.json"
    if not meta.exists():
        return
    stored = json.loads(meta.read_text())
    version = stored.pop("signature_version", 1)  # indexes written before versions were kept: version 1
    if stored != params.signature_params():
        raise ValueError(
            f"index {index_dir} was built with {json.dumps(stored, sort_keys=True)}; near-dedup it with the same parameters, "
            f"got {json.dumps(params.signature_params(), sort_keys=True)}"
        )
    if version != SIGNATURE_VERSIONS[params.hashing]:
        raise ValueError(
            f"index {index_dir} holds {params.hashing!r} signatures of version {version}, but this release computes version "
            f"{SIGNATURE_VERSIONS[params.hashing]} (their band keys would not match): rebuild the index from its documents "
            f"(near_dedup + update_index over index_dir/gen-*/docs), or use the release that built it"
        )


def indexed(spark, index_dir, docs, new_bands, params: NearDedupConfig):
    """(indexed docs, indexed band rows sharing a key with ``new_bands``), or (None, None) for an empty index.

    A nightly batch is small next to the index: its ids and keys are broadcast where the index is
    read (no shuffle of the index). Its size bounds both, so no count job per set is needed.
    """
    from pyspark.sql import functions as F

    gens = generations(index_dir)
    if not gens:
        return None, None
    old = spark.read.parquet(*[str(g / "docs") for g in gens])
    small = docs.count() * params.banding()[0] <= BROADCAST_IDS
    hint = F.broadcast if small else (lambda df: df)
    if old.select("id").join(hint(docs.select("id")), "id", "left_semi").limit(1).count():
        raise ValueError("new documents reuse ids already in the index; ids must be unique across batches")
    keys = new_bands.select("band", "key").distinct()
    old_bands = spark.read.parquet(*[str(g / "bands") for g in gens]).join(hint(keys), ["band", "key"], "left_semi")
    return old, old_bands.select("id", "band", "key")


def update_index(spark, index_dir, new_docs, clusters, params: NearDedupConfig = NearDedupConfig()) -> str:
    """Add ``new_docs`` with their ``clusters`` rows (from :func:`~phases.data.dedup.run.near_dedup`
    with this index) as a new generation; returns its directory."""
    from pyspark.sql import functions as F

    check_params(index_dir, params)
    root = Path(index_dir)
    root.mkdir(parents=True, exist_ok=True)
    gens = generations(root)
    name = f"gen-{int(gens[-1].name[4:]) + 1 if gens else 0:05d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    docs = new_docs.select(F.col("id").cast("string"), F.col("text").cast("string"))
    signature_rows(docs, params)[1].write.parquet(str(tmp / "bands"))
    docs.join(clusters.select("id", "cluster_id"), "id").select("id", "cluster_id", "text").write.parquet(str(tmp / "docs"))
    meta = {**params.signature_params(), "signature_version": SIGNATURE_VERSIONS[params.hashing]}
    (root / "params.json").write_text(json.dumps(meta, sort_keys=True))
    tmp.rename(root / name)
    return str(root / name)
