"""Open Assistant message trees (``prompt`` with nested ``replies``) → one or more conversations.

A tree is walked in Python (nested replies of any depth are not a columnar shape): one call per
batch over ``prompt.to_list()``. Messages marked ``deleted`` or with ``review_result`` false are
skipped together with their subtrees.

* ``best``: from the root, follow at each level the best-ranked usable reply (lowest ``rank``;
  unranked replies after ranked ones, ties by position), to a leaf; trailing prompter turns are
  cut so the conversation ends on the assistant. One conversation per tree.
* ``all``: every path from the root to an assistant message that no longer usable path extends
  (a leaf, or a message whose replies lead only to unanswered prompter turns): each leaf of the
  tree once its unanswered prompter branches are cut. Rows multiply; no path is a prefix of another.

``source_id`` is ``<message_tree_id>/<message_id of the last turn>``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from dsforge.chat.formats.turns import NON_STRING, UNCONVERTIBLE, FormatSpec, Job
from dsforge.chat.schema import MESSAGES, MESSAGES_DTYPE
from dsforge.errors import DsforgeError

_ROLES = {"prompter": "user", "assistant": "assistant"}
Path = list[dict[str, Any]]


def _usable(message: dict[str, Any]) -> bool:
    return message.get("deleted") is not True and message.get("review_result") is not False


def _children(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [reply for reply in (message.get("replies") or []) if reply and _usable(reply)]


def _rank_key(indexed: tuple[int, dict[str, Any]]) -> tuple[bool, float, int]:
    position, message = indexed
    rank = message.get("rank")
    return (rank is None, float(rank) if rank is not None else 0.0, position)


def best_path(root: dict[str, Any]) -> list[Path]:
    path, node = [root], root
    while children := _children(node):
        node = min(enumerate(children), key=_rank_key)[1]
        path.append(node)
    while path and path[-1].get("role") != "assistant":
        path.pop()
    return [path] if path else []


def all_paths(root: dict[str, Any]) -> list[Path]:
    """Every path from ``root`` ending on an assistant message no longer path continues."""
    found: list[Path] = []
    for child in _children(root):
        found.extend([root, *path] for path in all_paths(child))
    if not found and root.get("role") == "assistant":
        found.append([root])
    return found


def _turns(path: Path) -> list[dict[str, str | None]]:
    return [{"role": _ROLES.get(m.get("role") or "", m.get("role")), "content": m.get("text")} for m in path]


def convert_oasst(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    column = job.col("prompt")
    if not isinstance(batch.schema[column], pl.Struct):
        raise DsforgeError(
            f"{job.where}: oasst 'prompt' column {column!r} is {batch.schema[column]}, not a tree"
        )
    walk = all_paths if job.oasst_paths == "all" else best_path
    tree_column = job.col("message_tree_id")
    tree_ids = (
        batch.get_column(tree_column).cast(pl.String).to_list() if tree_column in batch.columns else None
    )
    rows, conversations, ids, reasons = [], [], [], []
    for index, root in enumerate(batch.get_column(column).to_list()):
        paths = walk(root) if root and _usable(root) else []
        if not paths:
            rows.append(index)
            conversations.append(None)
            ids.append(None)
            reasons.append("oasst tree has no usable path ending on an assistant reply")
            continue
        tree = tree_ids[index] if tree_ids else (root.get("message_id") or "")
        for path in paths:
            rows.append(index)
            conversations.append(_turns(path))
            ids.append(f"{tree}/{path[-1].get('message_id')}")
            reasons.append(None)
    frame = batch.drop(column)[rows] if rows else batch.drop(column).clear()
    return frame.with_columns(
        pl.Series(MESSAGES, conversations, dtype=MESSAGES_DTYPE),
        pl.Series(UNCONVERTIBLE, reasons, dtype=pl.String),
        pl.lit(False).alias(NON_STRING),
        pl.Series("source_id", ids, dtype=pl.String),
    )


OASST = FormatSpec(
    "oasst",
    convert_oasst,
    required=("prompt",),
    optional=("message_tree_id",),
    summary="prompt {text, role, rank, replies: [...]} (Open Assistant trees)",
)
