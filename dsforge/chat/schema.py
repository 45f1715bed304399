"""The canonical chat record: ``messages``, a list of ``{role, content}`` (TRL conversational).

Every SFT step reads and writes this one column type, so adapters sit at the edge (formats in)
and exporters at the other (formats out). Helpers here build polars expressions over it.
"""

from __future__ import annotations

import polars as pl

MESSAGES = "messages"
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_DTYPE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES_DTYPE = pl.List(MESSAGE_DTYPE)
#: Column names that make current TRL switch dataset modes when they sit beside ``messages``.
TRL_RESERVED = ("prompt", "completion", "text", "chosen", "rejected", "label", "conversations")


def role_texts(column: str, roles: tuple[str, ...] | list[str]) -> pl.Expr:
    """The contents of turns with the given roles, as a list of strings per row."""
    return (
        pl.col(column)
        .list.eval(pl.element().filter(pl.element().struct.field("role").is_in(list(roles))))
        .list.eval(pl.element().struct.field("content"))
    )


def joined_text(column: str, roles: tuple[str, ...] | list[str], separator: str = "\n\n") -> pl.Expr:
    """All turns of the given roles joined into one string (e.g. the whole prompt side)."""
    return role_texts(column, roles).list.join(separator)


def first_user_text(column: str = MESSAGES) -> pl.Expr:
    """The first user turn: the prompt that identifies a conversation for grouping and dedup."""
    return role_texts(column, ("user",)).list.first()
