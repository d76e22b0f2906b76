"""Per-document logic, plain Python (unit-tested without a JVM); Spark applies it batch-wise.

``normalize`` canonicalizes text so that exact duplicates hash alike; ``check`` decides
whether a document is kept, filtered (a quality decision) or quarantined (bad input).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from email.parser import Parser

# Control characters other than tab and newline carry no meaning in training text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_MANY_BLANKS = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFC, Unix newlines, no control characters, no trailing spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_WS.sub("\n", text)
    text = _MANY_BLANKS.sub("\n\n", text)
    return text.strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def metadata_description(raw: str) -> str:
    """A package's long description from its METADATA file (the body, or the Description header)."""
    msg = Parser().parsestr(raw)
    body = msg.get_payload()
    if isinstance(body, str) and body.strip():
        return body
    desc = msg.get("Description") or ""
    # Old-style headers indent continuation lines with 8 spaces or '|'.
    return re.sub(r"\n(?: {8}|\|)", "\n", desc)


def decode(data: bytes | bytearray | None) -> tuple[str | None, bool]:
    """(text, bad_encoding): strict UTF-8; undecodable input is kept (replaced) for the record."""
    if data is None:
        return None, False
    try:
        return bytes(data).decode("utf-8"), False
    except UnicodeDecodeError:
        return bytes(data).decode("utf-8", errors="replace"), True


def check(raw: str | None, text: str, min_chars: int, max_chars: int) -> tuple[str, str] | None:
    """(stage, reason) for a document that does not go through, or None to keep it.

    ``quarantine`` marks bad input (unreadable, binary, giant); ``filter`` marks a quality
    decision on valid text. Both are recorded, never silently dropped.
    """
    if raw is None:
        return "quarantine", "missing_text"
    if "\x00" in raw:
        return "quarantine", "binary"
    if "\ufffd" in raw:
        return "quarantine", "invalid_utf8"
    if len(raw) > max_chars:
        return "quarantine", "too_long"
    if not text:
        return "filter", "empty"
    if len(text) < min_chars:
        return "filter", "too_short"
    return None
