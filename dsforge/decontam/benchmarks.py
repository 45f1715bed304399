"""Benchmark files → one frame of (benchmark, item_id, text) rows, the input of the n-gram index.

A *pack* knows where a benchmark keeps its prompt text (GSM8K ``question``, HumanEval ``prompt``…);
the recipe supplies the file, so nothing is downloaded. An item may have several text rows
(MT-Bench turns): n-grams never span two rows, and all rows count for the same ``item_id``.
Items without a natural id get their 0-based row number in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from dsforge.errors import DsforgeError
from dsforge.io.readers import read_file
from dsforge.types import InputPath

ROW = "__row__"


class BenchmarkSpec(BaseModel):
    """One benchmark file in a recipe: a known ``pack`` (defaults to ``name``) or a ``text_field``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: InputPath
    pack: str | None = None
    text_field: str | None = None
    id_field: str | None = None

    @model_validator(mode="after")
    def _known(self) -> BenchmarkSpec:
        if self.text_field is None and self.pack_name not in PACKS:
            raise ValueError(
                f"no benchmark pack {self.pack_name!r} (packs: {', '.join(sorted(PACKS))}); "
                "set 'pack' to one of them, or 'text_field' for a generic file"
            )
        return self

    @property
    def pack_name(self) -> str:
        return self.pack or self.name


def _row_id(frame: pl.DataFrame, by: str | None = None) -> pl.Expr:
    """``<row>`` or ``<by>/<row within by>`` as the item id."""
    if by is None:
        return pl.col(ROW).cast(pl.String)
    return pl.concat_str(pl.col(by), pl.lit("/"), pl.int_range(pl.len()).over(by).cast(pl.String))


def _simple(text: str, item_id: str | None = None, group: str | None = None) -> Callable:
    def load(frame: pl.DataFrame) -> pl.DataFrame:
        ident = pl.col(item_id).cast(pl.String) if item_id else _row_id(frame, group)
        return frame.select(ident.alias("item_id"), pl.col(text).cast(pl.String).alias("text"))

    load.fields = [f for f in (text, item_id, group) if f]  # type: ignore[attr-defined]
    return load


def _mmlu(frame: pl.DataFrame) -> pl.DataFrame:
    """Question and its answer choices, one per line (they are what a leaked item contains)."""
    text = pl.concat_str(pl.col("question"), pl.col("choices").list.join("\n"), separator="\n")
    return frame.select(_row_id(frame, "subject").alias("item_id"), text.alias("text"))


_mmlu.fields = ["subject", "question", "choices"]  # type: ignore[attr-defined]


def _turns(frame: pl.DataFrame) -> pl.DataFrame:
    """MT-Bench / Vicuna-Bench: every turn (a list of strings) is a text row of the question."""
    out = frame.select(pl.col("question_id").cast(pl.String).alias("item_id"), pl.col("turns").alias("text"))
    return out.explode("text").drop_nulls("text")


_turns.fields = ["question_id", "turns"]  # type: ignore[attr-defined]


def _arena_hard(frame: pl.DataFrame) -> pl.DataFrame:
    """Arena-Hard: ``turns`` is a list of ``{content}`` messages; each content is a text row."""
    out = frame.select(pl.col("question_id").cast(pl.String).alias("item_id"), pl.col("turns").alias("t"))
    out = out.explode("t").drop_nulls("t")
    return out.select("item_id", pl.col("t").struct.field("content").alias("text"))


_arena_hard.fields = ["question_id", "turns"]  # type: ignore[attr-defined]

#: pack name → function(file frame with a ROW column) → (item_id, text) rows
PACKS: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "gsm8k": _simple("question"),
    "humaneval": _simple("prompt", item_id="task_id"),
    "mmlu": _mmlu,
    "truthfulqa": _simple("Question"),
    "ifeval": _simple("prompt", item_id="key"),
    "bbh": _simple("input", group="task"),
    "mt_bench": _turns,
    "vicuna_bench": _turns,
    "alpaca_eval": _simple("instruction"),
    "arena_hard": _arena_hard,
    "cmmlu": _simple("question", group="subject"),
}


def read_table(path: Path) -> pl.DataFrame:
    """A whole benchmark file (jsonl/json/csv/parquet, optionally gz/zst) as one frame."""
    frames, errors = [], []
    for raw in read_file(path, "auto", 100_000, text_mode="line", text_field="text", split="train"):
        frames.append(raw.frame)
        errors += raw.errors
    if errors:
        raise DsforgeError(f"{errors[0]} ({len(errors)} unreadable records)")
    frames = [f for f in frames if f.width]
    if not frames:
        raise DsforgeError(f"{path}: no records")
    return pl.concat(frames, how="diagonal_relaxed").with_row_index(ROW)


def _generic(frame: pl.DataFrame, spec: BenchmarkSpec) -> pl.DataFrame:
    field = spec.text_field
    assert field is not None
    ident = pl.col(spec.id_field).cast(pl.String) if spec.id_field else _row_id(frame)
    out = frame.select(ident.alias("item_id"), pl.col(field).alias("text"))
    dtype = out.schema["text"]
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        out = out.explode("text")
    elif dtype != pl.String:
        raise DsforgeError(f"text_field {field!r} must be text or a list of texts, not {dtype}")
    return out


def load_benchmark(spec: BenchmarkSpec) -> pl.DataFrame:
    """Rows (benchmark, item_id, text) of one benchmark; empty texts are removed."""
    frame = read_table(Path(spec.path))
    if spec.text_field is not None:
        needed = [spec.text_field] + ([spec.id_field] if spec.id_field else [])
    else:
        needed = list(PACKS[spec.pack_name].fields)  # type: ignore[attr-defined]
    missing = [f for f in needed if f not in frame.columns]
    if missing:
        hint = "" if spec.text_field else f" (pack {spec.pack_name!r} expects {', '.join(needed)})"
        raise DsforgeError(
            f"benchmark {spec.name!r}: {spec.path} has no field {missing[0]!r}{hint}; "
            f"fields: {', '.join(c for c in frame.columns if c != ROW)}"
        )
    items = _generic(frame, spec) if spec.text_field else PACKS[spec.pack_name](frame)
    return items.filter(pl.col("text").str.strip_chars() != "").select(
        pl.lit(spec.name).alias("benchmark"), pl.col("item_id").cast(pl.String), pl.col("text")
    )
