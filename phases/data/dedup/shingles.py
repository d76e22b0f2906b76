"""Shingles and their exact sets, pure numpy and Arrow (no Spark): what near-dedup compares.

Shingles are word n-grams: ``text.lower().split()`` (Unicode whitespace), ``ngram`` consecutive
tokens joined by one space, UTF-8 encoded. A text with fewer than ``ngram`` tokens has one
shingle (all its tokens); an empty text has none. Lowercasing and whitespace splitting make
re-wrapped or re-cased copies identical, which is what near-dedup should catch.
ASCII texts are tokenized in Arrow (C++), the others in Python, with one token numbering.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def tokens(text: str) -> list[str]:
    return text.lower().split()


def shingles(text: str, ngram: int) -> set[bytes]:
    """The set of word n-grams of ``text`` as UTF-8 bytes (see the module docstring)."""
    return {" ".join(t).encode("utf-8") for t in shingle_tuples(text, ngram)}


def shingle_tuples(text: str, ngram: int) -> set[tuple[str, ...]]:
    """The shingles of ``text`` as token tuples: in one-to-one correspondence with :func:`shingles`.

    Tokens hold no whitespace, so joining a tuple with one space is injective (and a shorter tuple
    never equals a full one): Jaccard over these sets equals Jaccard over :func:`shingles`, exactly.
    Built by ``zip`` in C, ~4x faster than joining and encoding every shingle.
    """
    tk = tokens(text)
    if not tk:
        return set()
    if len(tk) < ngram:
        return {tuple(tk)}
    return set(zip(*[tk[i:] for i in range(ngram)]))


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity; two empty sets count as 0 (an empty text duplicates nothing)."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _token_ids_python(texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct tokens, token index per occurrence, tokens per text) with ``str.lower().split()``."""
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        tk = tokens(t)
        lengths[i] = len(tk)
        ids.extend([vocab.setdefault(w, len(vocab)) for w in tk])
    return list(vocab), np.array(ids, dtype=np.int64), lengths


def string_buffers(arr) -> tuple[np.ndarray, memoryview]:
    """(offsets, data) of an Arrow string array, read in place: text i is ``data[offsets[i]:offsets[i + 1]]``."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    if not len(arr):
        return np.zeros(1, width), memoryview(b"")
    _, offsets, data = arr.buffers()
    at = np.frombuffer(offsets, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    return at, memoryview(data) if data is not None else memoryview(b"")


def _has_separator_controls(arr) -> bool:
    """Whether any text of the Arrow string array holds one of the bytes 0x1c-0x1f."""
    at, data = string_buffers(arr)
    raw = np.frombuffer(data, dtype=np.uint8)[at[0] : at[-1]]
    return bool(np.any((raw - np.uint8(0x1C)) < np.uint8(4)))


def _token_ids_arrow(texts) -> tuple[list[str], np.ndarray, np.ndarray]:
    """As :func:`_token_ids_python` for ASCII texts, tokenized and dictionary-encoded in Arrow (C++).

    For ASCII, Arrow's ``ascii_lower`` and ``utf8_split_whitespace`` equal Python's ``lower`` and
    ``split`` (all 128 code points checked in the tests); non-ASCII texts take the Python path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, type=pa.string())
    low = pc.ascii_lower(arr)
    # Arrow's ASCII whitespace lacks \x1c-\x1f, which Python's split() counts: texts with one (rare)
    # take the Unicode split, ~2x slower.
    split = pc.utf8_split_whitespace(low) if _has_separator_controls(low) else pc.ascii_split_whitespace(low)
    if isinstance(split, pa.ChunkedArray):
        split = split.combine_chunks()
    per_text = np.diff(split.offsets.to_numpy(zero_copy_only=False).astype(np.int64))
    flat = split.flatten()
    # Arrow keeps empty strings around leading/trailing/blank runs; Python's split() drops them.
    nonempty = pc.greater(pc.binary_length(flat), 0)
    keep = np.asarray(nonempty.to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.bincount(np.repeat(np.arange(len(per_text)), per_text)[keep], minlength=len(per_text)).astype(np.int64)
    enc = pc.dictionary_encode(flat.filter(nonempty))
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), lengths


