"""MinHash signatures against datasketch itself, banding choice, shingles and exact Jaccard (pure numpy)."""

import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from phases.data.dedup.minhash import Permutations, band_keys, collision_probability, optimal_bands, signatures, token_shingle_hash
from phases.data.dedup.shingles import jaccard, shingles


def _texts(n, seed=0):
    rng = random.Random(seed)
    words = ["Alpha", "beta", "gamma", "δέλτα", "epsilon", "ζ", "eta", "theta", "iota", "kappa", "naïve", "x"] + [f"w{i}" for i in range(300)]
    # Lengths 0..60 cover empty texts, texts shorter than one n-gram and ordinary ones.
    return [rng.choice([" ", "\n", "\t "]).join(rng.choice(words) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def _datasketch(text, num_perm, seed, scheme, ngram, hashfunc=None):
    m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme, hashfunc=hashfunc)
    for s in shingles(text, ngram):
        m.update(s)
    return m.hashvalues


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("num_perm,seed,ngram", [(128, 1, 5), (64, 42, 3), (7, 0, 1)])
def test_sha1_signatures_equal_datasketch(scheme, num_perm, seed, ngram):
    texts = _texts(150, seed)
    sig = signatures(texts, Permutations(num_perm, seed, scheme), ngram, "sha1")
    for text, row in zip(texts, sig):
        expected = _datasketch(text, num_perm, seed, scheme, ngram)
        assert row.dtype == expected.dtype and np.array_equal(row, expected), text


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_token_signatures_equal_datasketch_with_token_hashfunc(scheme):
    texts = _texts(150, 7)
    sig = signatures(texts, Permutations(128, 3, scheme), 5, "token")
    for text, row in zip(texts, sig):
        assert np.array_equal(row, _datasketch(text, 128, 3, scheme, 5, token_shingle_hash(5))), text


def test_token_hash_is_order_sensitive_and_numpy_equals_the_reference():
    import xxhash

    from phases.data.dedup.minhash import _combine

    h = token_shingle_hash(3)
    assert len({h(b"a b c"), h(b"b a c"), h(b"c b a"), h(b"a b"), h(b"a")}) == 5
    tokens = [f"t{i}".encode() for i in range(12)]
    th = np.array([xxhash.xxh3_64_intdigest(t) for t in tokens], dtype=np.uint64)
    for n in range(1, 7):
        want = [token_shingle_hash(n)(b" ".join(tokens[i : i + n])) for i in range(12 - n + 1)]
        assert _combine(th, n).tolist() == want


def test_permutations_are_datasketchs():
    for scheme in ("affine32", "legacy"):
        p = Permutations(32, 9, scheme)
        a, b = MinHash(num_perm=32, seed=9, scheme=scheme).permutations
        assert np.array_equal(p.a, a) and np.array_equal(p.b, b)


def test_batch_chunking_does_not_change_signatures(monkeypatch):
    from phases.data.dedup import minhash

    texts = _texts(60, 3)
    whole = signatures(texts, Permutations(16, 1), 2)
    monkeypatch.setattr(minhash, "_CHUNK", 5)  # forces many small chunks, some docs larger than one
    assert np.array_equal(signatures(texts, Permutations(16, 1), 2), whole)


def test_shingles_definition():
    assert shingles("A b  C\nd", 2) == {b"a b", b"b c", b"c d"}
    assert shingles("Only two", 5) == {b"only two"}
    assert shingles(" \n ", 5) == set()
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert jaccard(set(), set()) == 0.0


def test_optimal_bands_matches_datasketch_and_favours_recall():
    assert optimal_bands(0.8, 128) == _optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)
    assert optimal_bands(0.5, 64, 0.3, 0.7) == _optimal_param(0.5, 64, 0.3, 0.7)
    b, r = optimal_bands(0.8, 128, 0.01, 0.99)
    # Recall-oriented: a pair at the threshold collides far more often than with equal weights.
    assert collision_probability(0.8, b, r) > 0.98 > 0.5 > collision_probability(0.8, 9, 13)
    with pytest.raises(ValueError, match="threshold"):
        optimal_bands(1.0, 128)


