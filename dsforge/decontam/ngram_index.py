"""A hashed word n-gram index of benchmark items, looked up a whole batch at a time.

Normalization (the same on both sides): lower-case (Unicode), then tokens are maximal runs of
letters, marks and digits; every other character (punctuation, symbols, whitespace) separates
tokens and is dropped. Chinese/Japanese characters are one token each (those scripts do not
separate words with spaces), so CMMLU is indexed by character n-grams.

Hashing: each token is hashed with xxh3-64 (polars-hash, stable across runs and machines); an
n-gram's hash is the Horner combination ``h = h * P + token`` (mod 2**64) over its tokens, computed
for every window of every text at once with numpy (one vector operation per token position of
the window, never a Python loop per n-gram).

Short items: a benchmark text with fewer than ``n`` tokens is indexed as one gram of its own
length ``k``; lookups then also hash every ``k``-token window of the documents for each such
``k`` (they come from the same running Horner sum, so this costs no extra pass).

Storage: per gram size, the unique hashes sorted in a numpy array (8 bytes each) with CSR offsets
(8 bytes) into the keys of the items containing them (4 bytes per (gram, item) pair), plus a small
items table: about 20 bytes per distinct benchmark n-gram (28 MB for ten benchmarks, 36k items).
Lookup = ``np.searchsorted`` of the batch's window hashes in the table of their size, then
expanding the hits only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from dsforge.steps.hashing import stable_hash

TOKEN_PATTERN = r"[\p{Han}\p{Hiragana}\p{Katakana}]|[\p{L}\p{M}\p{N}--[\p{Han}\p{Hiragana}\p{Katakana}]]+"
#: odd 64-bit multiplier of the Horner n-gram hash (a prime close to 2**64 / golden ratio)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def tokenize(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Texts → (u64 hash of every token, in order; number of tokens per text)."""
    frame = pl.DataFrame({"t": texts.cast(pl.String)})
    tokens = frame.select(pl.col("t").str.to_lowercase().str.extract_all(TOKEN_PATTERN))
    lengths = tokens.select(pl.col("t").list.len().fill_null(0)).to_series().to_numpy().astype(np.int64)
    flat = tokens.select(pl.col("t").explode(keep_nulls=False))
    hashes = flat.select(stable_hash(pl.col("t"))).to_series().to_numpy().astype(np.uint64)
    return hashes, lengths


