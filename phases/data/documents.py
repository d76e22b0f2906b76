"""From the rows a source yields to checked documents, plain Python applied batch-wise by Spark.

:func:`process_batches` is the ``mapInPandas`` function of the data phase: it parses JSONL lines
strictly (:mod:`phases.data.records`), decodes, normalizes, checks, hashes and redacts each
document and names every one that does not go through (stage and reason, the file and line it
came from). :func:`unread_files` adds a row for each listed file that yielded no record.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from phases.config import DataConfig
from phases.data.sources import id_prefix, local_root

PII_KINDS = ("email", "ip", "phone", "secret")
PROCESSED_SCHEMA = (
    "id string, source string, location string, line long, text string, sha string, chars long, stage string, reason string, detail string, "
    + ", ".join(f"pii_{k} long" for k in PII_KINDS)
)
_PROCESSED_NAMES = [c.split()[0] for c in PROCESSED_SCHEMA.split(", ")]
_NO_PII = {k: 0 for k in PII_KINDS}


def record_id(source: str, local_id: str | None, loc: str, line: int | None, prefix: str, root: str, sha: str, quarantined: bool) -> str:
    """``<source>/<id>``: the record's own id, else its file under the source (whole files), else for a
    quarantined record its file and line, else the hash of its text."""
    if local_id:
        return f"{source}/{local_id}"
    if prefix:
        return f"{source}/{loc.removeprefix(prefix)}"
    if quarantined:
        where = loc.removeprefix(root) if root else loc
        return f"{source}/{where}" if line is None else f"{source}/{where}:{line}"
    return f"{source}/{sha[:20]}"


def quarantine_row(cfg: DataConfig, source: str, loc: str, line: int | None, reason: str, detail: str | None) -> tuple:
    """A processed row for a record quarantined before it had any text (an unread file, a bad line)."""
    from phases.data.normalize import text_hash

    s = next(x for x in cfg.sources if x.name == source)
    rid = record_id(source, None, loc, line, id_prefix(s), local_root(s), text_hash(""), True)
    return (rid, source, loc, line, None, text_hash(""), 0, "quarantine", reason, detail, *(0 for _ in PII_KINDS))


def process_batches(cfg: DataConfig):
    """The mapInPandas function: parse (JSONL), normalize, check and hash each document of a batch."""
    from phases.data.normalize import check, decode, metadata_description, normalize, text_hash
    from phases.data.pii import redact
    from phases.data.quality import quality_reason
    from phases.data.records import BLANK, parse_record

    prefixes = {s.name: id_prefix(s) for s in cfg.sources}
    roots = {s.name: local_root(s) for s in cfg.sources}
    jsonl = {s.name: (s.text_field, s.id_field) for s in cfg.sources if s.kind == "jsonl"}
    metadata_sources = {s.name for s in cfg.sources if s.kind == "package_docs"}
    filtered_sources = {s.name for s in cfg.sources if s.quality_filters}

    def one(source, loc, line, doc_id, data, read_error, detail) -> tuple | None:
        bad_encoding = False
        if isinstance(read_error, str):
            raw = None
        elif source in jsonl:
            record = parse_record(data, *jsonl[source], first_line=line == 1)
            if record == BLANK:  # (equal, not identical: the closure carries a pickled copy)
                return None  # not a record: neither read nor rejected
            doc_id, raw, read_error, detail = record
        elif data is not None and b"\x00" in data:
            raw, read_error = None, "binary"  # before decoding: a binary file is binary, not "invalid UTF-8"
        else:
            raw, bad_encoding = decode(data)
        if source in metadata_sources and raw is not None and loc.endswith("/METADATA"):
            raw = metadata_description(raw)
        text = normalize(raw) if raw is not None else ""
        verdict = (
            ("quarantine", "invalid_utf8")
            if bad_encoding
            else ("quarantine", read_error)
            if isinstance(read_error, str)
            else check(raw, text, cfg.min_chars, cfg.max_chars)
        )
        if verdict is None and source in filtered_sources:
            reason = quality_reason(text, cfg.quality)
            verdict = ("filter", reason) if reason else None
        # Exact duplicates are judged on the text before redaction (two documents that
        # differ only in an e-mail address are different documents).
        sha = text_hash(text)
        pii = _NO_PII
        if verdict is None and cfg.redact_pii:
            text, pii = redact(text)
        local_id = doc_id if isinstance(doc_id, str) and doc_id else None
        rid = record_id(source, local_id, loc, line, prefixes[source], roots[source], sha, verdict is not None and verdict[0] == "quarantine")
        stage, reason = verdict or (None, None)
        return (
            rid,
            source,
            loc,
            line,
            None if verdict else text,
            sha,
            len(text),
            stage,
            reason,
            detail if verdict else None,
            *(pii[k] for k in PII_KINDS),
        )

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        for pdf in batches:
            lines = [None if pd.isna(x) else int(x) for x in pdf.line]  # a null long arrives as NaN or NA
            rows = [one(*r) for r in zip(pdf.source, pdf.location, lines, pdf.doc_id, pdf.raw, pdf.read_error, pdf.detail)]
            yield pd.DataFrame([r for r in rows if r is not None], columns=_PROCESSED_NAMES)

    return run


def unread_files(cfg: DataConfig, listed: dict[str, list[str]], seen: set[tuple[str, str]]) -> list[tuple]:
    """Quarantine rows for the listed files that yielded no record: gone since the listing (deleted
    before or while Spark read them: ``ignoreMissingFiles`` skips them quietly) or empty (no bytes,
    only blank lines, a Parquet file without rows)."""
    rows = []
    for source, files in listed.items():
        for loc in files:
            if (source, loc) not in seen:
                gone = not os.path.exists(loc.removeprefix("file:"))
                rows.append(quarantine_row(cfg, source, loc, None, "file_vanished" if gone else "empty_file", None))
    return rows
