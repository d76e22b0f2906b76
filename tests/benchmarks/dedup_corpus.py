"""Corpora and ground truth for the near-dedup benchmarks.

- ``synthetic_corpus``: Zipf-distributed random words, 1-5 KB per document; a share of the documents
  are near copies of a base document at a known word-edit rate (substitutions, insertions, deletions).
- ``heavy_tailed_corpus``: the same kind of documents, in near-duplicate clusters whose sizes follow a
  power law (most documents unique, a few clusters of hundreds of copies: boilerplate, mirrors).
- ``real_corpus``: text from this machine: the stdlib's .py files and site-packages licence files
  (many licences are near-identical MIT/BSD/Apache texts: real near-duplicates).
- ``true_pairs``: every pair with exact Jaccard >= threshold over the same shingles as the pipeline,
  through a shingle inverted index (the sparse doc x shingle matrix times its transpose). Shingles are
  numbered by 64-bit keys (a collision among the corpus' shingles is improbable: ~1e-4 for 10^8).
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np


def _vocabulary(rng: np.random.Generator, size: int = 30_000) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size)
    return ["".join(rng.choice(letters, n)) + str(i % 7 or "") for i, n in enumerate(lengths)]


def edit(rng: random.Random, words: list[str], rate: float, vocab: list[str]) -> list[str]:
    """Each word is substituted, deleted or followed by an insertion with probability ``rate``."""
    out = []
    for w in words:
        if rng.random() >= rate:
            out.append(w)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(rng.choice(vocab))
        elif op == 2:
            out += [w, rng.choice(vocab)]
    return out


def synthetic_corpus(
    n_docs: int, dup_share: float = 0.3, edit_rates=(0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04), seed: int = 0
) -> list[tuple[str, str]]:
    """(id, text) rows; ids are shuffled so a near copy sorts before its base about half the time."""
    nrng = np.random.default_rng(seed)
    rng = random.Random(seed)
    vocab = _vocabulary(nrng)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(p / p.sum())  # sampling by searchsorted: rng.choice(p=...) rebuilds this per call
    n_dups = int(n_docs * dup_share)
    bases: list[list[str]] = []
    for _ in range(n_docs - n_dups):
        target = nrng.integers(1000, 5000)  # bytes; ~6.5 bytes per word with its space
        picks = np.minimum(np.searchsorted(cdf, nrng.random(int(target / 6.5))), len(vocab) - 1)
        bases.append([vocab[i] for i in picks])
    docs = [" ".join(b) for b in bases]
    for _ in range(n_dups):
        docs.append(" ".join(edit(rng, bases[rng.randrange(len(bases))], rng.choice(edit_rates), vocab)))
    ids = [f"doc{i:07d}" for i in range(n_docs)]
    rng.shuffle(ids)
    return list(zip(ids, docs))


def heavy_tailed_corpus(
    n_docs: int, alpha: float = 1.8, max_copies: int = 600, edit_rates=(0.005, 0.01, 0.015, 0.02, 0.03), seed: int = 0
) -> list[tuple[str, str]]:
    """(id, text) rows in clusters of a base document and its near copies; a cluster's size k is drawn
    with P(k) ~ k^-alpha for k in 1..max_copies (alpha 1.8: ~60% of clusters single, a few of hundreds).
    Copies are edited from their base at a rate drawn from ``edit_rates``; ids are shuffled."""
    nrng = np.random.default_rng(seed)
    rng = random.Random(seed)
    vocab = _vocabulary(nrng)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(p / p.sum())
    sizes_p = np.arange(1, max_copies + 1, dtype=float) ** -alpha
    docs: list[str] = []
    while len(docs) < n_docs:
        k = min(int(nrng.choice(max_copies, p=sizes_p / sizes_p.sum())) + 1, n_docs - len(docs))
        picks = np.minimum(np.searchsorted(cdf, nrng.random(int(nrng.integers(1000, 5000) / 6.5))), len(vocab) - 1)
        base = [vocab[i] for i in picks]
        docs.append(" ".join(base))
        docs += [" ".join(edit(rng, base, rng.choice(edit_rates), vocab)) for _ in range(k - 1)]
    ids = [f"doc{i:07d}" for i in range(n_docs)]
    rng.shuffle(ids)
    return list(zip(ids, docs))


def real_corpus(max_bytes: int = 200_000) -> list[tuple[str, str]]:
    """The stdlib's .py files and site-packages licence files as (path, text)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    files += sorted(p for pat in ("*LICENSE*", "*LICENCE*", "*COPYING*") for p in site.rglob(pat) if p.is_file())
    rows = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if 0 < len(data) <= max_bytes:
            rows.append((str(f), data.decode("utf-8", errors="replace")))
    return rows


