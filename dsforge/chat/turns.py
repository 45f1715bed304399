"""`extract_turns`: a text column from some roles' turns, so text steps can work on chat data.

Any text step (length, language, MinHash near-dedup, PII) can then run on the prompt or the
responses of a conversation: extract, run the step, drop the helper column.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field, field_validator

from dsforge.chat.schema import MESSAGES, ROLES, TRL_RESERVED, role_texts
from dsforge.registry import register_step
from dsforge.steps.base import Transform
from dsforge.steps.columns import require_columns


@register_step("extract_turns")
class ExtractTurns(Transform):
    """Copy the text of chosen roles' turns of a conversation into a text column."""

    column: str = MESSAGES
    roles: list[str] = Field(default_factory=lambda: ["user"], min_length=1)
    to: str = Field("prompt_text", description="name of the new text column")
    which: str = Field("all", pattern="^(all|first|last)$", description="all turns joined, or one turn")
    separator: str = "\n\n"
    example = {"roles": ["assistant"], "to": "response_text", "which": "last"}

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: list[str]) -> list[str]:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
        return roles

    @field_validator("to")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in TRL_RESERVED:
            raise ValueError(f"{name!r} beside messages makes TRL misread the dataset; pick another name")
        return name

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        texts = role_texts(self.column, self.roles)
        if self.which == "first":
            text = texts.list.first()
        elif self.which == "last":
            text = texts.list.last()
        else:
            text = texts.list.join(self.separator)
        return batch.with_columns(text.fill_null("").alias(self.to))
