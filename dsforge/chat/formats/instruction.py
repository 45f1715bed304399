"""Instruction formats: Alpaca, Dolly and Self-Instruct rows → one user turn and one answer.

The prompt rule (all three): the instruction, then a blank line, then the input/context —
either alone when the other is blank. LLaMA-Factory joins with one newline; a blank line keeps
the two visibly apart in every chat template. Alpaca ``system`` becomes a leading system turn
(when non-blank) and ``history`` ([[user, assistant], ...]) becomes the earlier turns.
"""

from __future__ import annotations

import polars as pl

from dsforge.chat.formats.turns import (
    EMPTY_TURNS,
    NON_STRING,
    UNCONVERTIBLE,
    FormatSpec,
    Job,
    content_text,
    optional_system,
    single_turn,
)
from dsforge.chat.schema import MESSAGES, MESSAGES_DTYPE
from dsforge.errors import DsforgeError

PROMPT_SEPARATOR = "\n\n"
_INSTANCE_INDEX = "__instance_index__"


def _text(batch: pl.DataFrame, job: Job, name: str) -> tuple[pl.Expr, pl.Expr]:
    """A string field as text (null when absent) and whether its value was not text."""
    if not job.has(batch, name):
        return pl.lit(None, dtype=pl.String), pl.lit(False)
    column = job.col(name)
    return content_text(pl.col(column), batch.schema[column])


def _prompt(instruction: pl.Expr, extra: pl.Expr) -> pl.Expr:
    def present(e: pl.Expr) -> pl.Expr:
        return (e.str.strip_chars().str.len_chars() > 0).fill_null(False)

    both = instruction + pl.lit(PROMPT_SEPARATOR) + extra
    return (
        pl.when(present(instruction) & present(extra))
        .then(both)
        .when(present(extra))
        .then(extra)
        .otherwise(instruction)
    )


def _history(batch: pl.DataFrame, job: Job) -> tuple[pl.Expr, pl.Expr]:
    """Alpaca ``history`` pairs → earlier turns, and the rows whose pairs are not [user, assistant]."""
    if not job.has(batch, "history"):
        return EMPTY_TURNS, pl.lit(False)
    column = job.col("history")
    dtype = batch.schema[column]
    if dtype == pl.Null or (isinstance(dtype, pl.List) and dtype.inner == pl.Null):
        return EMPTY_TURNS, pl.lit(False)
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.List)):
        raise DsforgeError(
            f"{job.where}: alpaca 'history' column {column!r} is {dtype}, not [[user, assistant]]"
        )
    pair = pl.element()
    turns = (
        pl.col(column)
        .list.eval(
            pl.concat_list(
                [
                    pl.struct(
                        role=pl.lit("user"), content=pair.list.get(0, null_on_oob=True).cast(pl.String)
                    ),
                    pl.struct(
                        role=pl.lit("assistant"), content=pair.list.get(1, null_on_oob=True).cast(pl.String)
                    ),
                ]
            )
        )
        .list.eval(pl.element().list.explode(keep_nulls=False, empty_as_null=False))
        .cast(MESSAGES_DTYPE)
    )
    bad = pl.col(column).list.eval(pair.list.len() != 2).list.any().fill_null(False)
    return turns.fill_null(EMPTY_TURNS), bad


def _assemble(batch: pl.DataFrame, job: Job, instruction: str, extra: str, answer: str) -> pl.DataFrame:
    inst, inst_bad = _text(batch, job, instruction)
    more, more_bad = _text(batch, job, extra)
    out, out_bad = _text(batch, job, answer)
    system, system_bad = _text(batch, job, "system")
    history, history_bad = _history(batch, job)
    messages = pl.concat_list(
        [
            optional_system(system),
            history,
            single_turn("user", _prompt(inst, more)),
            single_turn("assistant", out),
        ]
    )
    return batch.with_columns(
        messages.alias(MESSAGES),
        pl.when(history_bad)
        .then(pl.lit("alpaca history entry is not a [user, assistant] pair"))
        .alias(UNCONVERTIBLE),
        (inst_bad | more_bad | out_bad | system_bad).alias(NON_STRING),
    )


def convert_alpaca(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    return _assemble(batch, job, "instruction", "input", "output")


def convert_dolly(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    return _assemble(batch, job, "instruction", "context", "response")


def convert_self_instruct(batch: pl.DataFrame, job: Job) -> pl.DataFrame:
    """One conversation per instance; ``source_id`` = task id + ``#`` + instance index."""
    column = job.col("instances")
    dtype = batch.schema[column]
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
        raise DsforgeError(
            f"{job.where}: self_instruct 'instances' column {column!r} is {dtype}, not [{{input, output}}]"
        )
    keys = {f.name for f in dtype.inner.fields}
    if "output" not in keys:
        raise DsforgeError(
            f"{job.where}: self_instruct instances have no 'output' (fields: {', '.join(keys)})"
        )
    index = pl.int_ranges(0, pl.col(column).list.len()).alias(_INSTANCE_INDEX)
    frame = batch.with_columns(index).explode([column, _INSTANCE_INDEX], empty_as_null=True, keep_nulls=True)
    instance = pl.col(column)
    parts = {"__si_input__": "input", "__si_output__": "output"}
    frame = frame.with_columns(
        [
            (instance.struct.field(key) if key in keys else pl.lit(None, dtype=pl.String)).alias(alias)
            for alias, key in parts.items()
        ]
    )
    inner = Job({**job.names, "input": "__si_input__", "output": "__si_output__"}, job.where)
    frame = _assemble(frame, inner, "instruction", "input", "output")
    missing = pl.when(pl.col(column).is_null()).then(pl.lit("self_instruct task has no instances"))
    frame = frame.with_columns(pl.coalesce(pl.col(UNCONVERTIBLE), missing).alias(UNCONVERTIBLE))
    if job.has(batch, "id"):
        task = pl.col(job.col("id")).cast(pl.String)
        frame = frame.with_columns((task + "#" + pl.col(_INSTANCE_INDEX).cast(pl.String)).alias("source_id"))
    return frame.drop(["__si_input__", "__si_output__", _INSTANCE_INDEX])


ALPACA = FormatSpec(
    "alpaca",
    convert_alpaca,
    required=("instruction", "output"),
    optional=("input", "system", "history"),
    summary="instruction, output (+ input, system, history)",
)
DOLLY = FormatSpec(
    "dolly",
    convert_dolly,
    required=("instruction", "context", "response"),
    optional=("system",),
    summary="instruction, context, response",
)
SELF_INSTRUCT = FormatSpec(
    "self_instruct",
    convert_self_instruct,
    required=("instruction", "instances"),
    optional=("system",),
    summary="instruction, instances [{input, output}]",
)
