"""`dsforge inspect`: what is in a built dataset folder or a single data file."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from dsforge.errors import InputError
from dsforge.io.readers import detect_format, read_file
from dsforge.stats import print_funnel


def _sample_table(frame: pl.DataFrame, console, rows: int) -> None:
    console.print(f"columns: {', '.join(f'{k}: {v}' for k, v in frame.schema.items())}")
    with pl.Config(fmt_str_lengths=80, tbl_width_chars=160, tbl_rows=rows):
        if rows:
            console.print(str(frame.head(rows)))


def inspect_path(path: Path, rows: int, console) -> None:
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_dir() and (path / "stats.json").exists():
        stats = json.loads((path / "stats.json").read_text())
        output = stats.get("output", {})
        console.print(
            f"dataset {path} (recipe {stats.get('recipe')}, dsforge {stats.get('dsforge_version')})"
        )
        console.print(
            f"format: {output.get('format')}; splits: "
            + ", ".join(f"{k} {v:,}" for k, v in output.get("splits", {}).items())
        )
        print_funnel(stats, console)
        data = sorted((path / "data").glob("*.parquet")) or sorted((path / "data").glob("*.jsonl"))
        if data:
            frame = pl.read_parquet(data[0]) if data[0].suffix == ".parquet" else pl.read_ndjson(data[0])
            _sample_table(frame, console, rows)
        return
    if path.is_dir():
        raise InputError(f"{path}: not a dsforge dataset folder (no stats.json)")
    fmt = detect_format(path)
    frames, errors, total = [], 0, 0
    for raw in read_file(path, fmt, 10_000, text_mode="line", text_field="text", split="train"):
        errors += len(raw.errors)
        total += raw.frame.height
        if sum(f.height for f in frames) < max(rows, 1):
            frames.append(raw.frame)
    console.print(
        f"file {path} (format {fmt}): {total:,} rows" + (f", {errors:,} malformed" if errors else "")
    )
    if frames:
        _sample_table(pl.concat(frames, how="diagonal_relaxed"), console, rows)
