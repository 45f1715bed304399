"""A recipe source → a stream of batches: read, map fields, weight, cap, tag with ``source``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dsforge.errors import InputError
from dsforge.io.readers import RawBatch, read_file, read_hf_hub
from dsforge.recipe import SourceSpec

SOURCE_COLUMN = "source"


@dataclass
class SourceStats:
    """What reading one source found; merged into the funnel."""

    name: str
    rows_read: int = 0
    rows_emitted: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "rows_read": self.rows_read,
            "rows_emitted": self.rows_emitted,
            "malformed": self.malformed,
            "malformed_examples": self.examples,
            "skipped": dict(sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def _raw_batches(spec: SourceSpec, files: list[Path], batch_size: int) -> Iterator[RawBatch]:
    if spec.hf is not None:
        yield from read_hf_hub(spec.hf, spec.config, spec.split, spec.revision, batch_size)
        return
    for path in files:
        yield from read_file(
            path,
            spec.format,
            batch_size,
            text_mode=spec.text_mode,
            text_field=spec.text_field,
            split=spec.split,
        )


def _map_fields(frame: pl.DataFrame, spec: SourceSpec, where: str) -> pl.DataFrame:
    if frame.width == 0:
        return frame
    if spec.fields:
        exprs = []
        for new, old in spec.fields.items():
            root, _, rest = old.partition(".")
            if root not in frame.columns:
                raise InputError(
                    f"{where}.fields.{new}: input has no field {old!r} (fields: {', '.join(frame.columns)})"
                )
            expr = pl.col(root)
            for part in rest.split(".") if rest else []:
                expr = expr.struct.field(part)
            exprs.append(expr.alias(new))
        renamed = set(spec.fields.values())
        frame = frame.with_columns(exprs).drop(
            [c for c in renamed if c in frame.columns and c not in spec.fields]
        )
    if spec.columns is not None:
        missing = [c for c in spec.columns if c not in frame.columns]
        if missing:
            raise InputError(
                f"{where}.columns: input has no field {missing[0]!r} (fields: {', '.join(frame.columns)})"
            )
        frame = frame.select(spec.columns)
    return frame


def _tag_source(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    if SOURCE_COLUMN in frame.columns:
        frame = frame.rename({SOURCE_COLUMN: "original_source"})
    return frame.with_columns(pl.lit(name, dtype=pl.String).alias(SOURCE_COLUMN))


def _apply_weight(frame: pl.DataFrame, weight: float, rng: np.random.Generator) -> pl.DataFrame:
    """Repeat each row floor(w) times plus once more with probability frac(w) (seeded)."""
    if weight == 1.0 or frame.height == 0:
        return frame
    whole, frac = int(weight), weight - int(weight)
    counts = np.full(frame.height, whole, dtype=np.int64)
    if frac > 0:
        counts += rng.random(frame.height) < frac
    return frame[np.repeat(np.arange(frame.height), counts)]


def iter_source(
    spec: SourceSpec,
    index: int,
    name: str,
    files: list[Path],
    batch_size: int,
    seed: int,
    stats: SourceStats,
    limit: int | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the source's batches, ready for the first step; errors are recorded in ``stats``."""
    where = f"sources.{index}"
    rng = np.random.default_rng([seed, index])
    cap_read = limit
    for raw in _raw_batches(spec, files, batch_size):
        stats.skipped.update(raw.skipped)
        if raw.errors:
            if spec.on_error == "fail":
                raise InputError(raw.errors[0])
            stats.malformed += len(raw.errors)
            room = 20 - len(stats.examples)
            stats.examples.extend(raw.errors[: max(room, 0)])
        frame = raw.frame
        if frame.height == 0:
            continue
        if cap_read is not None:
            frame = frame.head(cap_read - stats.rows_read)
        stats.rows_read += frame.height
        frame = _tag_source(_map_fields(frame, spec, where), name)
        frame = _apply_weight(frame, spec.weight, rng)
        if spec.max_rows is not None:
            frame = frame.head(spec.max_rows - stats.rows_emitted)
        stats.rows_emitted += frame.height
        if frame.height:
            yield frame
        done_reading = cap_read is not None and stats.rows_read >= cap_read
        if done_reading or (spec.max_rows is not None and stats.rows_emitted >= spec.max_rows):
            break
    if stats.rows_read == 0:
        origin = spec.hf or ", ".join(str(f) for f in files[:3]) or spec.path
        detail = (
            f" ({stats.malformed} malformed records, e.g. {stats.examples[0]})" if stats.malformed else ""
        )
        raise InputError(f"{where}: empty input: no records in {origin}{detail}")
