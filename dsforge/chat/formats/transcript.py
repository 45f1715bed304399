"""Anthropic HH-RLHF transcripts: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings → turns.

Columnar: each speaker marker (``Human:``/``Assistant:`` at the start or after a blank line) is
replaced by a control-character separator, the string is split on it and each piece split into
role and text. Text is stripped of surrounding whitespace (the markers' own spacing). A transcript
that holds those control characters itself, has no marker, or has text before its first marker is
unconvertible (named in the drop reason), never guessed at.
"""

from __future__ import annotations

import polars as pl

from dsforge.chat.formats.turns import NON_STRING, UNCONVERTIBLE, FormatSpec, Job
from dsforge.chat.schema import MESSAGES, MESSAGES_DTYPE
from dsforge.errors import DsforgeError

_TURN = "\x1f"
_ROLE = "\x1e"
_MARKERS = {r"(?:^|\n\n)Human: ?": "user", r"(?:^|\n\n)Assistant: ?": "assistant"}


def convert_hh_rlhf(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    column = job.transcript_field
    if batch.schema[column] not in (pl.String, pl.Null):
        raise DsforgeError(f"{job.where}: transcript column {column!r} is {batch.schema[column]}, not text")
    text = pl.col(column).cast(pl.String)
    marked = text
    for pattern, role in _MARKERS.items():
        marked = marked.str.replace_all(pattern, f"{_TURN}{role}{_ROLE}")
    pieces = marked.str.split(_TURN)
    head = pieces.list.first()
    piece = pl.element()
    turns = (
        pieces.list.slice(1)
        .list.eval(
            pl.struct(
                role=piece.str.split_exact(_ROLE, 1).struct.field("field_0"),
                content=piece.str.split_exact(_ROLE, 1).struct.field("field_1").str.strip_chars(),
            )
        )
        .cast(MESSAGES_DTYPE)
    )
    reason = (
        pl.when(text.is_null())
        .then(pl.lit("no transcript"))
        .when(text.str.contains(f"[{_TURN}{_ROLE}]"))
        .then(pl.lit("transcript holds control characters U+001E/U+001F"))
        .when(pieces.list.len() < 2)
        .then(pl.lit("no Human:/Assistant: markers in transcript"))
        .when(head.str.strip_chars().str.len_chars() > 0)
        .then(pl.lit("text before the first Human:/Assistant: marker"))
    )
    return batch.with_columns(
        turns.alias(MESSAGES), reason.cast(pl.String).alias(UNCONVERTIBLE), pl.lit(False).alias(NON_STRING)
    )


HH_RLHF = FormatSpec(
    "hh_rlhf",
    convert_hh_rlhf,
    required=(),
    summary="a '\\n\\nHuman: …\\n\\nAssistant: …' transcript column (transcript_field, default chosen)",
)
