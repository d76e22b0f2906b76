"""MinHash signatures and LSH banding, pure numpy (no Spark): the per-batch math of near-dedup.

Shingles are defined in :mod:`phases.data.dedup.shingles`. Signatures are bit-identical to
``datasketch.MinHash(num_perm, seed, scheme=...)`` fed the same shingles with ``update`` (tests pin
this). Two shingle hash functions:

- ``"token"`` (the default): a 64-bit xxh3 hash per distinct token, combined over the n tokens of a
  shingle with numpy (a sum with a multiplier per position, then one 64-bit mix), folded to 32 bits.
  The Python work is per distinct token of a batch, not per shingle; identical to
  ``MinHash(num_perm, seed, hashfunc=token_shingle_hash(ngram))``.
- ``"sha1"``: datasketch's default ``sha1_hash32`` of the shingle bytes (one hashlib call per
  shingle; identical to ``MinHash(num_perm, seed)``).

Schemes follow datasketch 2.0: ``"affine32"`` (its default: MurmurHash3 fmix32 pre-mix, then
``a*h+b mod 2^32`` with odd ``a``) and ``"legacy"`` (``(a*h+b) mod (2^61-1)`` masked to 32 bits,
the pre-2.0 scheme). Both draw ``a, b`` from ``np.random.RandomState(seed)`` exactly as datasketch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from phases.data.dedup.shingles import _GOLDEN, _U64, _fmix64, shingles, text_lengths, text_slices, token_ids

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH32 = np.uint64((1 << 32) - 1)
SCHEMES = ("affine32", "legacy")
HASHES = ("sha1", "token")
# Rows of the (shingles x num_perm) matrix per step: small enough for the temporaries to stay in the
# CPU caches (figures: tests/benchmarks/results/dedup-speed-2026-12-01.md, notes).
_CHUNK = 1 << 12


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@dataclass(frozen=True)
class Permutations:
    """The ``num_perm`` permutation parameters of datasketch's MinHash for ``seed`` and ``scheme``."""

    num_perm: int
    seed: int = 1
    scheme: str = "affine32"
    a: np.ndarray = field(init=False, repr=False, compare=False)
    b: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
        gen = np.random.RandomState(self.seed)
        if self.scheme == "legacy":
            # datasketch draws (a, b) pairwise, one permutation at a time: the order matters.
            ab = np.array(
                [(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64)) for _ in range(self.num_perm)],
                dtype=np.uint64,
            ).T
            a, b = ab[0], ab[1]
        else:
            a = gen.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
            b = gen.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    @property
    def dtype(self):
        """datasketch stores legacy hash values as uint64, affine32 ones as uint32."""
        return np.uint64 if self.scheme == "legacy" else np.uint32

    def apply_min(self, hv: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Min over each group of 32-bit shingle hashes ``hv`` (groups begin at ``starts``): (groups, num_perm).

        The permuted values are laid out (num_perm, shingles) so the per-document min runs along
        contiguous memory, which is faster than reducing along the first axis.
        """
        a, b = self.a[:, None], self.b[:, None]
        if self.scheme == "legacy":
            phv = (a * hv.astype(np.uint64)[None, :] + b) % MERSENNE_PRIME & MAX_HASH32
        else:
            phv = a * _fmix32(hv.astype(np.uint32))[None, :]
            phv += b
        return np.minimum.reduceat(phv, starts, axis=1).T


def sha1_hashes(shingle_list: Iterable[bytes]) -> np.ndarray:
    """datasketch's sha1_hash32 (little-endian first 4 digest bytes) for each shingle."""
    sha1 = hashlib.sha1
    return np.frombuffer(b"".join([sha1(s).digest()[:4] for s in shingle_list]), dtype="<u4")


def _fmix64_int(x: int) -> int:
    """:func:`_fmix64` of one Python int (the reference, written without numpy)."""
    mask = (1 << 64) - 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & mask
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & mask
    return x ^ (x >> 33)


def _position(k: int) -> int:
    """The odd multiplier of the k-th token hash of a window (fixed: part of the "token" hash)."""
    return _fmix64_int(((k + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) | 1


def token_shingle_hash(ngram: int):
    """The ``"token"`` shingle hash as a datasketch ``hashfunc``, in plain Python (reference for tests):
    ``fmix64(sum_k position(k) * xxh3_64(token_k) + n mod 2^64) >> 32`` over the shingle's n tokens."""
    import xxhash

    def h(shingle: bytes) -> int:
        toks = shingle.split(b" ")
        acc = sum(_position(k) * xxhash.xxh3_64_intdigest(t) for k, t in enumerate(toks)) + len(toks)
        return _fmix64_int(acc & ((1 << 64) - 1)) >> 32

    return h


def _combine(token_hashes: np.ndarray, n: int) -> np.ndarray:
    """32-bit hashes of every window of ``n`` consecutive token hashes (order-sensitive: each position
    has its own odd multiplier). One mix per window, not one per token: ~3x fewer numpy passes than
    mixing after every token (the token hashes are already mixed)."""
    m = len(token_hashes) - n + 1
    h = token_hashes[:m] * _U64(_position(0))
    for k in range(1, n):
        h += token_hashes[k : k + m] * _U64(_position(k))
    return (_fmix64(h + _U64(n)) >> _U64(32)).astype(np.uint32)


def _windows(th: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of each document's token hashes ``th`` (concatenated, ``lengths`` per document)."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # Windows are computed over the whole batch, then those crossing a document end are dropped.
    if len(th) >= ngram:
        full = _combine(th, ngram)
        doc = np.repeat(np.arange(len(lengths)), lengths)[: len(full)]
        hv = full[np.arange(len(full)) + ngram <= ends[doc]]
    else:
        hv = np.zeros(0, np.uint32)
    counts = np.maximum(lengths - ngram + 1, 0)
    short = np.flatnonzero((lengths > 0) & (lengths < ngram))
    if len(short):  # a text shorter than one n-gram has one shingle: all its tokens
        at = (np.cumsum(counts) - counts)[short]
        vals = np.concatenate([_combine(th[starts[i] : ends[i]], int(lengths[i])) for i in short])
        hv = np.insert(hv, at, vals)
        counts[short] = 1
    return hv, counts


def _token_doc_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-mode shingle hashes of a batch: (hashes, per-doc counts), computed on the whole batch."""
    import xxhash

    vocab, ids, lengths = token_ids(texts)
    xx = xxhash.xxh3_64_intdigest
    th = np.array([xx(w.encode("utf-8")) for w in vocab], dtype=np.uint64)[ids] if len(ids) else np.zeros(0, np.uint64)
    return _windows(th, lengths, ngram)


def shingle_hashes(texts: Sequence[str], ngram: int, hashing: str = "sha1") -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every shingle of every text (concatenated) and the count per text."""
    if hashing == "token":
        return _token_doc_hashes(texts, ngram)
    if hashing != "sha1":
        raise ValueError(f"hashing must be one of {HASHES}, got {hashing!r}")
    sets = [shingles(t, ngram) for t in texts]
    counts = np.array([len(s) for s in sets], dtype=np.int64)
    return sha1_hashes(s for st in sets for s in st), counts


def signatures(texts: Sequence[str], perms: Permutations, ngram: int, hashing: str = "sha1") -> np.ndarray:
    """(len(texts), num_perm) MinHash signatures; a text without shingles gets the empty value (max)."""
    parts = []
    for start, stop in text_slices(text_lengths(texts)):
        hv, counts = shingle_hashes(texts[start:stop], ngram, hashing)
        parts.append(signatures_from_hashes(hv, counts, perms))
    return np.concatenate(parts) if parts else np.full((0, perms.num_perm), np.iinfo(np.uint32).max, dtype=perms.dtype)


def signatures_from_hashes(hv: np.ndarray, counts: np.ndarray, perms: Permutations) -> np.ndarray:
    n = len(counts)
    empty = np.iinfo(np.uint32).max
    sig = np.full((n, perms.num_perm), empty, dtype=perms.dtype)
    ends = np.cumsum(counts)
    doc = 0
    # Documents are processed in groups whose shingles fit one chunk, so memory stays bounded.
    while doc < n:
        last = doc
        while last < n and (last == doc or ends[last] - (ends[doc] - counts[doc]) <= _CHUNK):
            last += 1
        nonempty = [d for d in range(doc, last) if counts[d]]
        if nonempty:
            lo = ends[doc] - counts[doc]
            starts = np.array([ends[d] - counts[d] - lo for d in nonempty], dtype=np.int64)
            sig[nonempty] = perms.apply_min(hv[lo : ends[last - 1]], starts)
        doc = last
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64 keys: a 64-bit hash of each band's ``rows`` values (collisions are only false candidates)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows ({bands}*{rows}) exceeds num_perm ({sig.shape[1]})")
    s = sig[:, : bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    h = np.full((len(sig), bands), _U64(rows), dtype=np.uint64)
    for k in range(rows):
        h = _fmix64((h ^ s[:, :, k]) * _GOLDEN)
    return h.view(np.int64)


def _integrate(f, a: float, b: float, steps: int = 2000) -> float:
    x = np.linspace(a, b, steps + 1)
    return float(np.trapezoid(f(x), x))


def collision_probability(s, bands: int, rows: int):
    """Chance that two documents of Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing fp_weight*FP + fn_weight*FN areas, as datasketch's ``_optimal_param``.

    FP is the collision probability integrated below the threshold, FN the miss probability above
    it. Verification removes false positives, so callers should weight false negatives higher.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s: collision_probability(s, b, r), 0.0, threshold)
            fn = _integrate(lambda s: 1.0 - collision_probability(s, b, r), threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt
