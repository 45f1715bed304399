"""``generate``: answers from one or more models, ``n`` per prompt, one row per (prompt, model, answer).

Each output row copies its input row and completes ``messages`` with the assistant's answer,
or (``completion_column`` set) keeps ``messages`` as the prompt sent and puts the answer in that
column, the shape preference building starts from; ``model`` names who answered.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl
from pydantic import Field, model_validator

from dsforge.chat.schema import MESSAGES
from dsforge.generate.backends import LLMConfig
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, raw_text, was_called
from dsforge.generate.prompts import NOT_ENDING_ON_USER, original_turns, read_prompts, turns_series
from dsforge.registry import register_step


@register_step("generate")
class Generate(LLMStep):
    """Sample answers to prompts from one model (``llm``) or several (``models``)."""

    example: ClassVar[dict] = {
        "step": "generate",
        "models": [{"backend": "transformers", "model": "./models/my-sft", "max_new_tokens": 256}],
        "n": 2,
        "system_prompt": "You are a helpful assistant.",
    }

    llm: LLMConfig | None = None
    models: list[LLMConfig] | None = None
    n: int = Field(1, ge=1)
    system_prompt: str | None = None
    #: the conversation to answer (must end on a user turn); also where the answer is written
    column: str = MESSAGES
    #: read the prompt from this text column instead of ``column``
    prompt_column: str | None = None
    #: write the answer here (``column`` keeps the prompt) instead of appending it to ``column``
    completion_column: str | None = None
    model_column: str = "model"

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "n",
        "column",
        "prompt_column",
        "completion_column",
        "model_column",
    }

    @model_validator(mode="after")
    def _one_source_of_models(self) -> Generate:
        if (self.llm is None) == (self.models is None):
            raise ValueError("give either llm (one model) or models (a list)")
        if self.models is not None:
            if not self.models:
                raise ValueError("models is empty")
            names = [m.display_name for m in self.models]
            if len(set(names)) != len(names):
                raise ValueError(f"two models share the name {names}; give each a label")
        return self

    def llm_configs(self) -> list[LLMConfig]:
        return [self.llm] if self.llm is not None else list(self.models or [])

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        prompts = read_prompts(self, batch, self.column, self.prompt_column, self.system_prompt)
        configs = self.configs()
        rows, calls, slots = [], [], []  # slots: (output row, call position or None)
        for r, turns in enumerate(prompts):
            for m, config in enumerate(configs):
                for k in range(self.n):
                    slot = None
                    if turns is not None:
                        slot = len(calls)
                        calls.append(Call(m, turns if config.chat else raw_text(turns), k))
                    rows.append(r)
                    slots.append((m, slot))
                if turns is None:
                    break  # an unusable prompt: one row, dropped with its reason
        outcomes = self.call(calls)
        prompt_col, answer_col, model_col, reasons, called, cached = [], [], [], [], [], []
        for r, (m, slot) in zip(rows, slots, strict=True):
            turns = prompts[r]
            model_col.append(configs[m].display_name)
            if slot is None:  # keeps its original conversation, shown with the drop
                prompt_col.append(original_turns(batch, self.column, self.prompt_column, r))
                answer_col.append(None)
                reasons.append(NOT_ENDING_ON_USER)
                called.append(0)
                cached.append(0)
                continue
            outcome = outcomes[slot]
            text = outcome.text.strip() if outcome.text is not None else None
            reasons.append(self.outcome_reason(outcome, text))
            called.append(int(was_called(outcome)))
            cached.append(int(outcome.cached))
            answer_col.append(text)
            if self.completion_column is not None or text is None:
                prompt_col.append(turns)
            else:
                prompt_col.append([*turns, {"role": "assistant", "content": text}])
        out = batch.select(pl.all().gather(rows)) if rows else batch.clear()
        columns = [
            turns_series(self.column, prompt_col),
            pl.Series(self.model_column, model_col, dtype=pl.String),
            pl.Series(REASON, reasons, dtype=pl.String),
            pl.Series(CALLED, called, dtype=pl.Int64),
            pl.Series(CACHED, cached, dtype=pl.Int64),
        ]
        if self.completion_column is not None:
            columns.append(pl.Series(self.completion_column, answer_col, dtype=pl.String))
        return self.finish(out.with_columns(columns))