def window_hashes(
    token_hashes: np.ndarray, lengths: np.ndarray, sizes: list[int]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Hashes of every window of each size in ``sizes`` inside each text.

    Yields (size, text index of each window, window hashes), one triple per requested size.
    """
    total = token_hashes.size
    text_of = np.repeat(np.arange(lengths.size), lengths)
    start_of_text = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if lengths.size else lengths
    remaining = lengths[text_of] - (np.arange(total) - start_of_text[text_of])
    wanted = set(sizes)
    acc = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, max(sizes, default=0) + 1):
            if k > total:
                break
            # acc[i] = hash of tokens i .. i+k-1 (only meaningful where the window fits its text)
            acc = acc[: total - k + 1] * _MULTIPLIER + token_hashes[k - 1 :]
            if k in wanted:
                fits = np.nonzero(remaining[: total - k + 1] >= k)[0]
                yield k, text_of[fits], acc[fits]


@dataclass
class GramTable:
    """Sorted unique gram hashes with CSR offsets into the keys of the items holding them."""

    hashes: np.ndarray  # sorted unique u64
    offsets: np.ndarray  # int64, len(hashes) + 1: items of hashes[i] are keys[offsets[i]:offsets[i+1]]
    keys: np.ndarray  # uint32

    @classmethod
    def from_pairs(cls, pairs: pl.DataFrame) -> GramTable:
        """(h, key) rows, unique → table."""
        pairs = pairs.sort("h", "key")
        hashes, starts = np.unique(pairs.get_column("h").to_numpy(), return_index=True)
        offsets = np.append(starts, pairs.height).astype(np.int64)
        return cls(hashes, offsets, pairs.get_column("key").to_numpy())

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.offsets.nbytes + self.keys.nbytes

    def match(self, grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``grams``, item key) for every (gram, item) hit; no Python loop per gram."""
        if grams.size == 0 or self.hashes.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        position = np.minimum(np.searchsorted(self.hashes, grams), self.hashes.size - 1)
        hit = np.nonzero(self.hashes[position] == grams)[0]
        slot = position[hit]
        counts = self.offsets[slot + 1] - self.offsets[slot]
        first = np.repeat(self.offsets[slot], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(hit, counts), self.keys[first + within]


@dataclass
class NgramIndex:
    """Benchmark items by gram size: n-grams of long texts, whole-text grams of short ones."""

    n: int
    items: pl.DataFrame  # key (row number), benchmark, item_id, ngrams (distinct grams of the item)
    tables: dict[int, GramTable]  # gram size → table (size n, plus each short-text length)
    empty_texts: int  # benchmark texts with no token at all (not indexed)

    @classmethod
    def build(cls, texts: pl.DataFrame, n: int) -> NgramIndex:
        """Index rows (benchmark, item_id, text); an item may span several text rows."""
        keyed = texts.with_columns(
            (pl.struct("benchmark", "item_id").rank("dense").cast(pl.UInt32) - 1).alias("key")
        )
        items = keyed.unique(["key"]).sort("key").select("key", "benchmark", "item_id")
        token_hashes, lengths = tokenize(keyed.get_column("text"))
        text_keys = keyed.get_column("key").to_numpy()
        frames = []
        for k, text_idx, grams in window_hashes(token_hashes, lengths, [n]):
            frames.append((k, text_idx, grams))
        # short texts: one gram of their own length (computed on those texts only)
        short = np.nonzero((lengths > 0) & (lengths < n))[0]
        if short.size:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[short]
            token_index = np.concatenate(
                [np.arange(s, s + c) for s, c in zip(starts, lengths[short], strict=True)]
            )
            short_lengths = lengths[short]
            sizes = sorted({int(k) for k in short_lengths})
            for k, local, grams in window_hashes(token_hashes[token_index], short_lengths, sizes):
                whole = short_lengths[local] == k
                frames.append((k, short[local[whole]], grams[whole]))
        pairs = pl.concat(
            [
                pl.DataFrame(
                    {"size": np.full(g.size, k, np.int32), "h": g, "key": text_keys[t]},
                    schema={"size": pl.Int32, "h": pl.UInt64, "key": pl.UInt32},
                )
                for k, t, g in frames
            ]
        ).unique()
        per_item = pairs.group_by("key").len("ngrams")
        items = items.join(per_item, on="key", how="left").with_columns(pl.col("ngrams").fill_null(0))
        tables = {
            int(size): GramTable.from_pairs(group.drop("size"))
            for (size,), group in pairs.partition_by("size", as_dict=True).items()
        }
        return cls(n=n, items=items, tables=tables, empty_texts=int((lengths == 0).sum()))

    @property
    def short_sizes(self) -> list[int]:
        return sorted(k for k in self.tables if k < self.n)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tables.values()) + self.items.estimated_size()

    def lookup(self, texts: pl.Series) -> pl.DataFrame:
        """For each text (by position), the items it shares grams with: unique (text, key, h) rows."""
        token_hashes, lengths = tokenize(texts)
        frames = []
        for k, text_idx, grams in window_hashes(token_hashes, lengths, sorted(self.tables)):
            which, keys = self.tables[k].match(grams)
            if which.size:
                frames.append(
                    pl.DataFrame({"text": text_idx[which].astype(np.int64), "key": keys, "h": grams[which]})
                )
        if not frames:
            return pl.DataFrame(schema={"text": pl.Int64, "key": pl.UInt32, "h": pl.UInt64})
        return pl.concat(frames).unique()
