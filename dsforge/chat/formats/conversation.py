"""Formats that already hold turns: ShareGPT, OpenAI messages, TRL prompt/completion.

All three are columnar: roles are mapped with one ``replace`` over the exploded turns, content
parts are joined with ``list.eval`` (see :mod:`dsforge.chat.formats.turns`).
"""

from __future__ import annotations

import polars as pl

from dsforge.chat.formats.turns import (
    NON_STRING,
    UNCONVERTIBLE,
    FormatSpec,
    Job,
    content_text,
    optional_system,
    single_turn,
    turns_from_list,
)
from dsforge.chat.schema import MESSAGES
from dsforge.errors import DsforgeError


def _turn_keys(dtype: pl.DataType, job: Job, role: str, content: str) -> tuple[str, str]:
    """The struct keys of role and content: the mapped names, else role/content if present."""
    role_key, content_key = job.col(role), job.col(content)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        keys = {f.name for f in dtype.inner.fields}
        if role_key not in keys and content_key not in keys and {"role", "content"} <= keys:
            return "role", "content"
    return role_key, content_key


def convert_sharegpt(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    """``conversations`` [{from, value}]; a ``system`` column is used when the turns have none."""
    column = job.col("conversations")
    dtype = batch.schema[column]
    role_key, content_key = _turn_keys(dtype, job, "from", "value")
    turns, non_string = turns_from_list(column, dtype, role_key, content_key, job.where)
    if job.has(batch, "system"):
        system_column = job.col("system")
        system, system_bad = content_text(pl.col(system_column), batch.schema[system_column])
        first_role = turns.list.first().struct.field("role")
        own = (first_role == "system").fill_null(False)
        turns = pl.when(own).then(turns).otherwise(pl.concat_list([optional_system(system), turns]))
        non_string = non_string | (system_bad & ~own)
    return batch.with_columns(
        turns.alias(MESSAGES),
        pl.lit(None, dtype=pl.String).alias(UNCONVERTIBLE),
        non_string.alias(NON_STRING),
    )


def convert_openai(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    """``messages`` [{role, content}]: roles normalized, text parts joined, tool calls kept as JSON."""
    column = job.col("messages")
    dtype = batch.schema[column]
    turns, non_string = turns_from_list(column, dtype, job.col("role"), job.col("content"), job.where)
    return batch.with_columns(
        turns.alias(MESSAGES),
        pl.lit(None, dtype=pl.String).alias(UNCONVERTIBLE),
        non_string.alias(NON_STRING),
    )


def _side(batch: pl.DataFrame, job: Job, name: str, role: str) -> tuple[pl.Expr, pl.Expr]:
    column = job.col(name)
    dtype = batch.schema[column]
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        role_key, content_key = _turn_keys(dtype, job, "role", "content")
        return turns_from_list(column, dtype, role_key, content_key, job.where)
    if isinstance(dtype, pl.List | pl.Struct):
        raise DsforgeError(
            f"{job.where}: {name!r} column {column!r} is {dtype}: neither text nor a list of turns"
        )
    text, bad = content_text(pl.col(column), dtype)
    return single_turn(role, text), bad


def convert_prompt_completion(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    """TRL prompt/completion: strings (one user and one assistant turn) or lists of turns."""
    prompt, prompt_bad = _side(batch, job, "prompt", "user")
    completion, completion_bad = _side(batch, job, "completion", "assistant")
    return batch.with_columns(
        pl.concat_list([prompt, completion]).alias(MESSAGES),
        pl.lit(None, dtype=pl.String).alias(UNCONVERTIBLE),
        (prompt_bad | completion_bad).alias(NON_STRING),
    )


SHAREGPT = FormatSpec(
    "sharegpt",
    convert_sharegpt,
    required=("conversations",),
    optional=("from", "value", "system", "tools"),
    keeps=("tools", "from", "value"),
    summary="conversations [{from, value}] (+ system, tools)",
)
OPENAI = FormatSpec(
    "openai",
    convert_openai,
    required=("messages",),
    optional=("role", "content"),
    keeps=("role", "content"),
    summary="messages [{role, content}]",
)
PROMPT_COMPLETION = FormatSpec(
    "prompt_completion",
    convert_prompt_completion,
    required=("prompt", "completion"),
    optional=("role", "content"),
    keeps=("role", "content"),
    summary="prompt, completion (strings or lists of turns)",
)
