"""Deduplication: normalization, exact hashes, MinHash accuracy, LSH parameters, clustering, determinism."""

from __future__ import annotations

import multiprocessing
import pickle
import random
import re

import numpy as np
import pytest

from lit_llm.prepare.dedup import (
    DedupConfig,
    MinHasher,
    estimated_jaccard,
    exact_duplicate_of,
    exact_hashes,
    lsh_params,
    near_duplicate_clusters,
    normalize_for_dedup,
)
from lit_llm.errors import ConfigError


def s_curve(s: float, bands: int, rows: int) -> float:
    return 1 - (1 - s**rows) ** bands


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = normalize_for_dedup(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def random_docs(rng: random.Random, count: int, words: int, vocab_size: int = 5000) -> list[list[str]]:
    vocab = [f"w{i}" for i in range(vocab_size)]
    return [rng.choices(vocab, k=words) for _ in range(count)]


def plant(rng: random.Random, doc: list[str], fraction: float, vocab_size: int = 5000) -> list[str]:
    """A copy with one contiguous span of `fraction` of the words replaced by fresh random words."""
    span = max(1, round(len(doc) * fraction))
    start = rng.randrange(len(doc) - span + 1)
    fresh = [f"x{rng.randrange(vocab_size)}" for _ in range(span)]
    return doc[:start] + fresh + doc[start + span :]


def test_normalize_for_dedup():
    assert normalize_for_dedup("  Hello,   WORLD!\n\tFoo ") == "hello world foo"
    assert normalize_for_dedup("end.Next") == normalize_for_dedup("end. Next") == "end next"
    assert normalize_for_dedup("It's — “quoted” (text); $5 + 3") == "it s quoted text 5 3"
    assert normalize_for_dedup("ÉCOLE ﬁne") == "école fine"  # NFKC unfolds the ligature
    assert normalize_for_dedup("...!?") == ""
    assert normalize_for_dedup("") == ""


def test_exact_hashes_and_duplicate_of():
    h = exact_hashes(["The cat sat.", "the  CAT sat", "The cat, sat!", "The dog sat."])
    assert h.dtype == np.uint64 and h.shape == (4,)
    assert h[0] == h[1] == h[2]
    assert h[3] != h[0]
    texts = ["a b", "c", "A  b!", "d", "C.", "", "?!", "a b c"]
    dup = exact_duplicate_of(exact_hashes(texts))
    np.testing.assert_array_equal(dup, [0, 1, 0, 3, 1, 5, 5, 7])
    assert dup.dtype == np.int64
    np.testing.assert_array_equal(exact_duplicate_of(np.array([7, 3, 7, 7, 3, 9], dtype=np.uint64)), [0, 1, 0, 0, 1, 5])
    assert exact_duplicate_of(np.array([], dtype=np.uint64)).shape == (0,)


def test_estimated_jaccard_close_to_true_jaccard():
    rng = random.Random(1)
    (base,) = random_docs(rng, 1, 300)
    other = base[:200] + [f"y{i}" for i in range(100)]
    a, b = " ".join(base), " ".join(other)
    j = true_jaccard(a, b)
    assert j == pytest.approx(196 / 396)  # 296 shingles each, 196 shared
    sig = MinHasher(DedupConfig(num_perm=256)).signatures([a, b])
    assert sig.shape == (2, 256) and sig.dtype == np.uint32
    # Standard error of the estimate is sqrt(J(1-J)/256) ~= 0.031; 0.1 is > 3 sigma.
    assert abs(estimated_jaccard(sig[0], sig[1]) - j) < 0.1
    assert estimated_jaccard(sig[0], sig[0]) == 1.0


def test_lsh_params_s_curve():
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128
    assert (bands, rows) == (9, 13)  # what datasketch's MinHashLSH(threshold=0.8, num_perm=128) picks
    # 1-(1-0.95^13)^9 = 0.9985, 1-(1-0.9^13)^9 = 0.929, 1-(1-0.5^13)^9 = 0.0011, 1-(1-0.3^13)^9 ~ 1.4e-6
    assert s_curve(0.95, bands, rows) > 0.99
    assert s_curve(0.9, bands, rows) > 0.9
    assert s_curve(0.5, bands, rows) < 0.005
    assert s_curve(0.3, bands, rows) < 1e-5
    low_b, low_r = lsh_params(0.5, 128)
    assert low_b * low_r <= 128
    for s in (0.3, 0.5, 0.7):  # a lower threshold shifts the curve left
        assert s_curve(s, low_b, low_r) > s_curve(s, bands, rows)
    for threshold, perms in ((0.7, 64), (0.9, 100), (0.6, 7)):
        b, r = lsh_params(threshold, perms)
        assert 1 <= b * r <= perms
    # Weighting false negatives more lowers the curve's midpoint (1/b)^(1/r).
    fb, fr = lsh_params(0.8, 128, fp_weight=0.1, fn_weight=0.9)
    assert (1 / fb) ** (1 / fr) < (1 / bands) ** (1 / rows)


def test_near_dedup_planted_duplicates():
    rng = random.Random(0)
    docs = [" ".join(d) for d in random_docs(rng, 200, 200)]
    originals = list(range(0, 200, 10))
    texts = docs + [" ".join(plant(rng, docs[i].split(), 0.05)) for i in originals]
    planted = np.arange(200, 220)
    # A 10-word span changes 14 of 196 shingles: J = 182/210 = 0.867.
    assert min(true_jaccard(texts[i], texts[p]) for i, p in zip(originals, planted)) > 0.85
    # Threshold 0.6 gives (18, 7): 1-(1-0.867^7)^18 = 0.9997 per pair; the default curve gives only 0.79 there.
    hasher = MinHasher(DedupConfig(threshold=0.6))
    assert (hasher.bands, hasher.rows) == (18, 7)
    bands, valid = hasher.band_hashes(texts)
    assert bands.shape == (220, 18) and bands.dtype == np.uint64 and valid.all()
    rep = near_duplicate_clusters(bands, valid)
    np.testing.assert_array_equal(rep[planted], originals)
    np.testing.assert_array_equal(rep[:200], np.arange(200))  # unrelated documents are never linked


def test_near_dedup_defaults_at_high_similarity():
    rng = random.Random(2)
    docs = [" ".join(d) for d in random_docs(rng, 60, 400)]
    copies = [" ".join(plant(rng, d.split(), 0.02)) for d in docs]  # 8-word span: J = 384/408 = 0.94
    bands, valid = MinHasher(DedupConfig()).band_hashes(docs + copies)
    rep = near_duplicate_clusters(bands, valid)
    # 1-(1-0.94^13)^9 = 0.986 per pair, so ~59 of 60 expected; 54 leaves room without hiding a broken curve.
    assert (rep[60:] == np.arange(60)).sum() >= 54
    np.testing.assert_array_equal(rep[:60], np.arange(60))


def test_documents_without_words_are_invalid():
    texts = ["", "a b c d e f", "?!.,", "", "a b c d e f", "   "]
    bands, valid = MinHasher(DedupConfig()).band_hashes(texts)
    np.testing.assert_array_equal(valid, [False, True, False, False, True, False])
    assert (bands[~valid] == 0).all() and (bands[valid] != 0).all()
    np.testing.assert_array_equal(near_duplicate_clusters(bands, valid), [0, 1, 2, 3, 1, 5])
    sig = MinHasher(DedupConfig()).signatures(["", "one"])
    assert (sig[0] == np.iinfo(np.uint32).max).all() and (sig[1] != sig[0]).any()


def test_short_documents_have_one_shingle():
    hasher = MinHasher(DedupConfig(num_perm=64))
    sig = hasher.signatures(["Hello world", "hello, WORLD!", "world hello", "hello"])
    assert (sig[0] == sig[1]).all()
    assert estimated_jaccard(sig[0], sig[2]) < 0.2  # different word order is a different shingle
    assert estimated_jaccard(sig[0], sig[3]) < 0.2


def test_near_duplicate_clusters_transitive_chain():
    band_hashes = np.array(
        [
            [10, 20, 30],
            [10, 21, 31],  # shares band 0 with doc 0
            [11, 21, 32],  # shares band 1 with doc 1
            [12, 22, 33],
            [13, 20, 34],  # band 1 value equals doc 0's band 1: linked to 0
            [30, 40, 50],  # 30 is doc 0's band 2 value but in band 0: not linked
        ],
        dtype=np.uint64,
    )
    np.testing.assert_array_equal(near_duplicate_clusters(band_hashes), [0, 0, 0, 3, 0, 5])
    # Doc 1 invalid: the chain 0-1-2 breaks, and 2 stays alone.
    valid = np.array([True, False, True, True, True, True])
    np.testing.assert_array_equal(near_duplicate_clusters(band_hashes, valid), [0, 1, 2, 3, 0, 5])
    # A chain that must propagate through many hops: i~i+1 alternately in band 0 and band 1.
    n = 1001
    chain = np.arange(2 * n, dtype=np.uint64).reshape(n, 2) + np.uint64(10_000)
    chain[1::2, 0] = chain[0:-1:2, 0]
    chain[2::2, 1] = chain[1:-1:2, 1]
    np.testing.assert_array_equal(near_duplicate_clusters(chain[::-1].copy()), np.zeros(n, dtype=np.int64))
    assert near_duplicate_clusters(np.zeros((0, 4), dtype=np.uint64)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ngram_size": 0}, "ngram_size"),
        ({"num_perm": 0}, "num_perm"),
        ({"num_perm": True}, "num_perm"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"bands": 4}, "bands and rows"),
        ({"rows": 4}, "bands and rows"),
        ({"bands": 0, "rows": 4}, "bands"),
        ({"bands": 20, "rows": 7}, "bands * rows"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ConfigError, match=re.escape(f"dedup config: {field} ")):
        DedupConfig(**kwargs)


def test_explicit_bands_and_rows():
    hasher = MinHasher(DedupConfig(bands=16, rows=8))
    bands, valid = hasher.band_hashes(["one two three", "four five six", "One, two; three."])
    assert (hasher.bands, hasher.rows) == (16, 8) and bands.shape == (3, 16) and valid.all()
    assert (bands[0] == bands[2]).all() and not (bands[0] == bands[1]).any()
    # Band index is mixed in: equal rows in different bands would not share a hash value.
    assert len(np.unique(bands[0])) == 16


def test_deterministic_across_processes():
    rng = random.Random(3)
    texts = [" ".join(d) for d in random_docs(rng, 20, 150)] + ["", "Short one."]
    hasher = MinHasher(DedupConfig())
    here = hasher.signatures(texts)
    # A fresh MinHasher with the same config agrees; another seed does not.
    np.testing.assert_array_equal(MinHasher(DedupConfig()).signatures(texts), here)
    assert (MinHasher(DedupConfig(seed=7)).signatures(texts[:1]) != here[:1]).mean() > 0.9
    # Spawned processes start with fresh hash salts: a use of built-in hash() would show up here. The children
    # hash with the parent's hasher, and build a hasher of their own whose permutations must match.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        theirs = pool.starmap(hasher.signatures, [(texts,), (texts,)])
        fresh = pool.apply(MinHasher, (DedupConfig(),)).signatures(texts)
    for sig in theirs:
        np.testing.assert_array_equal(sig, here)
    np.testing.assert_array_equal(fresh, here)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(hasher)).band_hashes(texts)[0], hasher.band_hashes(texts)[0]
    )
