"""The ``decontaminate`` step: drop or flag rows that share word n-grams with benchmark items.

Text comes from plain string columns, lists of strings, or chat ``messages`` columns (a list of
``{role, content}`` structs; only turns whose role is in ``roles`` are checked). Every piece of
text is matched on its own (n-grams never span two turns or two columns; ``join_columns: true``
joins the string columns with a newline first, e.g. an Alpaca instruction and its input, which
benchmarks such as AlpacaEval store as one prompt), then the hits are summed per row and
benchmark item. A row is contaminated by an item when it shares at least
``min_overlap`` distinct grams with it and, if ``min_fraction`` is set, at least that fraction
of the item's distinct grams.

Which items were hit is never lost: per-benchmark row counts go to the funnel
(``contaminated_<benchmark>`` metrics), and every row carries ``contaminated_items``
("benchmark:item_id") — in drop mode on the dropped rows only, which ``output.keep_dropped: true``
saves (set ``items_column: null`` to leave the column out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, PrivateAttr, model_validator

from dsforge.decontam.benchmarks import BenchmarkSpec, load_benchmark
from dsforge.decontam.ngram_index import NgramIndex
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import DROPPED_ONLY_PREFIX, METRIC_PREFIX, Transform, merge_drop_reason
from dsforge.steps.columns import require_columns

ROW = "__decontam_row__"


@register_step("decontaminate")
class Decontaminate(Transform):
    """Find benchmark items (GSM8K, MMLU, HumanEval…) inside training rows by shared word n-grams."""

    benchmarks: list[BenchmarkSpec] = Field(min_length=1)
    ngram: int = Field(13, ge=1, le=64)
    columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    join_columns: bool = Field(False, description="match the text columns joined as one text per row")
    roles: list[str] = Field(default_factory=lambda: ["user"], min_length=1)
    min_overlap: int = Field(1, ge=1)
    min_fraction: float | None = Field(None, gt=0, le=1)
    min_item_tokens: int = Field(1, ge=1, description="benchmark texts with fewer tokens are not indexed")
    mode: Literal["drop", "flag"] = "drop"
    items_column: str | None = "contaminated_items"
    example = {
        "benchmarks": [{"name": "gsm8k", "path": "bench/gsm8k_test.jsonl"}],
        "ngram": 13,
        "columns": ["instruction", "output"],
        "mode": "drop",
    }

    _index: NgramIndex | None = PrivateAttr(default=None)
    _items: pl.DataFrame | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_names(self) -> Decontaminate:
        names = [b.name for b in self.benchmarks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"benchmark name {repeated[0]!r} is used twice; give each file its own name "
                f"(e.g. {repeated[0]}_val) and set 'pack' to choose the loader"
            )
        return self

    def _where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    def fingerprint_extra(self) -> str:
        return repr(
            [(b.path, Path(b.path).stat().st_size, Path(b.path).stat().st_mtime_ns) for b in self.benchmarks]
        )

    # ------------------------------------------------------------------ index
    def setup(self) -> None:
        if self._index is not None:
            return
        try:
            texts = pl.concat([load_benchmark(spec) for spec in self.benchmarks])
        except DsforgeError as exc:
            raise DsforgeError(f"{self._where()}: {exc}") from None
        if self.min_item_tokens > 1:
            from dsforge.decontam.ngram_index import tokenize

            _, lengths = tokenize(texts.get_column("text"))
            texts = texts.filter(pl.Series(lengths >= self.min_item_tokens))
        self._index = NgramIndex.build(texts, self.ngram)
        self._items = self._index.items

    @property
    def index(self) -> NgramIndex:
        self.setup()
        assert self._index is not None
        return self._index

    # ------------------------------------------------------------------ text pieces
    def _pieces(self, batch: pl.DataFrame) -> pl.DataFrame:
        """Every text to check as (row, text) rows: one per column value, turn or list element."""
        require_columns(self, batch, self.columns)
        rows = batch.select(self.columns).with_row_index(ROW)
        pieces = []
        columns = self.columns
        if self.join_columns:
            strings = [c for c in columns if batch.schema[c] == pl.String]
            joined = pl.concat_str(strings, separator="\n", ignore_nulls=True).alias("text")
            pieces.append(rows.select(ROW, joined))
            columns = [c for c in columns if c not in strings]
        for column in columns:
            dtype = batch.schema[column]
            part = rows.select(ROW, pl.col(column).alias("text"))
            if dtype == pl.String:
                pass
            elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
                part = part.explode("text")
            elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
                fields = {f.name for f in dtype.inner.fields}
                if not {"role", "content"} <= fields:
                    raise DsforgeError(
                        f"{self._where()}: column {column!r} holds structs without role/content "
                        f"(fields: {', '.join(sorted(fields))})"
                    )
                part = part.explode("text").drop_nulls("text").unnest("text")
                part = part.filter(pl.col("role").is_in(self.roles)).select(
                    ROW, pl.col("content").cast(pl.String).alias("text")
                )
            else:
                raise DsforgeError(
                    f"{self._where()}: column {column!r} is {dtype}; expected text, a list of texts "
                    "or chat messages (list of {role, content})"
                )
            pieces.append(part.drop_nulls("text"))
        return pl.concat(pieces)

    # ------------------------------------------------------------------ matching
    def find(self, batch: pl.DataFrame) -> pl.DataFrame:
        """Contaminating (row, benchmark, item_id, matched, ngrams) pairs of a batch."""
        index = self.index
        pieces = self._pieces(batch)
        hits = index.lookup(pieces.get_column("text"))
        piece_rows = pieces.get_column(ROW).to_numpy()
        hits = hits.with_columns(
            pl.Series(ROW, piece_rows[hits.get_column("text").to_numpy()], dtype=pl.UInt32)
        )
        pairs = hits.group_by(ROW, "key").agg(pl.col("h").n_unique().alias("matched"))
        pairs = pairs.join(index.items, on="key").filter(pl.col("matched") >= self.min_overlap)
        if self.min_fraction is not None:
            pairs = pairs.filter(pl.col("matched") >= self.min_fraction * pl.col("ngrams"))
        return pairs.select(ROW, "benchmark", "item_id", "matched", "ngrams").sort(
            ROW, "benchmark", "item_id"
        )

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        pairs = self.find(batch)
        by_bench = (
            pairs.group_by(ROW, "benchmark")
            .agg(pl.col("matched").sum())
            # the drop reason names the benchmark sharing the most grams with the row (ties: alphabetical)
            .sort([ROW, "matched", "benchmark"], descending=[False, True, False])
        )
        per_row = by_bench.group_by(ROW, maintain_order=True).agg(
            pl.col("benchmark").first().alias("top"), pl.col("benchmark").sort().alias("contaminated_by")
        )
        items = pairs.group_by(ROW).agg(
            pl.concat_str("benchmark", pl.lit(":"), "item_id").sort().alias("contaminated_items")
        )
        per_row = per_row.join(items, on=ROW)
        flags = (
            pl.DataFrame({ROW: np.arange(batch.height, dtype=np.uint32)})
            .join(per_row, on=ROW, how="left")
            .sort(ROW)
        )
        metrics = []
        for name in dict.fromkeys(b.name for b in self.benchmarks):
            rows_hit = by_bench.filter(pl.col("benchmark") == name).get_column(ROW).to_numpy()
            counts = np.zeros(batch.height, dtype=np.int64)
            counts[rows_hit] = 1
            metrics.append(pl.Series(f"{METRIC_PREFIX}contaminated_{name}", counts))
        out = batch.with_columns(metrics)
        if self.mode == "flag":
            return out.with_columns(
                flags.get_column("contaminated_by").is_not_null().alias("contaminated"),
                flags.get_column("contaminated_by").fill_null(pl.lit([], dtype=pl.List(pl.String))),
                flags.get_column("contaminated_items")
                .fill_null(pl.lit([], dtype=pl.List(pl.String)))
                .alias(self.items_column or "contaminated_items"),
            )
        if self.items_column is not None:  # travels with the dropped rows only
            items = flags.get_column("contaminated_items").alias(f"{DROPPED_ONLY_PREFIX}{self.items_column}")
            out = out.with_columns(items)
        reason = pl.when(pl.lit(flags.get_column("top")).is_not_null()).then(
            pl.concat_str(pl.lit("contaminated:"), pl.lit(flags.get_column("top")))
        )
        return merge_drop_reason(out, reason)
