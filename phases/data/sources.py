"""Input sources: the built-in corpora and user files, listed and fingerprinted.

The built-in corpora are made from text that exists wherever the project is installed,
so the embedded default needs no download:

- ``python_stdlib``: the standard library's ``.py`` files;
- ``package_docs``: installed packages' metadata descriptions and Markdown files;
- ``package_licenses``: installed packages' licence files (rich in near-duplicates).

User sources name a file, directory or glob of JSONL, Parquet or plain text. A directory is
walked here, not by Spark: every entry that is not read (hidden, wrong suffix, a link loop, a
FIFO: :data:`SKIP_REASONS`) is listed with its reason and becomes a quarantine row. Local paths
are fingerprinted by (path, size, mtime) so that fresh data changes the phase key and a
nightly run picks it up; remote URIs (s3a://, hdfs://) are fingerprinted by URI only.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import stat
import sysconfig
from pathlib import Path
from typing import Any, Iterable, NamedTuple

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


# Entries under a source that are not read, and why (each becomes one quarantine row).
# Spark and Hadoop treat names starting with "." or "_" as metadata (_SUCCESS, .crc, _spark_metadata/)
# and skip them silently, even a file named explicitly: we do not read them either, but record them.
SKIP_REASONS = {
    "hidden_file": "a file whose name starts with '.' or '_' (Spark's metadata convention): not read",
    "hidden_dir": "a directory whose name starts with '.' or '_': not read (one row for the whole tree)",
    "wrong_suffix": "a file whose suffix is not one of the source kind's",
    "symlink_loop": "a symbolic link that leads back to a directory already listed, or to itself",
    "broken_symlink": "a symbolic link to nothing",
    "not_a_file": "a FIFO, socket or device (reading one could block the job)",
    "unreadable": "a file or directory the phase may not open (permissions)",
}


class Listing(NamedTuple):
    """What a local source holds: the files to read, and every other entry with its reason."""

    files: list[Path]
    skipped: list[tuple[str, str]]  # (path, a key of SKIP_REASONS)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk(root: Path, suffixes: tuple[str, ...] | None) -> Listing:
    """Every entry under ``root``, depth first in name order. Symbolic links are followed, a directory
    at most once (by its real path), so a link loop ends as one ``symlink_loop`` row."""
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen = {os.path.realpath(root)}

    def visit(d: Path) -> None:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            skipped.append((str(d), "unreadable"))
            return
        for name in names:
            p = d / name
            try:
                st = os.stat(p)  # follows links
            except OSError as err:
                reason = "symlink_loop" if err.errno == errno.ELOOP else "broken_symlink" if os.path.islink(p) else "unreadable"
                skipped.append((str(p), reason))
                continue
            if _hidden(name):
                skipped.append((str(p), "hidden_dir" if stat.S_ISDIR(st.st_mode) else "hidden_file"))
            elif stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(p)
                if real in seen:
                    skipped.append((str(p), "symlink_loop"))
                else:
                    seen.add(real)
                    visit(p)
            elif not stat.S_ISREG(st.st_mode):
                skipped.append((str(p), "not_a_file"))
            elif suffixes is not None and not name.endswith(suffixes):
                skipped.append((str(p), "wrong_suffix"))
            elif not os.access(p, os.R_OK):
                skipped.append((str(p), "unreadable"))  # Spark would fail the whole job on it
            else:
                files.append(p)

    visit(root)
    return Listing(files, skipped)


def list_local(source: SourceConfig) -> Listing:
    """The local files a file-backed source names (a file, a directory, or a glob), and what it skips."""
    assert source.path is not None
    raw = source.path.removeprefix("file://")
    p = Path(raw).expanduser()
    if any(ch in raw for ch in "*?["):
        listing = Listing([], [])
        for f in sorted(glob.glob(str(p), recursive=True)):  # glob's "*" matches no ".x"; "_x" Spark would skip unread
            if os.path.isfile(f) and _hidden(os.path.basename(f)):
                listing.skipped.append((f, "hidden_file"))
            elif os.path.isfile(f):
                listing.files.append(Path(f))
    elif p.is_dir():
        listing = _walk(p, _SUFFIXES[source.kind])
    elif p.is_file():
        listing = Listing([], [(str(p), "hidden_file")]) if _hidden(p.name) else Listing([p], [])
    else:
        raise DataError(f"source {source.name!r}: path {source.path!r} does not exist; fix data.sources[].path or remove the source")
    if not listing.files:
        what = f" (only: {', '.join(f'{path} [{reason}]' for path, reason in listing.skipped[:5])})" if listing.skipped else ""
        raise DataError(f"source {source.name!r}: no {source.kind} files under {source.path!r}{what}")
    return listing


def expand_local(source: SourceConfig) -> list[Path]:
    """The local files a file-backed source reads (see :func:`list_local`)."""
    return list_local(source).files


def source_listing(source: SourceConfig) -> Listing | None:
    """The listing of a local source, or None for a remote URI that Spark lists itself."""
    if source.kind in BUILTIN:
        files = builtin_files(source)
        if not files:
            raise DataError(f"source {source.name!r} ({source.kind}) found no files on this machine; configure another source")
        return Listing(files, [])
    if is_remote(source.path or ""):
        return None
    return list_local(source)


def source_files(source: SourceConfig) -> list[Path] | None:
    """Local files of a source, or None for a remote URI that Spark lists itself."""
    listing = source_listing(source)
    return None if listing is None else listing.files


def _stat_digest(listing: Listing) -> tuple[str, int, int]:
    h = hashlib.sha256()
    n = size = 0
    for f in listing.files:
        try:
            st = os.stat(f)
        except OSError:  # gone since it was listed: the read will record it
            h.update(f"{f}\0gone\n".encode())
            continue
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        n += 1
        size += st.st_size
    for path, reason in listing.skipped:  # they make quarantine rows, so they are part of the input
        h.update(f"{path}\0{reason}\n".encode())
    return h.hexdigest(), n, size


def fingerprint_sources(sources: Iterable[SourceConfig]) -> tuple[str, dict]:
    """A fingerprint of every source as it is now, and a summary (files and bytes per source)."""
    parts: dict[str, str] = {}
    summary: dict[str, dict] = {}
    for s in sources:
        listing = source_listing(s)
        if listing is None:
            parts[s.name] = f"uri:{s.path}"
            summary[s.name] = {"uri": s.path, "files": None, "bytes": None}
        else:
            digest, n, size = _stat_digest(listing)
            parts[s.name] = digest
            summary[s.name] = {"files": n, "bytes": size, **({"skipped": len(listing.skipped)} if listing.skipped else {})}
    fp = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return fp, summary


# --------------------------------------------------------------------------- reading with Spark

WHOLE_FILE_KINDS = ("python_stdlib", "package_docs", "package_licenses", "text")  # one document per file
# Rows a source yields: ``line`` is the 1-based line of a JSONL record, the row of a Parquet one, null
# for a whole file; ``read_error`` and ``detail`` are set for an entry the phase could not read.
RAW_SCHEMA = "source string, location string, line long, doc_id string, raw binary, read_error string, detail string"


class SourceRead(NamedTuple):
    frame: Any  # a DataFrame of RAW_SCHEMA
    files: list[str] | None  # the local files it read ("file:" + absolute path), None for a remote URI


def local_root(source: SourceConfig) -> str:
    """``file:<the source's directory>/``: a local file's name under it identifies the file."""
    if not source.path or is_remote(source.path):
        return ""
    p = Path(os.path.abspath(Path(source.path.removeprefix("file://")).expanduser()))
    root = p if p.is_dir() else p.parent
    while any(ch in str(root) for ch in "*?["):
        root = root.parent
    return "file:" + str(root).rstrip("/") + "/"


def id_prefix(source: SourceConfig) -> str:
    """Builtin documents are identified by their path relative to the install, stable across machines."""
    if source.kind == "python_stdlib":
        return "file:" + os.path.abspath(sysconfig.get_paths()["stdlib"]) + "/"
    if source.kind in ("package_docs", "package_licenses"):
        return "file:" + os.path.abspath(sysconfig.get_paths()["purelib"]) + "/"
    if source.kind == "text":
        return local_root(source)  # a plain-text file is identified by its path under the source directory
    return ""


def _location():
    """The file a row came from, as ``file:/a b`` rather than Spark's URI ``file:/a%20b`` (so that it
    matches the listing). ``url_decode`` is form decoding: a ``+`` (left as is in a URI path) is kept."""
    from pyspark.sql import functions as F

    return F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), r"\+", "%2B")).alias("location")


def _spark_read(spark, read, paths: list[str]):
    """``read(paths)``, or None when every path is gone. A file removed after the listing makes Spark
    refuse the whole read (PATH_NOT_FOUND): read the others (the missing one is recorded as gone by the
    phase, like one removed after Spark listed it, which ``ignoreMissingFiles`` skips during the scan)."""
    from pyspark.errors import AnalysisException

    for _ in range(5):
        if not paths:
            return None
        try:
            return read(paths)
        except AnalysisException as err:
            still = [p for p in paths if os.path.exists(p)]
            if "PATH_NOT_FOUND" not in str(err) or len(still) == len(paths):
                raise
            paths = still
    return read(paths)


def _entry_rows(spark, source: SourceConfig, entries: list[tuple[str, str, str | None]]):
    """Rows of RAW_SCHEMA for entries that are not read: (path, reason, detail)."""
    rows = [(source.name, "file:" + os.path.abspath(p), None, None, None, reason, detail) for p, reason, detail in entries]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def _unreadable_parquet(paths: list[str]) -> list[tuple[str, str, str | None]]:
    """Local Parquet files whose footer does not parse (truncated, not Parquet): Spark would fail the job."""
    import pyarrow.parquet as pq

    bad = []
    for p in paths:
        try:
            pq.read_metadata(p)
        except FileNotFoundError:
            continue  # gone: recorded as such after the read
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: any of them means unreadable
            bad.append((p, "unreadable_file", f"{type(err).__name__}: {err}"[:200]))
    return bad


def read_source(spark, source: SourceConfig) -> SourceRead:
    """One source as rows of :data:`RAW_SCHEMA`, with the list of local files it was to read.

    JSONL is read as text lines, not with Spark's (lenient) JSON reader: the phase parses each line
    strictly (:mod:`phases.data.records`). A line's number is its rank in its file, ordered by the
    split it is in (``file_block_start``) and then by ``monotonically_increasing_id``, which grows
    with the order a task reads its split in; the text reader splits lines on \\n, \\r\\n and \\r.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    listing = source_listing(source)
    paths = [os.path.abspath(f) for f in listing.files] if listing is not None else [source.path]
    entries = [(p, reason, None) for p, reason in listing.skipped] if listing is not None else []
    null = lambda t: F.lit(None).cast(t)  # noqa: E731
    if source.kind == "parquet" and listing is not None:
        bad = _unreadable_parquet(paths)
        entries += bad
        paths = [p for p in paths if p not in {b[0] for b in bad}]
    reader = spark.read.option("ignoreMissingFiles", "true")
    if source.kind in WHOLE_FILE_KINDS:
        df = _spark_read(spark, lambda ps: reader.text(ps, wholetext=True), paths)
        if df is not None:
            df = df.select(_location(), null("long").alias("line"), null("string").alias("doc_id"), F.col("value").cast("binary").alias("raw"))
    elif source.kind == "jsonl":
        df = _spark_read(spark, reader.text, paths)
        if df is not None:
            lines = df.select(
                _location(), F.col("_metadata.file_block_start").alias("_block"), F.monotonically_increasing_id().alias("_seq"), "value"
            )
            in_file = Window.partitionBy("location").orderBy("_block", "_seq")
            df = lines.select(
                "location",
                F.row_number().over(in_file).cast("long").alias("line"),
                null("string").alias("doc_id"),
                F.col("value").cast("binary").alias("raw"),
            )
    else:  # parquet
        df = _spark_read(spark, lambda ps: reader.parquet(*ps), paths)
        if df is not None:
            types = dict(df.dtypes)
            if types.get(source.text_field) not in ("string", "binary"):
                found = f"its type is {types[source.text_field]}" if source.text_field in types else f"columns: {df.columns}"
                raise DataError(
                    f"source {source.name!r}: Parquet has no string column {source.text_field!r} ({found}); set data.sources[].text_field"
                )
            id_col = F.col(source.id_field).cast("string") if source.id_field in types else null("string")
            df = df.select(
                _location(),
                (F.col("_metadata.row_index") + 1).alias("line"),
                id_col.alias("doc_id"),
                F.col(source.text_field).cast("binary").alias("raw"),
            )
    # Raw bytes cross into Python: Spark strings may hold invalid UTF-8, which Arrow would
    # refuse for the whole batch; decoding per document lets us quarantine just that one.
    if df is not None:
        df = df.select(F.lit(source.name).alias("source"), "*", null("string").alias("read_error"), null("string").alias("detail"))
    if entries:
        rows = _entry_rows(spark, source, entries)
        df = rows if df is None else df.unionByName(rows)
    if df is None:
        df = spark.createDataFrame([], RAW_SCHEMA)
    files = ["file:" + os.path.abspath(f) for f in listing.files] if listing is not None else None
    return SourceRead(df, files)
