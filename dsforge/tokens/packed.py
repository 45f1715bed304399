"""The `packed_parquet` sink: the token stream cut into fixed ``seq_len`` windows, as Parquet shards.

Documents (already ending with EOS) are concatenated per split in store order and cut every
``seq_len`` tokens, so a document may run across windows. Each window row carries
``input_ids`` (list of int32: torch has no general uint16 tensors, and zstd removes most of the
size difference), ``doc_starts`` (offsets in the window where a document begins: the
boundaries, enough to build attention masks) and, if asked, ``position_ids`` (restarting at 0
at each document start and at each window start, the layout flash-attention "varlen" training
expects). Empty documents are skipped. The tail shorter than ``seq_len`` is dropped unless
``keep_partial``.

Two streaming passes: token counts per split first (so shard names are final,
``data/{split}-NNNNN-of-NNNNN.parquet``), then packing with less than ``seq_len`` tokens
carried from one part to the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from dsforge.io.arrow import to_plain_arrow
from dsforge.io.parts import PartStore
from dsforge.io.sinks import SPLIT_COLUMN, Sink, _route, _ShardedWriter, _ShardPlan, parse_size
from dsforge.registry import register_sink
from dsforge.tokens.megatron import split_order
from dsforge.tokens.stream import iter_token_batches

WHERE = "output (packed_parquet)"
BYTES_PER_TOKEN = 4  # int32 ids, uncompressed: sizes shards conservatively


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _list_column(name: str, offsets: np.ndarray, values: np.ndarray) -> pl.Series:
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)))


def pack_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, position_ids: bool) -> pl.DataFrame:
    """Rows of consecutive ``seq_len`` windows (the last may be shorter) of a flat token run.

    ``starts`` are the sorted positions in ``tokens`` where documents begin.
    """
    count = -(-len(tokens) // seq_len)
    window_offsets = np.minimum(np.arange(count + 1, dtype=np.int64) * seq_len, len(tokens))
    columns = [_list_column("input_ids", window_offsets, tokens.astype(np.int32))]
    start_offsets = np.searchsorted(starts, window_offsets, side="left")
    in_window = (starts - np.repeat(window_offsets[:-1], np.diff(start_offsets))).astype(np.int32)
    columns.append(_list_column("doc_starts", start_offsets, in_window))
    if position_ids:
        reset = np.zeros(len(tokens), dtype=bool)
        reset[window_offsets[:-1]] = True
        reset[starts] = True
        index = np.arange(len(tokens), dtype=np.int64)
        last_reset = np.maximum.accumulate(np.where(reset, index, 0))
        columns.append(_list_column("position_ids", window_offsets, (index - last_reset).astype(np.int32)))
    return pl.DataFrame(columns)


class _Packer:
    """Carries the unfinished window of one split between parts."""

    def __init__(self, seq_len: int, position_ids: bool) -> None:
        self.seq_len, self.position_ids = seq_len, position_ids
        self.carry = np.zeros(0, dtype=np.int64)
        self.carry_starts = np.zeros(0, dtype=np.int64)
        self.tokens = 0
        self.documents = 0

    def add(self, lengths: np.ndarray, values: np.ndarray) -> pl.DataFrame | None:
        """Append documents; returns the windows completed by them (or None)."""
        starts = _offsets(lengths)[:-1][lengths > 0] + len(self.carry)
        tokens = np.concatenate([self.carry, values.astype(np.int64)])
        starts = np.concatenate([self.carry_starts, starts])
        cut = len(tokens) // self.seq_len * self.seq_len
        split_at = int(np.searchsorted(starts, cut, side="left"))
        self.carry, self.carry_starts = tokens[cut:], starts[split_at:] - cut
        if not cut:
            return None
        return self._emit(tokens[:cut], starts[:split_at])

    def finish(self, keep_partial: bool) -> pl.DataFrame | None:
        if not keep_partial or not len(self.carry):
            return None
        frame = self._emit(self.carry, self.carry_starts)
        self.carry = self.carry[:0]
        self.carry_starts = self.carry_starts[:0]
        return frame

    def _emit(self, tokens: np.ndarray, starts: np.ndarray) -> pl.DataFrame:
        self.tokens += len(tokens)
        self.documents += len(starts)
        return pack_windows(tokens, starts, self.seq_len, self.position_ids)


@register_sink("packed_parquet")
class PackedParquetSink(Sink):
    """Fixed-length packed token windows with document boundaries, as Parquet shards under data/."""

    seq_len: int = Field(ge=1, description="tokens per window")
    column: str = Field("input_ids", description="the token-id list column")
    keep_partial: bool = Field(False, description="keep the last window shorter than seq_len")
    position_ids: bool = Field(False, description="also write position_ids (restart at each document)")
    windows_per_shard: int | None = Field(
        None, ge=1, description="rows per shard (default: from max_shard_size)"
    )
    max_shard_size: int | str = Field("500MB", description="target shard size (ids counted as 4 bytes)")
    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] = "zstd"
    row_group_rows: int = Field(1000, ge=1, description="windows per Parquet row group")
    example: ClassVar[dict] = {"seq_len": 2048}

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        parse_size(value)
        return value

    def _arrow_schema(self) -> pa.Schema:
        names = ["input_ids", "doc_starts"] + (["position_ids"] if self.position_ids else [])
        return pa.schema([pa.field(name, pa.list_(pa.int32())) for name in names])

    def _window_counts(self, store: PartStore) -> dict[str, int]:
        """Windows per split, from a first pass reading only the list lengths."""
        tokens: dict[str, int] = {}
        for path in store.files():
            schema = pl.read_parquet_schema(path)
            columns = [self.column, SPLIT_COLUMN] if SPLIT_COLUMN in schema else [self.column]
            if self.column not in schema:
                continue  # the second pass names the missing column
            frame = pl.read_parquet(path, columns=columns).with_columns(pl.col(self.column).list.len())
            for split, part in _route(frame):
                tokens[split] = tokens.get(split, 0) + int(part.get_column(self.column).sum() or 0)
        whole = {
            s: n // self.seq_len + int(self.keep_partial and n % self.seq_len > 0) for s, n in tokens.items()
        }
        return {s: whole[s] for s in split_order(list(whole))}

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        counts = self._window_counts(store)
        per_shard = self.windows_per_shard or max(
            1, parse_size(self.max_shard_size) // (self.seq_len * BYTES_PER_TOKEN)
        )
        plan = _ShardPlan(counts, per_shard)
        schema = self._arrow_schema()
        compression = None if self.compression == "none" else self.compression

        def open_file(path: Path) -> pq.ParquetWriter:
            return pq.ParquetWriter(path, schema, compression=compression)

        def write_frame(handle: pq.ParquetWriter, frame: pl.DataFrame) -> None:
            handle.write_table(to_plain_arrow(frame, schema), row_group_size=self.row_group_rows)

        writer = _ShardedWriter(dest, plan, "parquet", open_file, write_frame)
        packers: dict[str, _Packer] = {}
        for batch in iter_token_batches(store, self.column, WHERE):
            packer = packers.setdefault(batch.split, _Packer(self.seq_len, self.position_ids))
            frame = packer.add(batch.lengths, batch.values)
            if frame is not None:
                writer.write(batch.split, frame)
        for split, packer in packers.items():
            frame = packer.finish(self.keep_partial)
            if frame is not None:
                writer.write(split, frame)
        files = writer.close()
        splits = list(plan.shards)
        return {
            "format": self.name,
            "seq_len": self.seq_len,
            "splits": {s: counts.get(s, 0) for s in splits},
            "tokens": {s: packers[s].tokens if s in packers else 0 for s in splits},
            "documents": {s: packers[s].documents if s in packers else 0 for s in splits},
            "dropped_tokens": {s: len(packers[s].carry) if s in packers else 0 for s in splits},
            "files": files,
            "data_files": {s: f"data/{s}-*.parquet" for s in splits},
            "columns": {field.name: "list[i32]" for field in schema},
        }
