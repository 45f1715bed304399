"""LSH banding: choosing bands x rows, and turning identical band keys into candidate pairs.

A pair with Jaccard ``s`` shares at least one of ``b`` bands of ``r`` rows with probability
``1 - (1 - s**r)**b``. The split is chosen as in datasketch's ``_optimal_param``: minimize
``fp_weight * ∫_0^t P(s) ds + fn_weight * ∫_t^1 (1 - P(s)) ds`` over every ``b * r <= num_perm``.

Buckets are found one band at a time: a numpy sort of the band's keys picks the rows whose key
repeats (16 bytes per document while it runs), then polars groups those few rows by key and each
bucket becomes a star of pairs to its smallest document.
With verification, a pair is kept only if the fraction of equal signature values (the unbiased
Jaccard estimate) clears the cut-off; bucket members that fail against the star's centre are
regrouped and tried against the next smallest member, so one dissimilar document sharing a
bucket cannot hide a true pair.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

#: Re-grouping rounds per band when verifying: enough for any real bucket; a pathological
#: bucket of thousands of mutually dissimilar documents stops there (missed pairs, never false ones).
MAX_VERIFY_ROUNDS = 16
_GRID = 257


def _integral(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    widths = np.diff(grid)
    return ((values[..., 1:] + values[..., :-1]) * 0.5 * widths).sum(axis=-1)


@lru_cache(maxsize=256)
def optimal_bands_rows(
    threshold: float, num_perm: int, fp_weight: float, fn_weight: float
) -> tuple[int, int]:
    """The (bands, rows) minimizing the weighted false positive + false negative areas."""
    below = np.linspace(0.0, threshold, _GRID)
    above = np.linspace(threshold, 1.0, _GRID)
    best, best_error = (1, 1), math.inf
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1, dtype=np.float64)[:, None]
        fp = _integral(1.0 - (1.0 - below[None, :] ** rows) ** bands, below)
        fn = _integral((1.0 - above[None, :] ** rows) ** bands, above)
        error = fp_weight * fp + fn_weight * fn
        i = int(np.argmin(error))
        if error[i] < best_error:
            best, best_error = (bands, i + 1), float(error[i])
    return best


def collision_probability(similarity: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - similarity**rows) ** bands


def verify_cutoff(threshold: float, num_perm: int, sigmas: float) -> float:
    """Lowest estimated Jaccard accepted: a pair exactly at ``threshold`` passes with high probability.

    The estimate from ``num_perm`` values has standard deviation ``sqrt(t (1 - t) / num_perm)``;
    cutting ``sigmas`` deviations below the threshold keeps recall at the threshold itself
    (a hard cut at ``t`` would lose half the pairs whose true Jaccard is ``t``).
    """
    return threshold - sigmas * math.sqrt(threshold * (1.0 - threshold) / num_perm)


#: Verification keeps 16 bits of each signature value (b-bit MinHash, Li & König 2010): half the
#: disk and I/O of full values; unrelated values then agree by chance with probability 2**-16,
#: which :func:`estimated_jaccard` removes from the estimate.
FINGERPRINT_BITS = 16
_CHANCE = 2.0**-FINGERPRINT_BITS


def fingerprints(signatures: np.ndarray) -> np.ndarray:
    return (signatures & np.uint32(2**FINGERPRINT_BITS - 1)).astype(np.uint16)


def estimated_jaccard_on_file(path: Path, width: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """:func:`estimated_jaccard` over a fingerprint file, mapped for this call only.

    The file is mapped without read-ahead (only the pages of the rows asked for are read) and
    unmapped before returning, so the pages leave the process (they stay in the reclaimable cache).
    """
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if hasattr(mapping, "madvise"):
            mapping.madvise(mmap.MADV_RANDOM)
        rows = np.frombuffer(mapping, dtype=np.uint16).reshape(-1, width)
        estimates = estimated_jaccard(rows, left, right)
        del rows
        return estimates
    finally:
        mapping.close()


def estimated_jaccard(
    fingerprint_rows: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65_536
) -> np.ndarray:
    """Estimated Jaccard of each pair: fraction of equal fingerprints, corrected for chance agreement."""
    out = np.empty(left.size, dtype=np.float32)
    for start in range(0, left.size, chunk):
        a = fingerprint_rows[left[start : start + chunk]]
        b = fingerprint_rows[right[start : start + chunk]]
        out[start : start + chunk] = (a == b).mean(axis=1)
    return np.clip((out - _CHANCE) / (1.0 - _CHANCE), 0.0, 1.0)


def _colliding(keys: np.ndarray, docs: np.ndarray) -> pl.DataFrame:
    """The (key, doc) rows whose key occurs more than once.

    A sort costs 16 bytes per document (order + sorted keys); a hash group-by over all documents
    (polars ``is_duplicated``) peaked at ~110 bytes per document, and only the few colliding rows
    need the grouping that follows.
    """
    order = np.argsort(keys)
    ordered = keys[order]
    same_as_next = ordered[1:] == ordered[:-1]
    del ordered
    repeated = np.zeros(keys.size, dtype=bool)
    repeated[:-1] |= same_as_next
    repeated[1:] |= same_as_next
    chosen = order[repeated]
    return pl.DataFrame({"key": keys[chosen], "doc": docs[chosen]})


def band_pairs(
    keys: np.ndarray, docs: np.ndarray, accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs (centre, member) of documents sharing a band key; returns left, right, candidates tried.

    ``accept(left, right)`` (optional) returns a boolean mask of pairs to keep.
    """
    frame = _colliding(keys, docs)
    lefts, rights, tried = [], [], 0
    for _ in range(MAX_VERIFY_ROUNDS if accept is not None else 1):
        if frame.height == 0:
            break
        pairs = frame.with_columns(pl.col("doc").min().over("key").alias("centre")).filter(
            pl.col("doc") != pl.col("centre")
        )
        left = pairs.get_column("centre").to_numpy()
        right = pairs.get_column("doc").to_numpy()
        tried += left.size
        if accept is None:
            lefts.append(left)
            rights.append(right)
            break
        ok = accept(left, right)
        lefts.append(left[ok])
        rights.append(right[ok])
        frame = pairs.filter(pl.Series(~ok)).select("key", "doc").filter(pl.col("key").is_duplicated())
    if not lefts:
        empty = np.empty(0, dtype=docs.dtype)
        return empty, empty, tried
    return np.concatenate(lefts), np.concatenate(rights), tried