def test_band_keys_equal_iff_band_equal():
    sig = signatures(["a b c d e f g h", "a b c d e f g h", "z y x w v u t s"], Permutations(8, 1), 2)
    k = band_keys(sig, 4, 2)
    assert k.shape == (3, 4) and np.array_equal(k[0], k[1]) and not np.any(k[0] == k[2])
    sig2 = sig.copy()
    sig2[1, 3] ^= 1  # one value of band 1 changes: only that band's key changes
    k2 = band_keys(sig2, 4, 2)
    assert [bool(x) for x in (k2[0] == k2[1])] == [True, False, True, True]


def test_token_hashing_arrow_path_equals_python_tokenization():
    """ASCII texts are tokenized in Arrow, others in Python: both must split and lowercase as str.lower().split()."""
    import xxhash

    from phases.data.dedup import minhash
    from phases.data.dedup import shingles as sh

    rng = random.Random(4)
    ascii_chars = [chr(i) for i in range(128)]
    texts = ["".join(rng.choice(ascii_chars + ["ab", "Cd", " "] * 8) for _ in range(rng.randint(0, 80))) for _ in range(200)]
    texts += _texts(50, 9) + ["", " ", "  lead and trail  ", "\x1cfs\x1fus\x0bvt"]
    rng.shuffle(texts)  # ASCII and non-ASCII documents interleaved in one batch
    hv, counts = minhash._token_doc_hashes(texts, 3)
    vocab, ids, lengths = sh._token_ids_python(texts)
    th = np.array([xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in vocab], dtype=np.uint64)[ids]
    ref_hv, ref_counts = minhash._windows(th, lengths, 3)
    assert np.array_equal(counts, ref_counts) and np.array_equal(hv, ref_hv)


