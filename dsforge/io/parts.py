"""A folder of numbered Parquet parts: the runner's spill and checkpoint format.

Each processed batch becomes ``part-NNNNNNNN.parquet`` plus a ``.json`` sidecar with its
funnel counts. The sidecar is written last, atomically, so a part "exists" only once both are
complete: an interrupted run resumes by skipping the parts it already has. Global steps read
a finished store as many times as they need (e.g. a hashing pass, then a filtering pass).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from dsforge.io.atomic import atomic_path, write_text_atomic

COMPLETE_MARK = "_COMPLETE"
SETTINGS = "_SETTINGS.json"


class PartStore:
    """Numbered parts in one folder. The folder remembers its compression (a settings file), so a
    worker process that opens the store by path writes parts the same way."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._compression: str | None = None

    def create(self, compression: str | None = None) -> PartStore:
        """Make the folder; ``compression`` (none, lz4, zstd) applies to the parts written into it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if compression is not None:
            write_text_atomic(self.root / SETTINGS, json.dumps({"compression": compression}))
            self._compression = compression
        return self

    def reset(self, compression: str | None = None) -> PartStore:
        shutil.rmtree(self.root, ignore_errors=True)
        return self.create(compression)

    @property
    def compression(self) -> str:
        if self._compression is None:
            settings = self.root / SETTINGS
            self._compression = (
                json.loads(settings.read_text())["compression"] if settings.exists() else "none"
            )
        return self._compression

    # -- paths
    def part_path(self, index: int) -> Path:
        return self.root / f"part-{index:08d}.parquet"

    def meta_path(self, index: int) -> Path:
        return self.root / f"part-{index:08d}.json"

    # -- writing
    def write(self, index: int, frame: pl.DataFrame, meta: dict[str, Any] | None = None) -> None:
        codec = "uncompressed" if self.compression == "none" else self.compression
        with atomic_path(self.part_path(index)) as tmp:
            frame.write_parquet(tmp, compression=codec, statistics=False)
        write_text_atomic(self.meta_path(index), json.dumps(meta or {}, sort_keys=True))

    def mark_complete(self, summary: dict[str, Any] | None = None) -> None:
        write_text_atomic(self.root / COMPLETE_MARK, json.dumps(summary or {}, sort_keys=True))

    # -- reading
    @property
    def is_complete(self) -> bool:
        return (self.root / COMPLETE_MARK).exists()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.root / COMPLETE_MARK).read_text())

    def has(self, index: int) -> bool:
        return self.meta_path(index).exists() and self.part_path(index).exists()

    def meta(self, index: int) -> dict[str, Any]:
        return json.loads(self.meta_path(index).read_text())

    def indices(self) -> list[int]:
        found = []
        for meta in self.root.glob("part-*.json"):
            index = int(meta.stem.split("-")[1])
            if self.part_path(index).exists():
                found.append(index)
        return sorted(found)

    def files(self) -> list[Path]:
        return [self.part_path(i) for i in self.indices()]

    def num_rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.files())

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def iter_batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Yield each non-empty part as a frame, in order (optionally only some columns).

        Empty parts (every row of a batch dropped upstream) are passed over: they may lack
        columns that later steps added to the rows that survived elsewhere.
        """
        for path in self.files():
            if pq.ParquetFile(path).metadata.num_rows == 0:
                continue
            yield pl.read_parquet(path, columns=columns) if columns else pl.read_parquet(path)

    def schema(self) -> pl.Schema:
        """One schema for all parts: each column takes the supertype of its per-part types."""
        schemas = [pl.read_parquet_schema(p) for p in self.files()]
        return unify_schemas(schemas)


def unify_schemas(schemas: list[dict[str, pl.DataType]]) -> pl.Schema:
    frames = [pl.DataFrame(schema=s) for s in schemas]
    if not frames:
        return pl.Schema()
    return pl.concat(frames, how="diagonal_relaxed").schema


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Give ``frame`` exactly ``schema``'s columns (order and types), filling missing with nulls."""
    columns = []
    for name, dtype in schema.items():
        if name in frame.columns:
            column = frame.get_column(name)
            columns.append(column if column.dtype == dtype else column.cast(dtype, strict=False))
        else:
            columns.append(pl.Series(name, [None] * frame.height, dtype=dtype))
    return pl.DataFrame(columns, schema=schema) if columns else frame
