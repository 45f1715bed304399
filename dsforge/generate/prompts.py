"""Reading prompts and answers out of rows: canonical ``messages``, text columns, TRL pair columns."""

from __future__ import annotations

from typing import Any

import polars as pl

from dsforge.chat.filters import check_messages
from dsforge.errors import DsforgeError
from dsforge.steps.base import Step

Turns = list[dict[str, str]]
NOT_ENDING_ON_USER = "prompt_not_ending_on_user"
NO_RESPONSE = "no_response"


def require_column(step: Step, batch: pl.DataFrame, column: str) -> None:
    if column not in batch.columns:
        raise DsforgeError(
            f"steps.{step.context.step_index} ({step.name}): no column {column!r} "
            f"(columns here: {', '.join(batch.columns)})"
        )


def with_system(turns: Turns, system_prompt: str | None) -> Turns:
    """Prepend the system prompt (replacing a system turn the prompt already has)."""
    if system_prompt is None:
        return turns
    rest = turns[1:] if turns and turns[0]["role"] == "system" else turns
    return [{"role": "system", "content": system_prompt}, *rest]


def read_prompts(
    step: Step, batch: pl.DataFrame, column: str, prompt_column: str | None, system_prompt: str | None
) -> list[Turns | None]:
    """Per row, the conversation to answer (ending on a user turn), or None when it does not."""
    if prompt_column is not None:
        require_column(step, batch, prompt_column)
        texts = batch.get_column(prompt_column).cast(pl.String).to_list()
        return [
            with_system([{"role": "user", "content": t}], system_prompt) if t and t.strip() else None
            for t in texts
        ]
    check_messages(step, batch, column)
    prompts: list[Turns | None] = []
    for turns in batch.get_column(column).to_list():
        turns = [{"role": t["role"], "content": t["content"] or ""} for t in turns or []]
        ok = bool(turns) and turns[-1]["role"] == "user"
        prompts.append(with_system(turns, system_prompt) if ok else None)
    return prompts


def original_turns(batch: pl.DataFrame, column: str, prompt_column: str | None, row: int) -> Turns | None:
    """A row's conversation as it came in (kept on rows dropped before any call)."""
    if prompt_column is not None or column not in batch.columns:
        return None
    turns = batch.get_column(column)[row]
    return [{"role": t["role"], "content": t["content"]} for t in turns] if turns is not None else None


def content_of(value: Any) -> str | None:
    """An answer's text: a string as is, or the last assistant turn of a list of turns."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):  # a turn: {role, content} or ShareGPT's {from, value}
        return value.get("content", value.get("value"))
    turns = [t for t in value if isinstance(t, dict)]
    answers = [t for t in turns if t.get("role") == "assistant"] or turns
    return answers[-1].get("content") if answers else None


def split_answer(turns: Turns | None) -> tuple[Turns, str | None]:
    """(the turns before the last assistant turn, that turn's text); (turns, None) if there is none."""
    turns = turns or []
    for k in range(len(turns) - 1, -1, -1):
        if turns[k]["role"] == "assistant":
            return turns[:k], turns[k]["content"]
    return turns, None


def question_of(turns: Turns) -> str | None:
    """The last user turn: what a judge is asked to weigh the answer against."""
    users = [t["content"] for t in turns if t["role"] == "user"]
    return users[-1] if users else None


def turns_series(name: str, rows: list[Turns | None]) -> pl.Series:
    from dsforge.chat.schema import MESSAGES_DTYPE

    return pl.Series(name, rows, dtype=MESSAGES_DTYPE)