@pytest.mark.parametrize("separators", [False, True])
def test_arrow_tokenization_equals_python_split(separators):
    """Arrow's ASCII split serves batches without the 0x1c-0x1f separators (Python's split() counts them
    as whitespace, Arrow's ASCII split does not); a batch with one takes the Unicode split."""
    from phases.data.dedup import shingles as minhash

    rng = random.Random(5)
    chars = [chr(i) for i in range(128) if separators or not 0x1C <= i <= 0x1F]
    texts = ["".join(rng.choice(chars + ["ab", "Cd", " "] * 8) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    assert minhash._has_separator_controls(__import__("pyarrow").array(texts)) == separators
    vocab, ids, lengths = minhash._token_ids_arrow(texts)
    assert [[vocab[i] for i in ids[a - n : a]] for a, n in zip(np.cumsum(lengths), lengths)] == [t.lower().split() for t in texts]


def _mixed_texts():
    rng = random.Random(8)
    base = _texts(40, 11)
    near = [" ".join(w if rng.random() > 0.1 else "edit" for w in t.split()) for t in base]  # near copies share most shingles
    return base + near + ["", "   ", "one", "two words", "Four Words In Caps", "naïve café x y z"] + [t.upper() for t in base[:5]]


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_shingle_sets_jaccard_is_exact(ngram):
    """The numpy shingle sets give the same Jaccard as Python sets for every pair: texts with and
    without non-ASCII, shorter than one n-gram, empty, near copies."""
    from phases.data.dedup.shingles import ShingleSets, shingle_tuples

    texts = _mixed_texts()
    sets = ShingleSets(texts, ngram)
    ref = [shingle_tuples(t, ngram) for t in texts]
    assert [sets.size(i) for i in range(len(texts))] == [len(r) for r in ref]
    for i in range(len(texts)):
        for j in range(i, len(texts)):
            assert sets.jaccard(i, j) == jaccard(ref[i], ref[j]), (texts[i], texts[j])
        assert sets.jaccards(i, list(range(len(texts)))) == [jaccard(ref[i], r) for r in ref]  # one against many


@pytest.mark.parametrize("keys", [0xF, 0xFFF])
def test_shingle_sets_never_trust_a_key_collision(monkeypatch, keys):
    """With a hash that collides all the time (16 keys) or now and then (4096 keys), every answer is
    either exact or None (the caller's cue to use Python sets): a collision cannot make two texts
    look alike."""
    from phases.data.dedup import shingles as minhash

    fmix64 = minhash._fmix64
    monkeypatch.setattr(minhash, "_fmix64", lambda h: fmix64(h) & np.uint64(keys))
    texts = _mixed_texts()
    sets = minhash.ShingleSets(texts, 3)
    ref = [minhash.shingle_tuples(t, 3) for t in texts]
    answers = [(sets.jaccard(i, j), jaccard(ref[i], ref[j])) for i in range(len(texts)) for j in range(len(texts))]
    assert [sets.jaccards(i, list(range(len(texts)))) for i in range(len(texts))] == [
        [sets.jaccard(i, j) for j in range(len(texts))] for i in range(len(texts))
    ]
    assert any(got is None for got, _ in answers)  # collisions were caught
    assert all(got is None or got == want for got, want in answers)


def test_text_digests_read_arrow_buffers_in_place():
    """SHA-256 of each text's UTF-8 bytes, also for a sliced array (offset) and an empty one."""
    import hashlib

    import pyarrow as pa

    from phases.data.dedup.signatures import text_digests

    texts = ["", "a", "naïve café", "x" * 1000, "tail"]
    arr = pa.array(texts).slice(1, 3)
    assert text_digests(arr, [0, 1, 2]) == [hashlib.sha256(t.encode()).digest() for t in texts[1:4]]
    assert text_digests(pa.array([], pa.string()), []) == []


def test_shingle_sets_distrust_every_text_of_a_colliding_run(monkeypatch):
    """Keys of "a" and "b" collide (a parity hash): texts holding either may not be compared by key,
    including the ones that are not next to each other in the sorted run of that key."""
    from phases.data.dedup import shingles as minhash

    monkeypatch.setattr(minhash, "_fmix64", lambda h: h & np.uint64(1))
    texts = ["a c", "a", "a", "b", "b", "c"]  # token ids a=0, c=1, b=2: a and b share a key
    sets = minhash.ShingleSets(texts, 1)
    assert sets.unsure >= {0, 1, 2, 3, 4}
    assert all(sets.jaccard(1, j) is None for j in (2, 3, 4))


def test_text_slices_cover_every_text_once_in_bounded_slices():
    from phases.data.dedup.shingles import text_slices

    lengths = [5, 1, 9, 30, 2, 2, 2, 0, 7]
    slices = text_slices(lengths, max_bytes=10)
    assert [i for a, b in slices for i in range(a, b)] == list(range(len(lengths)))
    # Each slice stays within the budget unless a single text alone exceeds it.
    assert all(sum(lengths[a:b]) <= 10 or b - a == 1 for a, b in slices)
    assert (3, 4) in slices and text_slices([], 10) == []


def test_signatures_in_slices_equal_one_batch(monkeypatch):
    import numpy as np

    from phases.data.dedup import minhash, shingles

    texts = [f"doc {i} " + " ".join(f"w{(i * j) % 97}" for j in range(40)) for i in range(30)]
    perms = minhash.Permutations(64, 3)
    whole = minhash.signatures(texts, perms, 3, "token")
    monkeypatch.setattr(shingles, "SLICE_TEXT_BYTES", 200)
    assert len(shingles.text_slices(shingles.text_lengths(texts))) > 10
    assert np.array_equal(minhash.signatures(texts, perms, 3, "token"), whole)
