"""Sinks turn the last stage's parts into the published files: sharded Parquet or JSON Lines.

Rows go to the split named in their ``split`` column (``train`` when there is none). Shard
counts are decided from the row counts first, so files are named
``data/{split}-NNNNN-of-NNNNN.{ext}`` as the Hub and ``datasets.load_dataset`` expect.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dsforge.io.arrow import plain_schema, to_plain_arrow
from dsforge.io.parts import PartStore, conform
from dsforge.registry import register_sink

SPLIT_COLUMN = "split"
DEFAULT_SPLIT = "train"


def parse_size(value: int | str) -> int:
    """'500MB' → 500_000_000; plain integers are bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)?\s*", str(value).lower())
    if not match:
        raise ValueError(f"not a size: {value!r} (e.g. 500MB, 2GB)")
    number, unit = float(match.group(1)), (match.group(2) or "b").rstrip("b")
    scale = {
        "": 1,
        "k": 10**3,
        "m": 10**6,
        "g": 10**9,
        "t": 10**12,
        "ki": 2**10,
        "mi": 2**20,
        "gi": 2**30,
        "ti": 2**40,
    }[unit]
    return int(number * scale)


class Sink(BaseModel):
    """Base of output formats. Fields are the format's own ``output:`` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = ""
    #: True when the output is a table `datasets.load_dataset(folder)` can open.
    tabular: ClassVar[bool] = True

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        raise NotImplementedError


def split_counts(store: PartStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in store.files():
        names = pl.read_parquet_schema(path)
        if SPLIT_COLUMN in names:
            column = pl.read_parquet(path, columns=[SPLIT_COLUMN]).get_column(SPLIT_COLUMN)
            for split, n in column.fill_null(DEFAULT_SPLIT).value_counts().iter_rows():
                counts[split] = counts.get(split, 0) + n
        else:
            rows = pl.scan_parquet(path).select(pl.len()).collect().item()
            counts[DEFAULT_SPLIT] = counts.get(DEFAULT_SPLIT, 0) + rows
    return {k: counts[k] for k in sorted(counts, key=lambda s: (s != "train", s != "validation", s))}


class _ShardPlan:
    """Row ranges per shard for each split, decided before anything is written."""

    def __init__(self, counts: dict[str, int], rows_per_shard: int) -> None:
        self.rows_per_shard = max(1, rows_per_shard)
        self.shards = {s: max(1, math.ceil(n / self.rows_per_shard)) for s, n in counts.items()}
        if not counts:
            self.shards = {DEFAULT_SPLIT: 1}

    def name(self, split: str, shard: int, ext: str) -> str:
        return f"data/{split}-{shard:05d}-of-{self.shards[split]:05d}.{ext}"


class _ShardedWriter:
    """Streams frames into per-split shard files, rolling over every ``rows_per_shard`` rows."""

    def __init__(self, dest: Path, plan: _ShardPlan, ext: str, open_file, write_frame) -> None:
        self.dest, self.plan, self.ext = dest, plan, ext
        self.open_file, self.write_frame = open_file, write_frame
        self.state: dict[str, list] = {}  # split → [shard number, rows in shard, handle]
        self.files: list[str] = []

    def _open(self, split: str, state: list) -> None:
        relative = self.plan.name(split, state[0], self.ext)
        (self.dest / relative).parent.mkdir(parents=True, exist_ok=True)
        state[2] = self.open_file(self.dest / relative)
        self.files.append(relative)

    def write(self, split: str, frame: pl.DataFrame) -> None:
        state = self.state.setdefault(split, [0, 0, None])
        offset = 0
        while offset < frame.height:
            if state[2] is None:
                self._open(split, state)
            take = min(frame.height - offset, self.plan.rows_per_shard - state[1])
            self.write_frame(state[2], frame.slice(offset, take))
            offset += take
            state[1] += take
            if state[1] >= self.plan.rows_per_shard and state[0] + 1 < self.plan.shards[split]:
                state[2].close()
                state[0], state[1], state[2] = state[0] + 1, 0, None

    def close(self) -> list[str]:
        """Close every shard; a split with no rows still gets one empty file (so its schema is known)."""
        for split in self.plan.shards:
            state = self.state.setdefault(split, [0, 0, None])
            if state[2] is None and state[1] == 0 and state[0] == 0:
                self._open(split, state)
        for state in self.state.values():
            if state[2] is not None:
                state[2].close()
        return sorted(self.files)


def _route(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    if SPLIT_COLUMN not in frame.columns:
        return [(DEFAULT_SPLIT, frame)]
    frame = frame.with_columns(pl.col(SPLIT_COLUMN).fill_null(DEFAULT_SPLIT))
    routed = []
    for split in sorted(frame.get_column(SPLIT_COLUMN).unique().to_list()):
        routed.append((split, frame.filter(pl.col(SPLIT_COLUMN) == split).drop(SPLIT_COLUMN)))
    return routed


class _TableSink(Sink):
    shard_rows: int | None = Field(None, ge=1, description="rows per shard (default: from max_shard_size)")
    max_shard_size: int | str = Field("500MB", description="target shard size when shard_rows is not set")

    ext: ClassVar[str] = ""

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        parse_size(value)
        return value

    def _rows_per_shard(self, store: PartStore, total: int) -> int:
        if self.shard_rows:
            return self.shard_rows
        bytes_per_row = store.total_bytes() / max(total, 1)
        return max(1, int(parse_size(self.max_shard_size) / max(bytes_per_row, 1)))

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        counts = split_counts(store)
        plan = _ShardPlan(counts, self._rows_per_shard(store, sum(counts.values())))
        schema = store.schema()
        data_schema = pl.Schema({k: v for k, v in schema.items() if k != SPLIT_COLUMN})
        writer = self._writer(dest, plan, data_schema)
        for frame in store.iter_batches():
            for split, part in _route(conform(frame, schema)):
                writer.write(split, part)
        files = writer.close()
        return {
            "format": self.name,
            "splits": {s: counts.get(s, 0) for s in plan.shards},
            "files": files,
            "data_files": {s: f"data/{s}-*.{self.ext}" for s in plan.shards},
            "columns": {k: str(v) for k, v in data_schema.items()},
        }

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        raise NotImplementedError


@register_sink("parquet")
class ParquetSink(_TableSink):
    """Zstd Parquet shards under data/, opened by `datasets.load_dataset(folder)`."""

    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] = "zstd"
    compression_level: int | None = None
    row_group_rows: int = Field(10_000, ge=1)
    ext: ClassVar[str] = "parquet"

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        import pyarrow.parquet as pq

        arrow_schema = plain_schema(pl.DataFrame(schema=schema).to_arrow().schema)

        def open_file(path: Path):
            return pq.ParquetWriter(
                path, arrow_schema, compression=self.compression, compression_level=self.compression_level
            )

        def write_frame(handle, frame: pl.DataFrame) -> None:
            handle.write_table(to_plain_arrow(frame, arrow_schema), row_group_size=self.row_group_rows)

        return _ShardedWriter(dest, plan, self.ext, open_file, write_frame)


@register_sink("jsonl")
class JsonlSink(_TableSink):
    """JSON Lines shards under data/ (one object per line, UTF-8)."""

    ext: ClassVar[str] = "jsonl"

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        def open_file(path: Path):
            return open(path, "wb")

        def write_frame(handle, frame: pl.DataFrame) -> None:
            if frame.height:
                frame.write_ndjson(handle)

        return _ShardedWriter(dest, plan, self.ext, open_file, write_frame)
