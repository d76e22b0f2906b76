"""Gopher-style quality heuristics (Rae et al. 2021, appendix A), per document, plain Python.

Each heuristic returns a number; :func:`quality_reason` compares them with the thresholds of
:class:`phases.config.QualityConfig` and names the first one that fails, so every dropped
document is recorded with why. Code and licence texts fail prose heuristics by design
(symbols, short lines), so sources can opt out (``data.sources[].quality_filters``).
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"\S+")
_ELLIPSIS = ("...", "…")
_BULLETS = ("•", "●", "○", "▪", "‣", "-", "*", "·")
_SYMBOLS = ("#", "...", "…")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def mean_word_length(ws: list[str]) -> float:
    return sum(len(w) for w in ws) / len(ws) if ws else 0.0


def symbol_to_word_ratio(text: str, ws: list[str]) -> float:
    """Hash marks and ellipses per word (Gopher drops > 0.1)."""
    n = sum(text.count(s) for s in _SYMBOLS)
    return n / len(ws) if ws else 0.0


def line_fractions(text: str) -> tuple[float, float]:
    """(share of lines starting with a bullet, share of lines ending with an ellipsis)."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines:
        return 0.0, 0.0
    bullets = sum(ln.startswith(_BULLETS) for ln in lines)
    ellipses = sum(ln.endswith(_ELLIPSIS) for ln in lines)
    return bullets / len(lines), ellipses / len(lines)


def duplicate_line_fraction(text: str) -> float:
    """Share of characters in lines that occur more than once (blank lines ignored)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    total = sum(len(ln) for ln in lines)
    if not total:
        return 0.0
    counts = Counter(lines)
    return sum(len(ln) for ln in lines if counts[ln] > 1) / total


def top_ngram_fraction(ws: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram, over all word characters."""
    if len(ws) < n:
        return 0.0
    grams = Counter(tuple(ws[i : i + n]) for i in range(len(ws) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(len(w) for w in ws)
    return count * sum(len(w) for w in gram) / total if total else 0.0


def duplicate_ngram_fraction(ws: list[str], n: int) -> float:
    """Characters in word n-grams that occur more than once, over all word characters (overlaps counted once)."""
    if len(ws) < n:
        return 0.0
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            for j in range(i, i + n):
                covered[j] = True
    total = sum(len(w) for w in ws)
    return sum(len(w) for w, c in zip(ws, covered) if c) / total if total else 0.0


def quality_reason(text: str, q) -> str | None:
    """The name of the first failed heuristic (``q`` is a QualityConfig), or None."""
    ws = words(text)
    if not q.min_words <= len(ws) <= q.max_words:
        return "gopher_word_count"
    mwl = mean_word_length(ws)
    if not q.min_mean_word_length <= mwl <= q.max_mean_word_length:
        return "gopher_mean_word_length"
    if symbol_to_word_ratio(text, ws) > q.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    bullets, ellipses = line_fractions(text)
    if bullets > q.max_bullet_lines:
        return "gopher_bullet_lines"
    if ellipses > q.max_ellipsis_lines:
        return "gopher_ellipsis_lines"
    if duplicate_line_fraction(text) > q.max_duplicate_line_fraction:
        return "gopher_duplicate_lines"
    for n, limit in ((2, q.max_top_2gram), (3, q.max_top_3gram), (4, q.max_top_4gram)):
        if top_ngram_fraction(ws, n) > limit:
            return f"gopher_top_{n}gram"
    for n, limit in ((5, q.max_dup_5gram), (10, q.max_dup_10gram)):
        if duplicate_ngram_fraction(ws, n) > limit:
            return f"gopher_duplicate_{n}gram"
    return None
