"""Executing row steps on batches: the same function runs in-process or in worker processes.

The executor is the seam where a distributed engine can be swapped in later: it receives
picklable steps and independent tasks, and returns results in task order.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.steps.base import DROP_COLUMN, DROPPED_ONLY_PREFIX, METRIC_PREFIX, Step


@dataclass
class Task:
    """One batch to push through a chain of row steps and write as part ``index``."""

    index: int
    frame: pl.DataFrame
    store_dir: str
    dropped_dir: str | None
    head_stats: list[dict[str, Any]]


def split_drops(
    frame: pl.DataFrame, index: int, name: str
) -> tuple[pl.DataFrame, pl.DataFrame | None, dict, dict]:
    """Separate rows marked with a drop reason and sum metric columns; returns kept, dropped, counts."""
    metrics: dict[str, float] = {}
    metric_columns = [c for c in frame.columns if c.startswith(METRIC_PREFIX)]
    if metric_columns:
        sums = frame.select(pl.col(metric_columns).cast(pl.Float64).sum()).row(0)
        metrics = {c[len(METRIC_PREFIX) :]: float(v or 0) for c, v in zip(metric_columns, sums, strict=True)}
        frame = frame.drop(metric_columns)
    explain = [c for c in frame.columns if c.startswith(DROPPED_ONLY_PREFIX)]
    if DROP_COLUMN not in frame.columns:
        return frame.drop(explain), None, {}, metrics
    drop_mask = frame.get_column(DROP_COLUMN).is_not_null()
    gone = frame.filter(drop_mask)
    counts = dict(gone.get_column(DROP_COLUMN).value_counts().iter_rows()) if gone.height else {}
    kept = frame.filter(~drop_mask).drop([DROP_COLUMN, *explain])
    renames = {DROP_COLUMN: "drop_reason", **{c: c[len(DROPPED_ONLY_PREFIX) :] for c in explain}}
    dropped = gone.rename(renames).with_columns(pl.lit(f"{index}.{name}").alias("drop_step"))
    return kept, dropped, counts, metrics


#: Token-count columns the funnel reads, in order of preference: a count per row (the
#: `count_tokens` step), else the length of the token ids (after `tokenize`).
TOKEN_COUNT_COLUMN = "num_tokens"
TOKEN_IDS_COLUMN = "input_ids"


def token_count(frame: pl.DataFrame) -> pl.Expr | None:
    if TOKEN_COUNT_COLUMN in frame.columns:
        return pl.col(TOKEN_COUNT_COLUMN).cast(pl.Int64)
    if TOKEN_IDS_COLUMN in frame.columns and isinstance(frame.schema[TOKEN_IDS_COLUMN], pl.List):
        return pl.col(TOKEN_IDS_COLUMN).list.len().cast(pl.Int64)
    return None


def measure(frame: pl.DataFrame) -> dict[str, Any]:
    """Rows, bytes and (when the rows carry token counts) tokens of a frame."""
    size = {"rows": frame.height, "bytes": frame.estimated_size()}
    tokens = token_count(frame)
    if tokens is not None:
        size["tokens"] = int(frame.select(tokens.sum()).item() or 0)
    return size


def step_stats(
    index: int,
    name: str,
    before: dict[str, Any],
    kept: pl.DataFrame,
    seconds: float,
    dropped: dict,
    metrics: dict,
) -> dict[str, Any]:
    after = measure(kept)
    stats = {
        "index": index,
        "name": name,
        "rows_in": before["rows"],
        "bytes_in": before["bytes"],
        "rows_out": after["rows"],
        "bytes_out": after["bytes"],
        "seconds": seconds,
        "dropped": dropped,
        "metrics": metrics,
    }
    if "tokens" in after:  # the token ledger: tokens kept per step, and per source
        stats["tokens_in"] = before.get("tokens", after["tokens"])
        stats["tokens_out"] = after["tokens"]
        if "source" in kept.columns and kept.height:
            by_source = kept.group_by("source").agg(token_count(kept).sum()).iter_rows()
            stats["tokens_by_source"] = {str(k): int(v) for k, v in by_source}
    return stats


ROW_INDEX = "__row__"


def run_step(step: Step, frame: pl.DataFrame) -> pl.DataFrame:
    """``step.process``, restricted to the rows of the sources in ``step.apply_to`` if given.

    Rows of other sources pass unchanged and keep their place (rows a step adds follow the row
    they came from), so recipes can mix, say, ready pairs with rated completions.
    """
    if step.apply_to is None:
        return step.process(frame)
    if "source" not in frame.columns:
        raise DsforgeError(
            f"steps.{step.context.step_index} ({step.name}): apply_to needs the 'source' column, "
            "which an earlier step removed"
        )
    mask = frame.get_column("source").is_in(step.apply_to)
    if mask.all():
        return step.process(frame)
    if not mask.any():
        return frame
    indexed = frame.with_row_index(ROW_INDEX)
    done = step.process(indexed.filter(mask))
    merged = pl.concat([done, indexed.filter(~mask)], how="diagonal_relaxed")
    if ROW_INDEX in done.columns:
        merged = merged.sort(ROW_INDEX, maintain_order=True)
    return merged.drop(ROW_INDEX)


def apply_steps(steps: list[tuple[int, Step]], frame: pl.DataFrame) -> tuple[pl.DataFrame, list, list]:
    """Run row steps in order; returns the kept frame, dropped frames and per-step stats."""
    all_stats, all_dropped = [], []
    for index, step in steps:
        start = time.perf_counter()
        before = measure(frame)
        out = run_step(step, frame) if frame.height else frame
        kept, dropped, counts, metrics = split_drops(out, index, step.name)
        seconds = time.perf_counter() - start
        all_stats.append(step_stats(index, step.name, before, kept, seconds, counts, metrics))
        if dropped is not None and dropped.height:
            all_dropped.append(dropped)
        frame = kept
    return frame, all_dropped, all_stats


def run_task(steps: list[tuple[int, Step]], task: Task) -> tuple[int, dict[str, Any]]:
    kept, dropped, stats = apply_steps(steps, task.frame)
    if task.dropped_dir is not None and dropped:
        PartStore(Path(task.dropped_dir)).create().write(
            task.index, pl.concat(dropped, how="diagonal_relaxed")
        )
    meta = {"steps": task.head_stats + stats, "rows": kept.height}
    PartStore(Path(task.store_dir)).write(task.index, kept, meta)
    return task.index, meta


_WORKER_STEPS: list[tuple[int, Step]] = []


def _init_worker(steps: list[tuple[int, Step]]) -> None:
    global _WORKER_STEPS
    _WORKER_STEPS = steps
    for _, step in steps:
        step.setup()


def _run_in_worker(task: Task) -> tuple[int, dict[str, Any]]:
    return run_task(_WORKER_STEPS, task)


class LocalExecutor:
    """Runs tasks in order in this process (workers=1) or in a pool of worker processes."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def map(
        self, steps: list[tuple[int, Step]], tasks: Iterator[Task]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.workers == 1 or not steps:
            for _, step in steps:
                step.setup()
            for task in tasks:
                yield run_task(steps, task)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(steps,)
        ) as pool:
            pending: deque = deque()
            for task in tasks:
                pending.append(pool.submit(_run_in_worker, task))
                while len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
