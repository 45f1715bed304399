"""Stable row keys: hashing that gives the same value on every machine and process.

Polars' own ``hash`` may change between versions; polars-hash's xxh3 does not, so split
assignments and dedup keys stay reproducible.
"""

from __future__ import annotations

import polars as pl
import polars_hash as plh

SEPARATOR = "\x1f"


def as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """Any column as text: strings as they are, nested values as JSON."""
    if dtype == pl.String:
        return pl.col(column).fill_null("")
    return pl.struct(pl.col(column)).struct.json_encode()


def key_text(batch: pl.DataFrame, columns: list[str]) -> pl.Expr:
    parts = [as_text(c, batch.schema[c]) for c in columns]
    return parts[0] if len(parts) == 1 else pl.concat_str(parts, separator=SEPARATOR)


def stable_hash(text: pl.Expr, seed: int = 0) -> pl.Expr:
    """A 64-bit xxh3 hash of a text expression, identical across runs, processes and machines."""
    return plh.concat_str(text).nchash.xxh3_64(seed=seed)


def unit_interval(hashes: pl.Expr) -> pl.Expr:
    """Map u64 hashes to floats in [0, 1)."""
    return (hashes // 2048).cast(pl.Float64) / float(2**53)
