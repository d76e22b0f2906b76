"""Strict parsing of one JSONL line into (id, text), plain Python (unit-tested without a JVM).

Spark's JSON reader is lenient (single quotes are refused only with an option, ``{...} junk``
parses as the object, an array or object ``text`` becomes its JSON text), so the data phase
reads JSONL as text lines and parses each one here with :func:`json.loads`: RFC 8259 JSON only,
``NaN``/``Infinity`` refused, the record an object, its text a string. Every line that is not
a record says why (:data:`REASONS`); a blank line is no record at all.
"""

from __future__ import annotations

import json
from typing import NamedTuple

# Why a line is not a record (the ``reason`` of its quarantine row).
REASONS = {
    "binary": "the line holds NUL bytes",
    "invalid_utf8": "the line is not UTF-8, or the text escapes a lone surrogate",
    "malformed_json": "not one strict JSON value: single quotes, trailing garbage, truncated, NaN",
    "not_an_object": "valid JSON, but a bare value (number, string, array, null) instead of an object",
    "missing_text": "the object has no text field, or it is null",
    "text_not_string": "the text field is an array, object, number or boolean",
    "invalid_id": "the id field is neither a string nor an integer",
}
_DETAIL_CHARS = 200
_BOM = "\ufeff"


class Record(NamedTuple):
    doc_id: str | None  # None: the phase derives one
    text: str | None  # None for a line that is not a record
    reason: str | None  # a key of REASONS, or None
    detail: str | None  # what exactly was wrong (the parser's message, the type found)


BLANK = Record(None, None, "blank", None)  # an empty or whitespace-only line: skipped, not counted


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _type_name(value) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def _bad(reason: str, detail: str) -> Record:
    return Record(None, None, reason, detail[:_DETAIL_CHARS])


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_record(data: bytes | bytearray | None, text_field: str, id_field: str | None, first_line: bool = False) -> Record:
    """One JSONL line (raw bytes, no line terminator) as a :class:`Record`; :data:`BLANK` for a blank line."""
    if data is None or not bytes(data).strip():
        return BLANK
    data = bytes(data)
    if b"\x00" in data:
        return _bad("binary", f"NUL byte at offset {data.index(0)}")
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return _bad("invalid_utf8", f"byte 0x{data[err.start]:02x} at offset {err.start}")
    if first_line and line.startswith(_BOM):  # a byte order mark some editors write at the start of a file
        line = line[1:]
    try:
        value = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; RecursionError: nested too deep
        return _bad("malformed_json", str(err) or type(err).__name__)
    if not isinstance(value, dict):
        return _bad("not_an_object", _type_name(value))
    text = value.get(text_field)
    if text is None:
        return _bad("missing_text", f"{text_field!r} is null" if text_field in value else f"no {text_field!r} field")
    if not isinstance(text, str):
        return _bad("text_not_string", f"{text_field!r} is {_type_name(text)}")
    doc_id = value.get(id_field) if id_field else None
    if doc_id is not None and not isinstance(doc_id, str):
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        else:
            return _bad("invalid_id", f"{id_field!r} is {_type_name(doc_id)}")
    if not _utf8_ok(text) or (doc_id is not None and not _utf8_ok(doc_id)):
        return _bad("invalid_utf8", "a \\u escape of a lone surrogate")
    return Record(doc_id or None, text, None, None)
