"""``LLMStep``: the base every generation step builds on (models, cached calls, failure policy).

A subclass declares its models (:meth:`LLMStep.llm_configs`), turns a batch into
:class:`Call` objects, hands them to :meth:`LLMStep.call` and gets one :class:`Outcome` per
call, in order. ``call`` answers from the cache when it can, sends the rest to the backend
(loaded on first need, once per process, so an all-cached rerun loads no model) and stores each
answer as it arrives. :meth:`LLMStep.outcome_reason` names what is wrong with an answer;
:meth:`LLMStep.finish` applies ``on_failure`` and adds the funnel metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import PrivateAttr

from dsforge.generate.backends import (
    PROMPT_TOO_LONG,
    Backend,
    LLMConfig,
    Reply,
    Request,
    canonical,
    completion_seed,
    make_backend,
)
from dsforge.generate.cache import GenerationCache, cache_key
from dsforge.steps.base import METRIC_PREFIX, Transform, merge_drop_reason
from dsforge.types import OutputPath

#: Column that names the failure of a kept row when ``on_failure: flag``.
ERROR_COLUMN = "generation_error"
EMPTY = "empty_output"
TRUNCATED = "truncated_output"
CALLS, HITS = "llm_calls", "cache_hits"
#: Private columns the steps use to carry per-row outcomes into :meth:`LLMStep.finish`.
REASON, CALLED, CACHED = "__llm_reason", "__llm_called", "__llm_cached"


@dataclass
class Call:
    """One model call: which model (index into ``llm_configs()``), what prompt, which completion."""

    model: int
    #: a list of {role, content} turns when the model's ``chat`` is on, else the raw prompt text
    prompt: str | list[dict[str, str]]
    index: int = 0


@dataclass
class Outcome:
    text: str | None
    finish: str | None
    error: str | None
    cached: bool


def was_called(outcome: Outcome) -> bool:
    """Did this outcome cost a model call (not answered from the cache, not refused before sending)?"""
    return not outcome.cached and outcome.error != PROMPT_TOO_LONG


def raw_text(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text, for a ``chat: false`` model given turns (contents, blank-line joined)."""
    return "\n\n".join(m["content"] for m in messages if m.get("content"))


class LLMStep(Transform):
    """Base of generation/judging steps. Subclasses add ``llm``/``models`` fields and ``process``."""

    on_failure: Literal["drop", "flag"] = "drop"
    #: an answer that hit max_new_tokens without stopping is a failure (else it is kept as is)
    truncated_is_failure: bool = True
    cache: bool = True
    #: default: $DSFORGE_CACHE_DIR/generations (~/.cache/dsforge/generations)
    cache_dir: OutputPath | None = None

    #: Fields that do not change what is sent to a model (left out of the cache key). Subclasses
    #: extend it with their output-column names; model blocks are keyed by their identity.
    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = frozenset(
        {"on_failure", "truncated_is_failure", "cache", "cache_dir", "llm", "models"}
    )

    _backends: dict[int, Backend] = PrivateAttr(default_factory=dict)
    _cache: GenerationCache | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ to override
    def llm_configs(self) -> list[LLMConfig]:
        """The models this step calls, in a fixed order (``Call.model`` indexes it)."""
        raise NotImplementedError

    def effective(self, config: LLMConfig) -> LLMConfig:
        """The block as the step uses it (e.g. base_as_instruct forces raw prompts and stops)."""
        return config

    # ------------------------------------------------------------------ plumbing
    @property
    def where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    def configs(self) -> list[LLMConfig]:
        return [self.effective(c) for c in self.llm_configs()]

    def seed_of(self, config: LLMConfig) -> int:
        return config.seed if config.seed is not None else self.context.seed

    def call_params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.NOT_IN_CALL_KEY))

    def setup(self) -> None:
        if self.cache and self._cache is None:
            self._cache = GenerationCache(self.cache_dir)

    def _backend(self, number: int) -> Backend:
        if number not in self._backends:
            self._backends[number] = make_backend(self.configs()[number], f"{self.where}.llm")
        return self._backends[number]

    def call(self, calls: list[Call]) -> list[Outcome]:
        """Answer every call (cache first, then the backend); one failure never raises."""
        self.setup()
        configs = self.configs()
        params = self.call_params()
        keys = [
            cache_key(
                self.name,
                params,
                configs[c.model].identity(self.seed_of(configs[c.model])),
                c.prompt,
                c.index,
            )
            for c in calls
        ]
        stored = self._cache.get_many(keys) if self._cache is not None else {}
        outcomes: list[Outcome | None] = [None] * len(calls)
        pending: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            if key in stored:
                outcomes[i] = Outcome(stored[key]["text"], stored[key]["finish"], None, True)
            else:
                pending.setdefault(calls[i].model, []).append(i)
        for number, positions in pending.items():
            seed = self.seed_of(configs[number])
            requests = [Request(calls[i].prompt, completion_seed(seed, calls[i].index)) for i in positions]

            def on_reply(k: int, reply: Reply, positions: list[int] = positions) -> None:
                i = positions[k]
                outcomes[i] = Outcome(reply.text, reply.finish, reply.error, False)
                if reply.error is None and self._cache is not None:
                    self._cache.put(keys[i], {"text": reply.text, "finish": reply.finish})

            self._backend(number).complete(requests, on_reply)
        return [o if o is not None else Outcome(None, None, "llm_error", False) for o in outcomes]

    def outcome_reason(self, outcome: Outcome, text: str | None = None) -> str | None:
        """Why an answer is unusable (None if it is fine); ``text`` is the cleaned answer if any."""
        if outcome.error:
            return outcome.error
        if not (text if text is not None else outcome.text or "").strip():
            return EMPTY
        if outcome.finish == "length" and self.truncated_is_failure:
            return TRUNCATED
        return None

    def finish(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Turn the private outcome columns into drops or flags, and the call counts into metrics."""
        frame = frame.with_columns(
            pl.col(CALLED).cast(pl.Int64).alias(f"{METRIC_PREFIX}{CALLS}"),
            pl.col(CACHED).cast(pl.Int64).alias(f"{METRIC_PREFIX}{HITS}"),
        )
        reason = pl.col(REASON)
        if self.on_failure == "drop":
            frame = merge_drop_reason(frame, reason)
        else:
            reasons = frame.get_column(REASON).drop_nulls().unique().sort().to_list()
            frame = frame.with_columns(
                reason.alias(ERROR_COLUMN),
                *[(reason == r).cast(pl.Int64).alias(f"{METRIC_PREFIX}flagged_{r}") for r in reasons],
            )
        return frame.drop(REASON, CALLED, CACHED)

    def fingerprint_extra(self) -> str:
        """Model files and chat templates: a model retrained in place must not reuse the build."""
        return canonical([c.identity(self.seed_of(c)) for c in self.configs()])