def true_pairs(rows: list[tuple[str, str]], ngram: int, threshold: float) -> dict[tuple[str, str], float]:
    """{(a, b): J} for a < b with Jaccard >= threshold over the pipeline's shingles (numbered by 64-bit keys)."""
    from scipy import sparse

    ids = [r[0] for r in rows]
    keys, indptr = [], [0]
    for start in range(0, len(rows), 2000):
        texts = [t for _, t in rows[start : start + 2000]]
        sets = _text_keys(texts, ngram)
        for k in sets:
            keys.append(k)
            indptr.append(indptr[-1] + len(k))
    flat = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    _, col = np.unique(flat, return_inverse=True)
    x = sparse.csr_matrix((np.ones(len(col), np.int32), col, np.array(indptr)), shape=(len(rows), int(col.max(initial=-1)) + 1))
    sizes = np.diff(x.indptr)
    inter = sparse.triu(x @ x.T, k=1).tocoo()  # posting lists (columns) give every pair sharing a shingle
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac >= threshold
    out = {}
    for i, j, v in zip(inter.row[keep], inter.col[keep], jac[keep]):
        a, b = sorted((ids[i], ids[j]))
        out[(a, b)] = float(v)
    return out


def _text_keys(texts: list[str], ngram: int) -> list[np.ndarray]:
    """Each text's distinct shingles as 64-bit keys that do not depend on the batch: tokens are numbered
    by a 64-bit hash of their text (xxh3), then windows hashed as ShingleSets hashes token ids."""
    import xxhash

    from phases.data.dedup.shingles import _GOLDEN, _fmix64, token_ids

    vocab, tid, lengths = token_ids(texts)
    th = np.array([xxhash.xxh3_64_intdigest(w.encode()) for w in vocab], np.uint64)[tid] if len(tid) else np.zeros(0, np.uint64)

    def windows(t, w):
        h = np.full(len(t) - w + 1, np.uint64(w), np.uint64)
        for k in range(w):
            h = _fmix64((h ^ t[k : k + len(h)]) * _GOLDEN)
        return h

    ends = np.cumsum(lengths)
    full = windows(th, ngram) if len(th) >= ngram else np.zeros(0, np.uint64)
    doc = np.repeat(np.arange(len(lengths)), lengths)[: len(full)]
    ok = np.arange(len(full)) + ngram <= ends[doc]  # windows crossing a document end are dropped
    doc, h = doc[ok], full[ok]
    short = [i for i, n in enumerate(lengths) if 0 < n < ngram]  # one shingle: all its tokens
    if short:
        doc = np.concatenate([doc, np.array(short)])
        h = np.concatenate([h] + [windows(th[ends[i] - lengths[i] : ends[i]], int(lengths[i])) for i in short])
    order = np.lexsort((h, doc))
    doc, h = doc[order], h[order]
    first = np.r_[True, (doc[1:] != doc[:-1]) | (h[1:] != h[:-1])] if len(h) else np.zeros(0, bool)
    doc, h = doc[first], h[first]
    out = np.split(h, np.searchsorted(doc, np.arange(1, len(lengths))))
    return out


def components(ids: list[str], pairs) -> dict[str, str]:
    """id -> smallest id of its connected component over ``pairs`` (union-find, the exact reference)."""
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in ids}
