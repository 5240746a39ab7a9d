"""Document deduplication for the pretraining data pipeline: exact and near-duplicate removal.

* Exact: a 64-bit xxhash of the normalized text (`normalize_for_dedup`); of equal hashes the first document stays.
* Near: MinHash signatures over word n-grams (Broder 1997, "On the resemblance and containment of documents"),
  split into LSH bands (Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3). Documents sharing
  any band bucket are linked, linked documents form clusters, and each cluster keeps its lowest index; a removed
  document is reported as a duplicate of the candidate it shares most bands with (`near_duplicates`). The defaults
  (5-grams, Jaccard threshold 0.8) follow common practice: Lee et al. 2021 ("Deduplicating Training Data Makes
  Language Models Better"), RefinedWeb (Penedo et al. 2023) and FineWeb.

Cost is linear in the number of documents: hashing is per document, clustering sorts each band column once, and
only LSH candidates (at most two per document and band) have their band hashes compared, never all pairs.
Everything is deterministic across processes (xxhash and a seeded numpy Generator, never the per-process salted
built-in `hash`), so `MinHasher` can run inside `datasets.map` workers and the band hashes they return can be
clustered in the main process.

Words are the whitespace-separated tokens of `normalize_for_dedup(text)`. A text with at least `ngram_size` words
has `len(words) - ngram_size + 1` shingles; a shorter text with at least one word has one shingle made of all its
words; a text without words has no shingles and takes no part in near dedup.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from lit_llm.errors import ConfigError

_CHUNK = 1024  # shingles per MinHash block: (num_perm, 1024) uint64 stays in L2 and measured fastest
_PRIME = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the n-gram polynomial (golden-ratio constant)


@dataclass
class DedupConfig:
    """Exact and MinHash-LSH near-duplicate removal; which to run and how near "near" is."""

    exact: bool = True  # drop documents whose normalized text hashes equal an earlier one
    near: bool = True  # MinHash-LSH near-duplicate removal
    ngram_size: int = 5  # word n-grams (shingles)
    num_perm: int = 128  # MinHash permutations
    threshold: float = 0.8  # Jaccard similarity the LSH bands are tuned for
    bands: int | None = None  # LSH bands; None = chosen from threshold and num_perm (see lsh_params)
    rows: int | None = None  # rows per band; None = chosen with bands
    seed: int = 42  # seed of the hash permutations

    def __post_init__(self) -> None:
        for name in ("ngram_size", "num_perm"):
            value = getattr(self, name)
            # bool is an int subclass; `num_perm: true` in a YAML file is a mistake, not 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"dedup config: {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"dedup config: threshold must be a number, got {self.threshold!r}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"dedup config: threshold must be strictly between 0 and 1, got {self.threshold}")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError(
                f"dedup config: bands and rows must both be set or both be null, got bands={self.bands!r}, "
                f"rows={self.rows!r}"
            )
        if self.bands is not None:
            for name in ("bands", "rows"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"dedup config: {name} must be an integer >= 1 or null, got {value!r}")
            if self.bands * self.rows > self.num_perm:
                raise ConfigError(
                    f"dedup config: bands * rows must be <= num_perm ({self.num_perm}), "
                    f"got {self.bands} * {self.rows} = {self.bands * self.rows}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"dedup config: seed must be an integer >= 0, got {self.seed!r}")


class _Table(dict):
    """str.translate table mapping punctuation and symbols (Unicode P* and S*) to a space and every other character
    to itself, filled lazily: building it for all 1.1M code points would cost a fraction of a second in every
    worker process."""

    def __missing__(self, code: int) -> int:
        value = 32 if unicodedata.category(chr(code))[0] in "PS" else code
        self[code] = value
        return value


_TABLE = _Table()


# ASCII punctuation and symbols (the P* and S* characters below 128) become spaces, and so do the separators
# \x1c-\x1f that str.split() splits on but bytes.split() does not; bytes.translate runs in C.
_ASCII_TABLE = bytes(
    32 if unicodedata.category(chr(b))[0] in "PS" or 0x1C <= b <= 0x1F else b for b in range(128)
) + bytes(range(128, 256))


def dedup_words(text: str) -> list[bytes]:
    """The UTF-8 words of `normalize_for_dedup(text)`: what exact dedup hashes and near dedup shingles."""
    if text.isascii():
        # ASCII is unchanged by NFKC, and the bytes path lowercases and drops punctuation in C: several times
        # faster than str.translate, which looks every character up in a Python mapping.
        return text.encode("ascii").lower().translate(_ASCII_TABLE).split()
    text = unicodedata.normalize("NFKC", text)
    return [w.encode("utf-8") for w in text.lower().translate(_TABLE).split()]


def normalize_for_dedup(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols (Unicode categories P*, S*) replaced by spaces, whitespace
    collapsed to single spaces and stripped: the text exact dedup hashes and near dedup shingles.

    Punctuation becomes a separator rather than vanishing so that "end.Next" and "end. Next" agree.
    """
    return b" ".join(dedup_words(text)).decode("utf-8")


