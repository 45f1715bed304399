"""Column housekeeping: select, rename, drop, and filters on simple conditions."""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import Filter, Step, Transform


def require_columns(step: Step, batch: pl.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in batch.columns]
    if missing:
        raise DsforgeError(
            f"steps.{step.context.step_index} ({step.name}): no column {missing[0]!r} "
            f"(columns here: {', '.join(batch.columns)})"
        )


@register_step("select_columns")
class SelectColumns(Transform):
    """Keep only the listed columns, in that order."""

    columns: list[str] = Field(min_length=1)
    example = {"columns": ["text", "source"]}

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, self.columns)
        return batch.select(self.columns)


@register_step("rename_columns")
class RenameColumns(Transform):
    """Rename columns (old name → new name)."""

    mapping: dict[str, str] = Field(min_length=1)
    example = {"mapping": {"content": "text"}}

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, list(self.mapping))
        return batch.rename(self.mapping)


@register_step("drop_columns")
class DropColumns(Transform):
    """Remove columns; names that are absent are ignored."""

    columns: list[str] = Field(min_length=1)
    example = {"columns": ["url", "timestamp"]}

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch.drop([c for c in self.columns if c in batch.columns])


@register_step("length_filter")
class LengthFilter(Filter):
    """Drop rows whose text is shorter or longer than the bounds (characters, bytes or words)."""

    column: str = "text"
    unit: str = Field("chars", pattern="^(chars|bytes|words)$")
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    example = {"column": "text", "unit": "words", "min": 50, "max": 100000}

    @model_validator(mode="after")
    def _bounds(self) -> LengthFilter:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self

    def _length(self) -> pl.Expr:
        text = pl.col(self.column).fill_null("")
        if self.unit == "bytes":
            return text.str.len_bytes()
        if self.unit == "words":
            return text.str.count_matches(r"\S+")
        return text.str.len_chars()

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        require_columns(self, batch, [self.column])
        length = self._length()
        reason = pl.lit(None, dtype=pl.String)
        if self.max is not None:
            reason = (
                pl.when(length > self.max)
                .then(pl.lit(f"longer than {self.max} {self.unit}"))
                .otherwise(reason)
            )
        if self.min is not None:
            reason = (
                pl.when(length < self.min)
                .then(pl.lit(f"shorter than {self.min} {self.unit}"))
                .otherwise(reason)
            )
        return reason


@register_step("drop_empty")
class DropEmpty(Filter):
    """Drop rows where any listed column is null or blank text."""

    columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    example = {"columns": ["instruction", "output"]}

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        require_columns(self, batch, self.columns)
        reason = pl.lit(None, dtype=pl.String)
        for column in reversed(self.columns):
            expr = pl.col(column)
            empty = expr.is_null()
            if batch.schema[column] == pl.String:
                empty = empty | (expr.str.strip_chars() == "")
            reason = pl.when(empty).then(pl.lit(f"empty {column}")).otherwise(reason)
        return reason


@register_step("filter_sql")
class FilterSql(Filter):
    """Keep rows matching a SQL condition on the columns (polars SQL, no Python evaluated)."""

    where: str = Field(min_length=1, description="e.g. \"score >= 4 AND lang = 'en'\"")
    reason: str = "filter_sql"
    example = {"where": "score >= 4 AND language = 'en'", "reason": "low score"}

    @model_validator(mode="after")
    def _parses(self) -> FilterSql:
        try:
            pl.sql_expr(self.where)
        except Exception as exc:
            raise ValueError(f"not a valid SQL condition: {exc}") from None
        return self

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        try:
            keep = batch.select(pl.sql_expr(self.where).fill_null(False)).to_series()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0]
            raise DsforgeError(f"steps.{self.context.step_index} (filter_sql): {first}") from None
        return pl.when(pl.lit(keep)).then(pl.lit(None, dtype=pl.String)).otherwise(pl.lit(self.reason))
