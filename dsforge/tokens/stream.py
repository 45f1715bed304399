"""Reading token lists out of the runner's parts as flat numpy arrays, split by split.

Sinks never build Python lists of ids: a part's ``input_ids`` column becomes one array of
per-document lengths and one flat array of ids (Arrow buffers, no per-row work).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.io.sinks import SPLIT_COLUMN, _route


@dataclass
class TokenBatch:
    split: str
    lengths: np.ndarray  # int64, tokens per document
    values: np.ndarray  # flat ids, the column's integer dtype

    @property
    def tokens(self) -> int:
        return len(self.values)


def list_to_numpy(series: pl.Series, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, flat values) of an integer List column; null lists are an error."""
    if not isinstance(series.dtype, pl.List | pl.Array) or not series.dtype.inner.is_integer():
        raise DsforgeError(f"{where}: column {series.name!r} is {series.dtype}, expected a list of token ids")
    if series.null_count():
        nulls = series.null_count()
        raise DsforgeError(f"{where}: column {series.name!r} has {nulls} null rows (no token list)")
    array = series.rechunk().to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    lengths = array.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = array.flatten().to_numpy(zero_copy_only=False)
    return lengths, values


def _require_column(schema: pl.Schema, column: str, where: str) -> None:
    if column not in schema:
        columns = ", ".join(schema)
        raise DsforgeError(
            f"{where}: no column {column!r} in the data (columns: {columns}); add a tokenize step"
        )


def column_dtype(store: PartStore, column: str, where: str) -> pl.DataType | None:
    """The integer type of the token column in the first part that has rows (None if no parts)."""
    for path in store.files():
        schema = pl.read_parquet_schema(path)
        _require_column(schema, column, where)
        dtype = schema[column]
        if isinstance(dtype, pl.List | pl.Array):
            return dtype.inner
        raise DsforgeError(f"{where}: column {column!r} is {dtype}, expected a list of token ids")
    return None


def iter_token_batches(store: PartStore, column: str, where: str) -> Iterator[TokenBatch]:
    """Each part's token lists, routed by its ``split`` column (``train`` without one), in store order."""
    for path in store.files():
        schema = pl.read_parquet_schema(path)
        _require_column(schema, column, where)
        columns = [column, SPLIT_COLUMN] if SPLIT_COLUMN in schema else [column]
        frame = pl.read_parquet(path, columns=columns)
        if not frame.height:
            continue
        for split, part in _route(frame):
            lengths, values = list_to_numpy(part.get_column(column), where)
            yield TokenBatch(split, lengths, values)
