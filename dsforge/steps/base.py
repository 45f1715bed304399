"""The step contract: a typed parameter model plus a pure function over a polars batch.

A step *is* its parameters: each step class is a pydantic model whose fields are exactly the
keys of its recipe entry. Steps hold no hidden global state, so a step can be pickled to a
worker process (or another machine) and rebuilt from its parameters alone.

Three shapes:

* :class:`Transform` maps a batch to a batch (add, rewrite or drop columns).
* :class:`Filter` computes, per row, ``None`` (keep) or a drop reason. The runner removes the
  dropped rows and counts the reasons; the step never counts anything itself.
* :class:`GlobalStep` must see the whole stream (dedup, shuffle). The runner hands it a
  re-iterable :class:`~dsforge.io.parts.PartStore` and streams what it yields onwards.

Row-level steps may also emit metric columns named ``__metric__<name>`` (numbers per row);
the runner sums them into the funnel and strips them from the data. Columns named
``__dropped__<name>`` travel with dropped rows only (e.g. which benchmark item was matched).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from dsforge.io.parts import PartStore

DROP_COLUMN = "__drop__"
METRIC_PREFIX = "__metric__"
#: Columns named ``__dropped__<name>`` explain a drop: they are kept (as ``<name>``) on dropped
#: rows only, and removed from the rows that go on.
DROPPED_ONLY_PREFIX = "__dropped__"


class StepContext(BaseModel):
    """What the runner tells a step about the build it runs in (never mutable global state)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    seed: int = 0
    step_index: int = 0
    work_dir: str | None = None


class Step(BaseModel):
    """Base of every step. Subclasses add typed fields (their recipe parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: ClassVar[str] = ""
    #: shown by `dsforge steps NAME`: a minimal recipe entry for this step.
    example: ClassVar[dict] = {}
    _context: StepContext = PrivateAttr(default_factory=StepContext)

    apply_to: list[str] | None = Field(
        None,
        min_length=1,
        description="only rows from these sources go through this step; the others pass unchanged",
    )

    def bind(self, context: StepContext) -> Step:
        """Attach the build context (seed, position); returns self for chaining."""
        self._context = context
        return self

    @property
    def context(self) -> StepContext:
        return self._context

    @property
    def is_global(self) -> bool:
        return False

    def setup(self) -> None:
        """Load heavy resources (tokenizers, models) once per process, lazily."""

    def fingerprint_extra(self) -> str:
        """Extra text mixed into the cache key (e.g. contents of files the step reads)."""
        return ""


class Transform(Step):
    """A batch → batch step."""

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError


class Filter(Transform):
    """A step that keeps or drops rows, naming a reason for each drop.

    Subclasses implement :meth:`drop_reason`, returning a string expression or Series that is
    null for rows to keep. They may first add score columns in :meth:`annotate` (computed
    once, kept in the data when useful, decided on separately).
    """

    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr | pl.Series:
        raise NotImplementedError

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        annotated = self.annotate(batch)
        reason = self.drop_reason(annotated)
        if isinstance(reason, pl.Series):
            reason = pl.lit(reason)
        return merge_drop_reason(annotated, reason)


def merge_drop_reason(batch: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """Set the drop column, keeping an earlier reason if one is already present."""
    reason = reason.cast(pl.String)
    if DROP_COLUMN in batch.columns:
        reason = pl.coalesce(pl.col(DROP_COLUMN), reason)
    return batch.with_columns(reason.alias(DROP_COLUMN))


class GlobalStep(Step):
    """A step that must see the whole stream: it reads the finished store, yields batches."""

    @property
    def is_global(self) -> bool:
        return True

    def run(self, store: PartStore) -> Iterator[pl.DataFrame]:
        raise NotImplementedError