def token_ids(texts) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct tokens, token index per occurrence in text order, tokens per text) of :func:`tokens`.

    ASCII texts are tokenized in Arrow, the others in Python; both share one numbering, so equal
    token ids mean equal tokens across all ``texts``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), type=pa.string())
    arr = pc.fill_null(arr, "")
    ascii_ = np.asarray(pc.string_is_ascii(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if ascii_.all():
        return _token_ids_arrow(arr)
    if not ascii_.any():
        return _token_ids_python(arr.to_pylist())
    order = np.concatenate([np.flatnonzero(ascii_), np.flatnonzero(~ascii_)])
    n_ascii = int(ascii_.sum())
    va, ia, la = _token_ids_arrow(arr.take(pa.array(order[:n_ascii])))
    vb, ib, lb = _token_ids_python(arr.take(pa.array(order[n_ascii:])).to_pylist())
    # One numbering for both vocabularies: Arrow dictionary-encodes their concatenation.
    enc = pc.dictionary_encode(pa.array(va + vb, type=pa.string()))
    remap = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ids = np.concatenate([remap[: len(va)][ia], remap[len(va) :][ib]])
    lengths = np.concatenate([la, lb])
    # Back to the input order: gather each text's segment.
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    seg_start = np.cumsum(lengths) - lengths
    out_len = lengths[inv]
    idx = np.repeat(seg_start[inv] - (np.cumsum(out_len) - out_len), out_len) + np.arange(out_len.sum())
    return enc.dictionary.to_pylist(), ids[idx], out_len


class ShingleSets:
    """The shingle sets of a batch of texts as sorted integer keys, for exact Jaccard in numpy.

    A key is a hash of a shingle's token ids (one token numbering for the batch, :func:`token_ids`).
    Keys are trusted only where they are proven injective: every two windows of the batch that share
    a key are compared token by token, and a text involved in a collision of two different shingles
    is marked (``jaccard`` then returns None and the caller falls back to :func:`shingle_tuples`).
    So :meth:`jaccard` equals :func:`jaccard` over :func:`shingle_tuples`, exactly.
    """

    def __init__(self, texts, ngram: int):
        _, ids, lengths = token_ids(texts)
        n = len(lengths)
        self.tid = np.concatenate([ids.astype(np.uint64) + _U64(1), np.zeros(ngram, np.uint64)])  # 0 pads short windows
        ends = np.cumsum(lengths)
        counts = np.where(lengths >= ngram, lengths - ngram + 1, (lengths > 0).astype(np.int64))
        doc = np.repeat(np.arange(n), counts)
        self.pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + (ends - lengths)[doc]
        self.wlen = np.minimum(lengths[doc], ngram)
        self.ngram = ngram
        # Full windows hashed over the whole token array (contiguous), then picked; short ones gathered.
        span = max(len(ids) - ngram + 1, 0)
        full = np.full(span, _U64(ngram), np.uint64)
        for k in range(ngram):
            full = _fmix64((full ^ self.tid[k : k + span]) * _GOLDEN)
        short = self.wlen < ngram
        h = np.empty(len(self.pos), np.uint64)
        h[~short] = full[self.pos[~short]]
        if short.any():
            w = np.flatnonzero(short)
            hs = np.full(len(w), _U64(ngram), np.uint64)
            for k in range(ngram):
                hs = _fmix64((hs ^ np.where(k < self.wlen[w], self.tid[self.pos[w] + k], _U64(0))) * _GOLDEN)
            h[w] = hs
        # One sort, text-major: the text's index in the high bits, the hash in the low ones.
        bits = max(1, int(n).bit_length())
        comp = (doc.astype(np.uint64) << _U64(64 - bits)) | (h >> _U64(bits))
        order = np.argsort(comp)
        comp = comp[order]
        first = np.concatenate([[True], comp[1:] != comp[:-1]]) if len(comp) else np.zeros(0, bool)
        self.keys = comp[first] & _U64((1 << (64 - bits)) - 1)
        self.window = order[first]  # a window standing for each distinct key of each text
        self.bounds = np.searchsorted(doc[self.window], np.arange(n + 1))
        a, b = order[:-1][~first[1:]], order[1:][~first[1:]]  # repeats of a key within a text
        self.unsure = set(doc[a[self._collisions(a, b)]].tolist())
        # Across texts: all windows of a run of equal keys must hold one shingle; if a run holds two,
        # every text in the run is unsure (two of its members need not be neighbours in the run).
        by_key = np.argsort(self.keys)
        same = self.keys[by_key[1:]] == self.keys[by_key[:-1]]
        at = np.flatnonzero(same)
        bad = at[self._collisions(self.window[by_key[at]], self.window[by_key[at + 1]])]
        if len(bad):
            run = np.concatenate([[0], np.cumsum(~same)])  # run number of each sorted key
            self.unsure |= set(doc[self.window[by_key[np.isin(run, run[bad])]]].tolist())

    def _collisions(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mask of window pairs (a[i], b[i]) that hold different shingles."""
        la, pa, pb = self.wlen[a], self.pos[a], self.pos[b]
        differ = la != self.wlen[b]
        some_short = bool(len(la)) and int(la.min()) < self.ngram
        for k in range(self.ngram):
            ne = self.tid[pa + k] != self.tid[pb + k]
            differ |= (ne & (k < la)) if some_short else ne
        return differ

    def size(self, i: int) -> int:
        return int(self.bounds[i + 1] - self.bounds[i])

    def jaccard(self, i: int, j: int) -> float | None:
        """Exact Jaccard of texts i and j (0 if either has no shingle); None if not proven exact."""
        if i in self.unsure or j in self.unsure:
            return None
        ka = self.keys[self.bounds[i] : self.bounds[i + 1]]
        kb = self.keys[self.bounds[j] : self.bounds[j + 1]]
        if not len(ka) or not len(kb):
            return 0.0
        at = np.searchsorted(kb, ka)
        at[at == len(kb)] = 0
        inter = int(np.count_nonzero(kb[at] == ka))
        return inter / (len(ka) + len(kb) - inter)

    def jaccards(self, i: int, js: list[int]) -> list[float | None]:
        """:meth:`jaccard` of text i with each of ``js``, in one pass of numpy over their keys."""
        if i in self.unsure or not js:
            return [None] * len(js)
        ka = self.keys[self.bounds[i] : self.bounds[i + 1]]
        lo, hi = self.bounds[js], self.bounds[np.asarray(js) + 1]
        sizes = hi - lo
        if not len(ka):
            return [None if j in self.unsure else 0.0 for j in js]
        starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)  # each member's keys, gathered in one take
        kb = self.keys[starts + np.arange(int(sizes.sum()))]
        at = np.minimum(np.searchsorted(ka, kb), len(ka) - 1)
        inter = np.bincount(np.repeat(np.arange(len(js)), sizes)[ka[at] == kb], minlength=len(js))
        union = len(ka) + sizes - inter
        return [None if j in self.unsure else (float(x / u) if n else 0.0) for j, x, u, n in zip(js, inter, union, sizes)]


class GroupBits:
    """Exact Jaccards among a group of texts of one :class:`ShingleSets`, as bitsets over the group's
    distinct keys: an intersection is a popcount of AND-ed words. Cheap where the texts share most of
    their shingles (a cluster's copies), where one sorted-key search per pair costs ~100x more.
    ``rows``: the texts' indices in ``sets``; :meth:`jaccards` takes positions in ``rows``.
    """

    def __init__(self, sizes: np.ndarray, bits: np.ndarray):
        self.sizes, self.bits = sizes, bits

    @classmethod
    def build(cls, sets: ShingleSets, rows: np.ndarray, max_bytes: int) -> "GroupBits | None":
        """The bitsets of texts ``rows`` of ``sets``, or None when they would take more than ``max_bytes``."""
        lo, hi = sets.bounds[rows], sets.bounds[rows + 1]
        sizes = (hi - lo).astype(np.int64)
        starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
        distinct, col = np.unique(sets.keys[starts + np.arange(int(sizes.sum()))], return_inverse=True)
        words = max(1, (len(distinct) + 63) // 64)
        if len(rows) * words * 8 > max_bytes:
            return None
        cell = np.repeat(np.arange(len(rows)), sizes) * words + (col >> 6)
        bits = np.zeros(len(rows) * words, np.uint64)
        np.bitwise_or.at(bits, cell, np.left_shift(_U64(1), (col & 63).astype(np.uint64)))
        return cls(sizes, bits.reshape(len(rows), words))

    def jaccards(self, i: int, js: list[int]) -> list[float]:
        inter = np.bitwise_count(self.bits[js] & self.bits[i]).sum(axis=1, dtype=np.int64)
        sizes = self.sizes[js]
        union = self.sizes[i] + sizes - inter
        return [float(x / u) if n and self.sizes[i] else 0.0 for x, u, n in zip(inter.tolist(), union.tolist(), sizes.tolist())]


# Texts are hashed in slices of about this many bytes: the vectorized hashing slows down once a slice's
# arrays outgrow the CPU caches, and Spark's Arrow batches (10,000 rows) are larger than that.
SLICE_TEXT_BYTES = 4 << 20


def text_slices(lengths, max_bytes: int | None = None) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of texts with ``lengths`` of about ``max_bytes`` each (>= 1 text;
    default :data:`SLICE_TEXT_BYTES`)."""
    max_bytes = SLICE_TEXT_BYTES if max_bytes is None else max_bytes
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    out, start, n = [], 0, len(ends)
    while start < n:
        base = int(ends[start - 1]) if start else 0
        stop = min(n, max(start + 1, int(np.searchsorted(ends, base + max_bytes, side="right"))))
        out.append((start, stop))
        start = stop
    return out


def text_lengths(texts) -> np.ndarray:
    """Byte lengths (Arrow input) or character lengths (Python strings) of ``texts``; null/None = 0."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return np.asarray(pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.fromiter((len(t) if t else 0 for t in texts), dtype=np.int64, count=len(texts))
