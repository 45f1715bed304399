"""Text batch → hashed shingles → MinHash signatures → LSH band keys, all as column operations.

Why not ``datasketch.MinHash``: it makes one Python call per document (and its ``update`` one per
shingle), which dominates the cost on millions of short documents. Here a whole batch is
tokenized by polars (Rust regex), every token is hashed at once (xxh3 via polars-hash, stable
across versions and machines), n-grams are combined with numpy over the flattened token array,
and each of the ``num_perm`` hash functions is one vectorized pass over all shingles of the
batch followed by a per-document ``minimum.reduceat``.

Hash family: ``h_j(x) = (a_j * x + b_j) mod 2**64``, keeping the top 32 bits (multiply-add-shift,
a 2-universal family, as in build_bench_corpus and datatrove's 32-bit mode). The top 32 bits of a
minimum equal the minimum of the top 32 bits, so the shift is applied once per signature value,
not once per shingle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import polars_hash as plh

_U64 = np.uint64
_WORD = r"\w+"
#: Shingles hashed per chunk: bounds the scratch buffer to 16 MB whatever the batch size.
_CHUNK_SHINGLES = 2_000_000


def _constants(seed: int, count: int) -> np.ndarray:
    """Odd 64-bit multipliers derived from a fixed seed (the same on every machine)."""
    return np.random.default_rng(seed).integers(1, 2**64, size=count, dtype=_U64) | _U64(1)


#: Position multipliers combining the n token hashes of an n-gram (fixed: part of the format).
_NGRAM_MULTIPLIERS = _constants(0x5EED_0001, 64)
#: Row multipliers combining the ``rows`` values of a band into one 64-bit key.
_BAND_MULTIPLIERS = _constants(0x5EED_0002, 1024)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit affects every output bit (in place on a copy)."""
    x = x.copy()
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def normalized(texts: pl.Series) -> pl.Series:
    """Lowercase, whitespace runs collapsed to one space, trimmed; nulls become empty."""
    return texts.fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _tokens(texts: pl.Series, shingle: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-document token values, flattened: (uint64 values, tokens per document)."""
    if shingle == "words":  # \w+ tokens: whitespace needs no normalizing first
        words = texts.fill_null("").str.to_lowercase().str.extract_all(_WORD)
        counts = words.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = words.explode().drop_nulls()
        values = flat.to_frame("w").select(plh.col("w").nchash.xxh3_64()).to_series().to_numpy()
        return values.astype(_U64, copy=False), counts
    text = normalized(texts)
    counts = text.str.len_chars().to_numpy().astype(np.int64)
    joined = "".join(text.to_list())  # one Python call per batch, not per character
    codepoints = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    return codepoints.astype(_U64), counts


def shingle_hashes(texts: pl.Series, shingle: str, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram of every document: (flat uint64 hashes, shingles per document).

    A document with fewer than ``ngram`` tokens (but at least one) yields a single shingle of
    all its tokens, so short documents still have a signature; an empty one yields none.
    """
    values, counts = _tokens(texts, shingle)
    total = values.size
    starts = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    full = np.maximum(counts - ngram + 1, 0)
    short = (counts > 0) & (counts < ngram)
    per_doc = full + short

    windows = max(total - ngram + 1, 0)
    combined = np.zeros(windows, dtype=_U64)
    for k in range(ngram):
        combined += values[k : k + windows] * _NGRAM_MULTIPLIERS[k]
    # a window is valid unless it starts in the last ngram-1 tokens of its document
    valid = np.ones(windows, dtype=bool)
    ends = starts + counts
    for back in range(1, ngram):
        tail = ends - back
        tail = tail[(tail >= starts) & (tail < windows)]
        valid[tail] = False
    hashes = combined[valid]

    if short.any():  # rare: combine the few tokens of each short document
        short_starts, short_counts = starts[short], counts[short]
        tail = np.zeros(short_starts.size, dtype=_U64)
        for k in range(ngram - 1):
            has = short_counts > k
            tail[has] += values[short_starts[has] + k] * _NGRAM_MULTIPLIERS[k]
        # put each short document's shingle where its (empty) run of full shingles would be
        out_starts = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(per_doc[:-1], out=out_starts[1:])
        merged = np.empty(int(per_doc.sum()), dtype=_U64)
        is_short_slot = np.zeros(merged.size, dtype=bool)
        is_short_slot[out_starts[short]] = True
        merged[is_short_slot] = tail
        merged[~is_short_slot] = hashes
        hashes = merged
    return mix64(hashes), per_doc


@dataclass(frozen=True)
class MinHasher:
    """``num_perm`` seeded hash functions; signatures are uint32 arrays of shape (docs, num_perm)."""

    num_perm: int
    seed: int

    @property
    def params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0x4D48])
        a = rng.integers(1, 2**64, size=self.num_perm, dtype=_U64) | _U64(1)
        b = rng.integers(0, 2**64, size=self.num_perm, dtype=_U64)
        return a, b

    def signatures(self, hashes: np.ndarray, per_doc: np.ndarray) -> np.ndarray:
        """Signatures of the documents with at least one shingle (rows in document order)."""
        counts = per_doc[per_doc > 0]
        out = np.empty((counts.size, self.num_perm), dtype=np.uint32)
        if counts.size == 0:
            return out
        a, b = self.params
        ends = np.cumsum(counts)
        starts = ends - counts
        first = 0
        while first < counts.size:  # chunks of whole documents, ~_CHUNK_SHINGLES shingles each
            last = int(np.searchsorted(ends, starts[first] + _CHUNK_SHINGLES, side="right"))
            last = max(last, first + 1)
            lo, hi = int(starts[first]), int(ends[last - 1])
            chunk = hashes[lo:hi]
            offsets = starts[first:last] - lo
            buffer = np.empty(chunk.size, dtype=_U64)
            block = np.empty((last - first, self.num_perm), dtype=_U64)
            for j in range(self.num_perm):
                np.multiply(chunk, a[j], out=buffer)
                buffer += b[j]
                block[:, j] = np.minimum.reduceat(buffer, offsets)
            out[first:last] = (block >> _U64(32)).astype(np.uint32)
            first = last
        return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band): equal keys ⇔ (up to 2**-64) equal band values."""
    keys = np.empty((signatures.shape[0], bands), dtype=_U64)
    for band in range(bands):
        key = np.full(signatures.shape[0], _U64(band), dtype=_U64)
        for k in range(rows):
            key += signatures[:, band * rows + k].astype(_U64) * _BAND_MULTIPLIERS[k]
        keys[:, band] = mix64(key)
    return keys
