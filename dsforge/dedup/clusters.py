"""Near-duplicate clusters shared by the dedup steps: who is kept, and marking rows in pass 2."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

from dsforge.dedup.unionfind import connected_components
from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.steps.base import DROP_COLUMN, METRIC_PREFIX, Step


def check_text_column(step: Step, store: PartStore, column: str) -> None:
    """A near-dedup step compares text: the column must exist and hold strings (one clear line if not)."""
    schema = store.schema()
    where = f"steps.{step.context.step_index} ({step.name})"
    if column not in schema:
        raise DsforgeError(f"{where}: no column {column!r} (columns here: {', '.join(schema)})")
    if schema[column] != pl.String:
        raise DsforgeError(f"{where}: column {column!r} is {schema[column]}, not text")


class Clusters:
    """Rows that have a near duplicate: their cluster (smallest row), its size, and who is kept."""

    def __init__(self, rows: np.ndarray, cluster: np.ndarray, size: np.ndarray, kept: np.ndarray) -> None:
        self.rows, self.cluster, self.size, self.kept = rows, cluster, size, kept

    @property
    def count(self) -> int:
        return int(np.unique(self.cluster).size)

    @classmethod
    def build(cls, left: np.ndarray, right: np.ndarray, priority) -> Clusters:
        if left.size == 0:
            empty = np.empty(0, np.int64)
            return cls(empty, empty, empty, np.empty(0, bool))
        rows, cluster = connected_components(left, right)
        _, inverse, sizes = np.unique(cluster, return_inverse=True, return_counts=True)
        order = np.lexsort((rows, priority(rows), cluster))  # by cluster, then policy, then row
        first_of_cluster = np.r_[True, cluster[order][1:] != cluster[order][:-1]]
        kept = np.zeros(rows.size, dtype=bool)
        kept[order[first_of_cluster]] = True
        return cls(rows, cluster, sizes[inverse].astype(np.int64), kept)

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For consecutive row numbers: cluster id, cluster size and kept flag of each."""
        cluster_id = rows.copy()
        size = np.ones(rows.size, dtype=np.int64)
        kept = np.ones(rows.size, dtype=bool)
        if rows.size and self.rows.size:
            lo, hi = np.searchsorted(self.rows, [rows[0], rows[-1] + 1])
            local = self.rows[lo:hi] - rows[0]
            cluster_id[local] = self.cluster[lo:hi]
            size[local] = self.size[lo:hi]
            kept[local] = self.kept[lo:hi]
        return cluster_id, size, kept


def mark_clusters(
    store: PartStore, clusters: Clusters, mode: str, reason: str, metrics: dict[str, int]
) -> Iterator[pl.DataFrame]:
    """Stream the stored rows again: drop the non-kept members of each cluster with ``reason``
    (``mode: drop``) or add ``cluster_id``/``cluster_size``/``cluster_keep`` (``mode: annotate``).
    The step's counts ride on the first row as metrics."""
    offset = 0
    pending_metrics = True
    for batch in store.iter_batches():
        rows = np.arange(offset, offset + batch.height, dtype=np.int64)
        offset += batch.height
        cluster_id, cluster_size, kept = clusters.lookup(rows)
        if mode == "drop":
            batch = batch.with_columns(
                pl.when(pl.Series(~kept))
                .then(pl.lit(reason))
                .otherwise(pl.lit(None, dtype=pl.String))
                .alias(DROP_COLUMN)
            )
        else:
            batch = batch.with_columns(
                pl.Series("cluster_id", cluster_id),
                pl.Series("cluster_size", cluster_size),
                pl.Series("cluster_keep", kept),
            )
        if pending_metrics and batch.height:
            pending_metrics = False
            batch = batch.with_columns(
                pl.Series(METRIC_PREFIX + name, np.r_[value, np.zeros(batch.height - 1, np.int64)])
                for name, value in metrics.items()
            )
        yield batch
