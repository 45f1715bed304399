"""Arrow types the Hub's `datasets` reads plainly: large/view strings and lists → regular ones."""

from __future__ import annotations

import polars as pl
import pyarrow as pa


def plain_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype) or pa.types.is_large_list_view(dtype):
        return pa.list_(plain_type(dtype.value_type))
    if pa.types.is_list(dtype):
        return pa.list_(plain_type(dtype.value_type))
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(plain_type(dtype.value_type), dtype.list_size)
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, plain_type(f.type), f.nullable) for f in dtype])
    return dtype


def plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, plain_type(f.type), f.nullable) for f in schema])


def to_plain_arrow(frame: pl.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    table = frame.to_arrow()
    return table.cast(schema or plain_schema(table.schema))
