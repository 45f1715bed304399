"""Shared pieces of every converter: role aliases, turn lists from columns, the converter contract.

A converter returns the batch (rows possibly multiplied) with three added columns:
``messages`` (canonical dtype), ``UNCONVERTIBLE`` (null, or why the row could not be read) and
``NON_STRING`` (True where a turn's content was not text before it was turned into a string).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from dsforge.chat.schema import MESSAGE_DTYPE, MESSAGES_DTYPE

UNCONVERTIBLE = "__unconvertible__"
NON_STRING = "__non_string__"
#: Role names seen in the wild → canonical role. Lowercased and stripped before lookup; names
#: not listed are kept as written so the rules drop the row as ``unknown_role``.
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system turn
    "user": "user",
    "human": "user",
    "prompter": "user",  # Open Assistant
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",  # Gemini
    "function_call": "assistant",  # ShareGPT tool call: the call text stays the turn's content
    "tool": "tool",
    "observation": "tool",  # ShareGPT tool result
    "function": "tool",  # OpenAI's legacy tool-result role
}
#: Separator for text parts of one turn (OpenAI content parts, lists of strings).
PART_SEPARATOR = "\n\n"
EMPTY_TURNS = pl.lit([], dtype=MESSAGES_DTYPE)


@dataclass(frozen=True)
class Job:
    """What a converter needs besides the batch: resolved column names and the step's options."""

    names: dict[str, str]
    where: str
    oasst_paths: str = "best"
    transcript_field: str = "chosen"

    def col(self, name: str) -> str:
        """The input column holding format field ``name`` (after the recipe's ``fields:`` map)."""
        return self.names.get(name, name)

    def has(self, batch: pl.DataFrame, name: str) -> bool:
        return self.col(name) in batch.columns


Converter = Callable[[pl.DataFrame, Job], pl.DataFrame]


@dataclass(frozen=True)
class FormatSpec:
    """A format: its field names (recipe ``fields:`` keys), which of them must exist, its converter.

    ``consumed`` fields are removed from the output (they became ``messages``); the others it
    reads (``tools``, ids) stay as metadata.
    """

    name: str
    convert: Converter
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()
    summary: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


def normalize_role(role: pl.Expr) -> pl.Expr:
    """Lowercase a role name and map known aliases (ShareGPT, OASST, OpenAI) to canonical roles."""
    clean = role.str.strip_chars().str.to_lowercase()
    return clean.replace(ROLE_ALIASES)


def content_text(content: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A turn's content as a string, and whether it held non-text, chosen by the column dtype.

    Strings pass; lists of strings and OpenAI text parts (``[{type: text, text}]``) are joined
    with a blank line; a part of another type (an image) or any other dtype is non-string.
    """
    if dtype in (pl.String, pl.Null):
        return content.cast(pl.String), pl.lit(False)
    if isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Null):
        return content.list.join(PART_SEPARATOR), pl.lit(False)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        names = {f.name for f in dtype.inner.fields}
        if "text" in names:
            part = pl.element()
            is_text = part.struct.field("type") == "text" if "type" in names else pl.lit(True)
            texts = content.list.eval(part.filter(is_text.fill_null(True)).struct.field("text"))
            other = content.list.eval(~is_text.fill_null(True) | part.struct.field("text").is_null())
            return texts.list.join(PART_SEPARATOR), other.list.any().fill_null(False)
    return pl.lit(None, dtype=pl.String), content.is_not_null()


def turns_from_list(
    column: str, dtype: pl.DataType, role_key: str, content_key: str, where: str
) -> tuple[pl.Expr, pl.Expr]:
    """A list-of-struct column of turns → canonical turns (roles normalized) and a non-string flag."""
    from dsforge.errors import DsforgeError

    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        raise DsforgeError(f"{where}: column {column!r} is {dtype}, not a list of turns")
    fields = {f.name: f.dtype for f in dtype.inner.fields}
    for key in (role_key, content_key):
        if key not in fields:
            raise DsforgeError(
                f"{where}: turns in {column!r} have no field {key!r} (fields: {', '.join(fields)}); "
                "map it with 'fields:'"
            )
    turn = pl.element()
    content, non_string = content_text(turn.struct.field(content_key), fields[content_key])
    calls = fields.get("tool_calls")
    if isinstance(calls, pl.List) and isinstance(calls.inner, pl.Struct):
        # OpenAI: an assistant turn that only calls tools keeps the calls (JSON) as its content
        call_list = turn.struct.field("tool_calls")
        encoded = pl.lit("[") + call_list.list.eval(pl.element().struct.json_encode()).list.join(", ") + "]"
        content = pl.coalesce(content, pl.when(call_list.list.len() > 0).then(encoded))
    role = normalize_role(turn.struct.field(role_key).cast(pl.String))
    turns = pl.col(column).list.eval(pl.struct(role=role, content=content)).cast(MESSAGES_DTYPE)
    flags = pl.col(column).list.eval(non_string).list.any().fill_null(False)
    return turns, flags


def single_turn(role: str, content: pl.Expr) -> pl.Expr:
    """A one-turn list (a string column as one user or assistant turn)."""
    return pl.concat_list([pl.struct(role=pl.lit(role), content=content).cast(MESSAGE_DTYPE)])


def optional_system(system: pl.Expr) -> pl.Expr:
    """A leading system turn when the text is non-blank, else no turn (blank means "none")."""
    present = system.str.strip_chars().str.len_chars() > 0
    return pl.when(present.fill_null(False)).then(single_turn("system", system)).otherwise(EMPTY_TURNS)
