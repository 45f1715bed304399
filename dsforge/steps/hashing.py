"""Stable row keys: hashing that gives the same value on every machine and process.

Polars' own ``hash`` may change between versions; polars-hash's xxh3 does not, so split
assignments and dedup keys stay reproducible.
"""

from __future__ import annotations

import polars as pl
import polars_hash as plh

SEPARATOR = "\x1f"


def is_conversation(dtype: pl.DataType) -> bool:
    """A list of {role, content} structs: chat ``messages`` or a preference ``prompt``."""
    inner = getattr(dtype, "inner", None)
    return (
        isinstance(dtype, pl.List)
        and isinstance(inner, pl.Struct)
        and {"role", "content"} <= {f.name for f in inner.fields}
    )


def as_text(column: str, dtype: pl.DataType, roles: list[str] | None = None) -> pl.Expr:
    """Any column as text: strings as they are, conversations as the text of the chosen roles'
    turns (all turns when ``roles`` is None), other nested values as JSON."""
    if dtype == pl.String:
        return pl.col(column).fill_null("")
    if roles is not None and is_conversation(dtype):
        turns = pl.col(column).list.eval(pl.element().filter(pl.element().struct.field("role").is_in(roles)))
        return turns.list.eval(pl.element().struct.field("content")).list.join(SEPARATOR).fill_null("")
    return pl.struct(pl.col(column)).struct.json_encode()


def key_text(batch: pl.DataFrame, columns: list[str], roles: list[str] | None = None) -> pl.Expr:
    parts = [as_text(c, batch.schema[c], roles) for c in columns]
    return parts[0] if len(parts) == 1 else pl.concat_str(parts, separator=SEPARATOR)


def stable_hash(text: pl.Expr, seed: int = 0) -> pl.Expr:
    """A 64-bit xxh3 hash of a text expression, identical across runs, processes and machines."""
    return plh.concat_str(text).nchash.xxh3_64(seed=seed)


def unit_interval(hashes: pl.Expr) -> pl.Expr:
    """Map u64 hashes to floats in [0, 1)."""
    return (hashes // 2048).cast(pl.Float64) / float(2**53)