def exact_hashes(texts: Sequence[str], words: Sequence[list[bytes]] | None = None) -> np.ndarray:
    """uint64 per text: 64-bit xxh3 of the UTF-8 bytes of `normalize_for_dedup(text)`. `words`, if given, is
    `dedup_words` of each text, already computed for near dedup."""
    if words is None:
        words = [dedup_words(t) for t in texts]
    return np.fromiter((xxhash.xxh3_64_intdigest(b" ".join(w)) for w in words), dtype=np.uint64, count=len(words))


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimizing fp_weight*FP-area + fn_weight*FN-area of the S-curve
    P(candidate | J=s) = 1 - (1 - s^rows)^bands: the area under the curve left of the threshold (pairs wrongly
    made candidates) and above it right of the threshold (pairs missed), as datasketch chooses them.
    Ties go to fewer bands, then fewer rows. Integration is the trapezoid rule on 1,001 points per side."""
    if num_perm < 1 or not 0 < threshold < 1:
        raise ValueError(f"lsh_params needs num_perm >= 1 and 0 < threshold < 1, got {num_perm}, {threshold}")
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    b, r = pairs[:, :1], pairs[:, 1:]
    s_lo, s_hi = np.linspace(0.0, threshold, 1001), np.linspace(threshold, 1.0, 1001)
    fp = np.trapezoid(1 - (1 - s_lo**r) ** b, s_lo, axis=1)
    fn = np.trapezoid((1 - s_hi**r) ** b, s_hi, axis=1)
    best = int(np.argmin(fp_weight * fp + fn_weight * fn))  # first minimum: pairs are ordered by bands, then rows
    return int(pairs[best, 0]), int(pairs[best, 1])


class _DigestMemo(dict):
    """UTF-8 word -> 8-byte xxh3 digest, computed on first lookup."""

    def __missing__(self, word: bytes) -> bytes:
        value = self[word] = xxhash.xxh3_64_digest(word)
        return value


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the output so linear combinations look random."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _odd_uint64(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 1 << 63, size=shape, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class MinHasher:
    """MinHash signatures and LSH band hashes of texts; picklable, and equal across processes for equal configs.

    Permutation i is multiply-shift hashing h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32 with odd a_i, applied to
    64-bit shingle hashes. The shift commutes with min, so the min is taken over the full 64-bit values.
    """

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        if config.bands is None:
            self.bands, self.rows = lsh_params(config.threshold, config.num_perm)
        else:
            self.bands, self.rows = config.bands, config.rows
        rng = np.random.default_rng(config.seed)
        self._a = _odd_uint64(rng, (config.num_perm, 1))
        self._b = rng.integers(0, 1 << 64, size=(config.num_perm, 1), dtype=np.uint64, endpoint=False)
        # Per (band, row) coefficients: a band's hash is a random linear form of its rows, different in each band.
        self._band_coef = _odd_uint64(rng, (self.bands, self.rows))
        self._band_offset = rng.integers(0, 1 << 64, size=self.bands, dtype=np.uint64, endpoint=False)

    def _shingles(self, texts: Sequence[str], words_of: Sequence[list[bytes]] | None = None):
        """(64-bit hash of every shingle of the batch, concatenated in document order; shingle count per text)."""
        n = self.config.ngram_size
        parts: list[bytes] = []
        if words_of is None:
            words_of = [dedup_words(t) for t in texts]
        lengths = np.zeros(len(words_of), dtype=np.int64)
        # Word frequencies are Zipfian, so a per-batch memo of word digests saves most xxhash calls.
        digest = _DigestMemo().__getitem__
        for i, words in enumerate(words_of):
            if not words:
                continue
            parts.append(b"".join(map(digest, words)))
            if len(words) < n:
                # Pad with zeros so a short text still yields exactly one n-gram, made of all its words.
                parts.append(bytes(8 * (n - len(words))))
            lengths[i] = max(len(words), n)
        counts = np.where(lengths > 0, lengths - n + 1, 0)
        w = np.frombuffer(b"".join(parts), dtype="<u8").astype(np.uint64)  # explicit byte order: same on any host
        total = len(w) - n + 1
        if total <= 0:
            return np.empty(0, dtype=np.uint64), counts
        # Polynomial rolling combination, computed for every window of the concatenation at once.
        with np.errstate(over="ignore"):
            g = w[:total].copy()
            for k in range(1, n):
                g *= _PRIME
                g += w[k : k + total]
        # Keep the windows that start at least n-1 words before their document's end.
        ends = np.cumsum(lengths)
        doc_end = np.repeat(ends, lengths)[:total]
        keep = np.arange(total) + n <= doc_end
        return _mix64(g[keep]), counts

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_perm) uint32 MinHash signatures; a text without words gets all entries 0xFFFFFFFF."""
        return self._signatures(texts)[0]

    def _signatures(self, texts: Sequence[str], words: Sequence[list[bytes]] | None = None):
        shingles, counts = self._shingles(texts, words)
        num_perm = self.config.num_perm
        out = np.full((num_perm, len(counts)), np.iinfo(np.uint64).max, dtype=np.uint64)
        docs = np.flatnonzero(counts)
        starts = (np.cumsum(counts) - counts)[docs]
        ends = starts + counts[docs]
        buf = np.empty((num_perm, _CHUNK), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c0 in range(0, len(shingles), _CHUNK):
                block = shingles[c0 : c0 + _CHUNK]
                c1 = c0 + len(block)
                # Layout (num_perm, shingles) makes reduceat run along contiguous memory: 5x faster than axis 0.
                mat = buf[:, : len(block)]
                np.multiply(self._a, block[None, :], out=mat)
                mat += self._b
                lo, hi = np.searchsorted(ends, c0, side="right"), np.searchsorted(starts, c1, side="left")
                seg = np.maximum(starts[lo:hi], c0) - c0
                mins = np.minimum.reduceat(mat, seg, axis=1)
                # A document cut by the chunk boundary is reduced in pieces; fold its pieces together.
                cols = docs[lo:hi]
                out[:, cols] = np.minimum(out[:, cols], mins)
        return np.ascontiguousarray((out >> np.uint64(32)).astype(np.uint32).T), counts

    def band_hashes(
        self, texts: Sequence[str], words: Sequence[list[bytes]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """((n, bands) uint64 hash of each band of each signature, bool (n,) `valid`). Texts without words are
        not valid: they take no part in near dedup and their band row is zeros. `words`, if given, is
        `dedup_words` of each text (then `texts` is not read)."""
        sig, counts = self._signatures(texts, words)
        valid = counts > 0
        rows = sig[:, : self.bands * self.rows].astype(np.uint64).reshape(len(counts), self.bands, self.rows)
        with np.errstate(over="ignore"):
            combined = (rows * self._band_coef).sum(axis=2, dtype=np.uint64) + self._band_offset
        hashes = _mix64(combined)
        hashes[~valid] = 0
        return hashes, valid


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity of two documents: the fraction of equal signature entries."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures differ in shape: {sig_a.shape} vs {sig_b.shape}")
    return float(np.mean(sig_a == sig_b))


def exact_duplicate_of(hashes: np.ndarray) -> np.ndarray:
    """int64 (n,): for each doc the index of the first doc with the same hash (itself if it is the first).
    keep = (result == arange(n))."""
    hashes = np.asarray(hashes)
    if len(hashes) == 0:
        return np.empty(0, dtype=np.int64)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)  # first: earliest occurrence
    return first[inverse.reshape(-1)].astype(np.int64)


def _bucket_edges(column: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(member, first, previous) position arrays, one entry per member of a bucket with >1 member other than its
    first: the bucket's smallest position and the next smaller position in the same bucket."""
    order = np.argsort(column, kind="stable")  # stable: equal hashes stay in position order
    ordered = column[order]
    new_run = np.empty(len(ordered), dtype=bool)
    new_run[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
    if new_run.all():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    first = order[np.flatnonzero(new_run)][np.cumsum(new_run) - 1]
    linked = ~new_run
    previous = np.roll(order, 1)
    return order[linked], first[linked], previous[linked]


def _candidate_edges(band_hashes: np.ndarray, valid: np.ndarray | None) -> list[tuple[np.ndarray, ...]]:
    n = band_hashes.shape[0]
    idx = np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(np.asarray(valid, dtype=bool))
    return [tuple(idx[e] for e in _bucket_edges(band_hashes[idx, band])) for band in range(band_hashes.shape[1])]


def near_duplicate_clusters(band_hashes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """int64 (n,): representative (smallest index) of each document's cluster, where two docs are linked when
    they share any band hash in the same band. Invalid docs are their own representative."""
    return near_duplicates(band_hashes, valid)[0]


def near_duplicates(band_hashes: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(representative, matched), both int64 (n,). `representative` is as `near_duplicate_clusters` gives it: a
    cluster keeps its smallest index. `matched[i]` is the document i was matched with: of its earlier LSH candidates
    (per band, the first document of i's bucket and the one just before i in it) the one sharing the most bands
    with i, the closest a band count tells; ties go to the smaller index. Through a chain A~B~C, C is matched with
    B even though the cluster keeps A. A member with no earlier candidate (linked to its cluster only through later
    documents) is matched with the cluster's kept document, so following `matched` always ends there; a kept
    document is matched with itself."""
    band_hashes = np.asarray(band_hashes)
    n = band_hashes.shape[0]
    edges = _candidate_edges(band_hashes, valid)
    labels = np.arange(n, dtype=np.int64)
    if not edges or not any(len(e[0]) for e in edges):
        return labels, labels.copy()
    # Edges are deduplicated first: a near-duplicate pair usually shares many bands.
    keys = np.unique(np.concatenate([u * n + v for u, v, _ in edges]))
    labels = _union_find(labels, keys // n, keys % n)
    pairs = np.unique(np.concatenate([u * n + w for u, v, p in edges for w in (v, p)]))
    return labels, _best_earlier_match(band_hashes, pairs // n, pairs % n, labels)


def _union_find(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Union-find with hooking and pointer jumping, vectorized over all edges: labels[x] is always a node of x's
    # cluster with index <= x, roots hook onto smaller roots only, so the loop ends with every root at its
    # cluster's smallest index. Rounds are few: a shuffled 200k-document chain takes 12, and the pointer jumping
    # inside a round takes log2(depth) passes.
    while True:
        lu, lv = labels[u], labels[v]
        differ = lu != lv
        if not differ.any():
            return labels
        lo = np.minimum(lu[differ], lv[differ])
        np.minimum.at(labels, lu[differ], lo)
        np.minimum.at(labels, lv[differ], lo)
        while True:  # path compression: every label points straight at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


def _best_earlier_match(band_hashes: np.ndarray, later: np.ndarray, earlier: np.ndarray,
                        labels: np.ndarray) -> np.ndarray:
    """For each document, of the candidate pairs (later, earlier) it is the later one of, the earlier document
    sharing the most bands; its cluster's representative when it has none."""
    step = 65536
    shared = np.concatenate([
        (band_hashes[later[i : i + step]] == band_hashes[earlier[i : i + step]]).sum(axis=1)
        for i in range(0, len(later), step)
    ])
    return best_match(later, earlier, shared, labels)


def best_match(later: np.ndarray, earlier: np.ndarray, shared: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """matched[i]: of the candidate pairs (i, earlier) the one with the most `shared` bands (ties: the smaller
    index); labels[i] (its cluster's representative) for a document that is no pair's later one."""
    order = np.lexsort((earlier, -shared, later))  # by document, then most shared bands, then smallest candidate
    later, earlier = later[order], earlier[order]
    best = np.ones(len(later), dtype=bool)
    best[1:] = later[1:] != later[:-1]
    matched = labels.copy()
    matched[later[best]] = earlier[best]
    return matched
