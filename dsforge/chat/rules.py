"""Conversation rules: what a trainable ``messages`` record looks like, checked column-wise.

A conversation passes when (checked in this order; the first broken rule names the drop):

1. ``unknown_role``: every role is one of system/user/assistant/tool (exact, lowercase);
2. ``non_string_content``: every content is a string (not a number, object or non-text part);
3. ``empty_message``: no content is null, empty or whitespace only;
4. ``no_assistant_turn``: at least one assistant turn (an empty conversation has none);
5. ``not_alternating``: an optional leading system turn, then user and assistant turns
   alternating from the user; tool turns may only follow an assistant turn (the call) or another
   tool turn (parallel calls), and the assistant must speak after them before the user does;
6. ``ends_on_user`` / ``ends_on_tool``: the last turn is the assistant's (what the model learns).

Why tool turns are placed this way: the canonical record has no ``tool_calls`` field, so an
assistant turn that calls a tool carries the call as its content (ShareGPT ``function_call``);
a tool result therefore must follow an assistant turn, as every chat template expects.

The check turns each conversation's roles into a short string (one letter per turn) and matches
regular expressions against it, so it runs as polars expressions over the whole batch.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from dsforge.chat.schema import MESSAGES, ROLES
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import Filter

REASONS = (
    "unknown_role",
    "non_string_content",
    "empty_message",
    "no_assistant_turn",
    "not_alternating",
    "ends_on_user",
    "ends_on_tool",
)
_LETTER = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
#: an optional system turn, then exchanges: user, assistant, (tool results, assistant)*
_VALID = r"^s?(?:ua(?:t+a)*)+$"
#: well-formed exchanges followed by a trailing user turn or trailing tool results
_ENDS_ON_USER = r"^s?(?:ua(?:t+a)*)+u$"
_ENDS_ON_TOOL = r"^s?(?:ua(?:t+a)*)*ua(?:t+a)*t+$"


def role_letters(column: str = MESSAGES) -> pl.Expr:
    """Each conversation's roles as one letter per turn (``?`` for a role outside ROLES)."""
    role = pl.element().struct.field("role").fill_null("")
    return pl.col(column).list.eval(role.replace_strict(_LETTER, default="?")).list.join("")


def is_string_dtype(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Null)


def conversation_drop_reason(
    column: str = MESSAGES, *, content_is_string: bool = True, non_string: pl.Expr | None = None
) -> pl.Expr:
    """The first broken rule per row (null when the conversation passes).

    ``content_is_string`` is False when the batch's content field is not text at all (every
    non-null content is then non-string); ``non_string`` is an optional per-row Boolean from an
    adapter that saw non-text content before it built the column.
    """
    letters = role_letters(column)
    contents = pl.col(column).list.eval(pl.element().struct.field("content"))
    if content_is_string:
        blank = contents.list.eval(pl.element().is_null() | (pl.element().str.strip_chars() == ""))
        bad_type = pl.lit(False)
    else:
        blank = contents.list.eval(pl.element().is_null())
        bad_type = contents.list.eval(pl.element().is_not_null()).list.any()
    if non_string is not None:
        bad_type = bad_type | non_string.fill_null(False)
    null_safe = letters.fill_null("")
    rules = [
        (null_safe.str.contains("?", literal=True), "unknown_role"),
        (bad_type, "non_string_content"),
        (blank.list.any().fill_null(False), "empty_message"),
        (~null_safe.str.contains("a", literal=True), "no_assistant_turn"),
        (null_safe.str.contains(_VALID), None),
        (null_safe.str.contains(_ENDS_ON_USER), "ends_on_user"),
        (null_safe.str.contains(_ENDS_ON_TOOL), "ends_on_tool"),
    ]
    reason: pl.Expr = pl.lit("not_alternating", dtype=pl.String)
    for condition, name in reversed(rules):
        reason = pl.when(condition).then(pl.lit(name, dtype=pl.String)).otherwise(reason)
    return reason


def messages_content_dtype(schema: pl.Schema, column: str) -> pl.DataType | None:
    """The dtype of ``content`` inside a list-of-struct column, or None if it is not one."""
    dtype = schema.get(column)
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return None
    fields = {f.name: f.dtype for f in dtype.inner.fields}
    if "role" not in fields or "content" not in fields:
        return None
    return fields["content"]


@register_step("validate_messages")
class ValidateMessages(Filter):
    """Drop conversations that break the chat rules (roles, alternation, empty or non-text turns).

    For data already in ``messages`` form; ``to_messages`` applies the same rules itself.
    """

    column: str = Field(MESSAGES, description="list of {role, content} turns")
    example = {"column": "messages"}

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        where = f"steps.{self.context.step_index} ({self.name})"
        if self.column not in batch.columns:
            raise DsforgeError(
                f"{where}: no column {self.column!r} (columns here: {', '.join(batch.columns)})"
            )
        content = messages_content_dtype(batch.schema, self.column)
        if content is None:
            raise DsforgeError(
                f"{where}: column {self.column!r} is {batch.schema[self.column]}, not a list of "
                "{role, content} turns (convert it with to_messages)"
            )
        return conversation_drop_reason(self.column, content_is_string=is_string_dtype(content))


__all__ = ["REASONS", "ROLES", "ValidateMessages", "conversation_drop_reason", "role_letters"]
