"""Train/test(/validation) assignment by a seeded stable hash of a group key.

Hashing (rather than shuffling and cutting) streams, needs no global pass, and keeps every
row sharing a key (e.g. the same prompt) in one split, so nothing leaks across splits.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from dsforge.io.sinks import SPLIT_COLUMN
from dsforge.registry import register_step
from dsforge.steps.base import Transform
from dsforge.steps.columns import require_columns
from dsforge.steps.hashing import key_text, stable_hash, unit_interval


@register_step("split")
class Split(Transform):
    """Assign each row to train/test (and optionally validation) by a hash of its group key."""

    test_size: float = Field(0.1, ge=0, lt=1)
    validation_size: float = Field(0.0, ge=0, lt=1)
    by: list[str] | None = Field(None, description="group-key columns; rows sharing them share a split")
    roles: list[str] | None = Field(
        None, description="for conversation columns in `by`: key on these roles' turns only, e.g. [user]"
    )
    seed: int | None = None
    example = {"test_size": 0.05, "by": ["messages"], "roles": ["user"]}

    @model_validator(mode="after")
    def _sizes(self) -> Split:
        if self.test_size + self.validation_size >= 1:
            raise ValueError("test_size + validation_size must be below 1")
        return self

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        columns = self.by or [c for c in batch.columns if c != SPLIT_COLUMN]
        require_columns(self, batch, columns)
        seed = self.context.seed if self.seed is None else self.seed
        u = unit_interval(stable_hash(key_text(batch, columns, self.roles), seed=seed))
        split = (
            pl.when(u < self.test_size)
            .then(pl.lit("test"))
            .when(u < self.test_size + self.validation_size)
            .then(pl.lit("validation"))
            .otherwise(pl.lit("train"))
        )
        return batch.with_columns(split.alias(SPLIT_COLUMN))
