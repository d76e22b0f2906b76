"""Input sources: the built-in corpora and user files, listed and fingerprinted.

The built-in corpora are made from text that exists wherever the project is installed,
so the embedded default needs no download:

- ``python_stdlib``: the standard library's ``.py`` files;
- ``package_docs``: installed packages' metadata descriptions and Markdown files;
- ``package_licenses``: installed packages' licence files (rich in near-duplicates).

User sources name a file, directory or glob of JSONL, Parquet or plain text. Local paths
are fingerprinted by (path, size, mtime) so that fresh data changes the phase key and a
nightly run picks it up; remote URIs (s3a://, hdfs://) are fingerprinted by URI only.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Iterable

from phases.config import SourceConfig, canonical_json
from phases.errors import DataError

_REMOTE = ("s3a://", "s3://", "hdfs://", "gs://", "abfs://", "abfss://", "dbfs:/")
# Files a directory source contributes; plain-text sources take every file.
_SUFFIXES: dict[str, tuple[str, ...] | None] = {"jsonl": (".jsonl", ".json", ".jsonl.gz", ".json.gz"), "parquet": (".parquet",), "text": None}
_LICENSE_PREFIXES = ("license", "licence", "copying", "notice")


def is_remote(path: str) -> bool:
    return path.startswith(_REMOTE)


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


# This project's own metadata carries the README as its description: leaving it out keeps
# the default corpus (and so every downstream output) independent of our own docs.
_OWN_DIST = "llm_lifecycle-"


def _dist_info_dirs() -> list[Path]:
    return sorted(d for d in _site_packages().glob("*.dist-info") if not d.name.startswith(_OWN_DIST))


def _doc_files() -> list[Path]:
    sp = _site_packages()
    metadata = [d / "METADATA" for d in _dist_info_dirs() if (d / "METADATA").is_file()]
    markdown = sorted(p for p in sp.rglob("*.md") if p.is_file() and ".dist-info" not in str(p))
    return metadata + markdown


def _license_files() -> list[Path]:
    out: list[Path] = []
    for d in _dist_info_dirs():
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name.lower().startswith(_LICENSE_PREFIXES):
                out.append(p)
    return out


def _spread(files: list[Path], max_docs: int | None) -> list[Path]:
    """Pick ``max_docs`` files spread evenly over the sorted list (deterministic, diverse)."""
    if not max_docs or len(files) <= max_docs:
        return files
    step = len(files) / max_docs
    return [files[int(i * step)] for i in range(max_docs)]


BUILTIN = {"python_stdlib": _stdlib_files, "package_docs": _doc_files, "package_licenses": _license_files}


def builtin_files(source: SourceConfig) -> list[Path]:
    return _spread(BUILTIN[source.kind](), source.max_docs)


def expand_local(source: SourceConfig) -> list[Path]:
    """The local files a file-backed source names (a file, a directory, or a glob)."""
    assert source.path is not None
    raw = source.path.removeprefix("file://")
    p = Path(raw).expanduser()
    if any(ch in raw for ch in "*?["):
        files = [Path(f) for f in sorted(glob.glob(str(p), recursive=True))]
    elif p.is_dir():
        suffixes = _SUFFIXES[source.kind]
        files = sorted(
            f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")) and (suffixes is None or f.name.endswith(suffixes))
        )
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"source {source.name!r}: path {source.path!r} does not exist; fix data.sources[].path or remove the source")
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"source {source.name!r}: no {source.kind} files under {source.path!r}")
    return files


def source_files(source: SourceConfig) -> list[Path] | None:
    """Local files of a source, or None for a remote URI that Spark lists itself."""
    if source.kind in BUILTIN:
        files = builtin_files(source)
        if not files:
            raise DataError(f"source {source.name!r} ({source.kind}) found no files on this machine; configure another source")
        return files
    if is_remote(source.path or ""):
        return None
    return expand_local(source)


def _stat_digest(files: Iterable[Path]) -> tuple[str, int, int]:
    h = hashlib.sha256()
    n = size = 0
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        n += 1
        size += st.st_size
    return h.hexdigest(), n, size


def fingerprint_sources(sources: Iterable[SourceConfig]) -> tuple[str, dict]:
    """A fingerprint of every source as it is now, and a summary (files and bytes per source)."""
    parts: dict[str, str] = {}
    summary: dict[str, dict] = {}
    for s in sources:
        files = source_files(s)
        if files is None:
            parts[s.name] = f"uri:{s.path}"
            summary[s.name] = {"uri": s.path, "files": None, "bytes": None}
        else:
            digest, n, size = _stat_digest(files)
            parts[s.name] = digest
            summary[s.name] = {"files": n, "bytes": size}
    fp = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return fp, summary


# --------------------------------------------------------------------------- reading with Spark


def id_prefix(source: SourceConfig) -> str:
    """Builtin documents are identified by their path relative to the install, stable across machines."""
    if source.kind == "python_stdlib":
        return "file:" + os.path.abspath(sysconfig.get_paths()["stdlib"]) + "/"
    if source.kind in ("package_docs", "package_licenses"):
        return "file:" + os.path.abspath(sysconfig.get_paths()["purelib"]) + "/"
    if source.kind == "text" and source.path and not is_remote(source.path):
        # A plain-text file is identified by its path under the source directory.
        p = Path(os.path.abspath(Path(source.path.removeprefix("file://")).expanduser()))
        root = p if p.is_dir() else p.parent
        while any(ch in str(root) for ch in "*?["):
            root = root.parent
        return "file:" + str(root) + "/"
    return ""


def read_source(spark, source: SourceConfig):
    """One source as rows (source, location, doc_id, raw bytes, read_error)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    files = source_files(source)
    paths = [os.path.abspath(f) for f in files] if files is not None else [source.path]
    location = F.col("_metadata.file_path")
    no_error = F.lit(None).cast("string")
    if source.kind in ("python_stdlib", "package_docs", "package_licenses", "text"):
        df = spark.read.text(paths, wholetext=True).select(
            location.alias("location"),
            F.lit(None).cast("string").alias("doc_id"),
            F.col("value").alias("raw"),
            no_error.alias("read_error"),
        )
        if files is not None:
            # Spark yields no row for an empty file: list what it skipped so it is counted.
            listed = spark.createDataFrame([("file:" + p,) for p in paths], "location string")
            skipped = listed.join(df.select("location"), "location", "left_anti").select(
                "location",
                F.lit(None).cast("string").alias("doc_id"),
                F.lit(None).cast("string").alias("raw"),
                F.lit("empty_file").alias("read_error"),
            )
            df = df.unionByName(skipped)
    elif source.kind == "jsonl":
        fields = [StructField(source.text_field, StringType())]
        if source.id_field and source.id_field != source.text_field:
            fields.append(StructField(source.id_field, StringType()))
        fields.append(StructField("_corrupt", StringType()))
        df = (
            spark.read.schema(StructType(fields))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", "_corrupt")
            .json(paths)
            .select(
                location.alias("location"),
                (F.col(source.id_field) if len(fields) == 3 else F.lit(None).cast("string")).alias("doc_id"),
                F.coalesce(F.col(source.text_field), F.col("_corrupt")).alias("raw"),
                F.when(F.col("_corrupt").isNotNull(), F.lit("malformed_json")).alias("read_error"),
            )
        )
    else:  # parquet
        df = spark.read.parquet(*paths)
        if source.text_field not in df.columns:
            raise DataError(
                f"source {source.name!r}: Parquet has no column {source.text_field!r} (columns: {df.columns}); set data.sources[].text_field"
            )
        id_col = F.col(source.id_field).cast("string") if source.id_field in df.columns else F.lit(None).cast("string")
        df = df.select(
            location.alias("location"), id_col.alias("doc_id"), F.col(source.text_field).cast("string").alias("raw"), no_error.alias("read_error")
        )
    # Raw bytes cross into Python: Spark strings may hold invalid UTF-8, which Arrow would
    # refuse for the whole batch; decoding per document lets us quarantine just that one.
    return df.select(F.lit(source.name).alias("source"), "location", "doc_id", F.col("raw").cast("binary").alias("raw"), "read_error")
