"""``evol_instruct``: instructions rewritten harder (in depth) or into new ones (in breadth), WizardLM-style.

Xu et al. 2023 (arXiv:2304.12244). Each round, every instruction still alive gets one mutation,
drawn from ``mutations`` by a generator seeded with the recipe seed, the original text and the
round (so the choice does not depend on batching or workers), filled into distilabel's
EvolInstruct mutation template (``MUTATION_TEMPLATES``: ``constraints``, ``deepening``,
``concretizing``, ``increased_reasoning_steps`` are in-depth rewrites; ``breadth`` creates a new
prompt in the same domain). The answer is cleaned like distilabel does (text after the last
``Prompt#:``) and checked with WizardLM's elimination rules that need no second model:

* ``copied_template``: the rewrite names the template's markers ("#The Given Prompt#",
  "given prompt", "rewritten prompt", "created prompt");
* ``unchanged_instruction``: the same text as before (case and spacing folded);
* the call failures (``llm_error``, ``empty_output``, ``truncated_output``, ``prompt_too_long``).

A failed round ends that row's evolution: dropped (``on_failure: drop``) or kept with the last
good text and ``generation_error`` (``flag``). Outputs: ``column`` holds the evolved text,
``evolved_from`` the original, ``evolutions`` the mutations applied; ``keep_history`` adds every
round's text; metrics ``mutation_<name>`` count the mutations tried.
"""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import Field

from dsforge.chat.schema import MESSAGES
from dsforge.generate.backends import LLMConfig
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, raw_text, was_called
from dsforge.generate.prompts import require_column, turns_series
from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX

Mutation = Literal["constraints", "deepening", "concretizing", "increased_reasoning_steps", "breadth"]
MUTATIONS: tuple[str, ...] = Mutation.__args__
COPIED = "copied_template"
UNCHANGED = "unchanged_instruction"
MARKERS = re.compile(r"#\s*(?:The\s+)?Given Prompt\s*#|given prompt|rewritten prompt|created prompt", re.I)
HEADER = re.compile(r"\A\s*#?\s*(?:Rewritten|Created)\s+Prompt\s*#?\s*:?\s*", re.I)


def mutation_prompt(mutation: str, instruction: str) -> str:
    """distilabel's EvolInstruct template for ``mutation`` with the instruction filled in."""
    from distilabel.steps.tasks.evol_instruct.utils import MUTATION_TEMPLATES

    return MUTATION_TEMPLATES[mutation.upper()].replace("<PROMPT>", instruction)


def clean_evolution(text: str) -> str:
    """The rewritten prompt: after the last ``Prompt#:`` (distilabel), minus a leading header."""
    return HEADER.sub("", text.split("Prompt#:")[-1]).strip()


def evolution_reason(before: str, after: str) -> str | None:
    if MARKERS.search(after):
        return COPIED
    if " ".join(after.lower().split()) == " ".join(before.lower().split()):
        return UNCHANGED
    return None


def choose(mutations: list[str], seed: int, original: str, round_number: int) -> str:
    """The seeded mutation of one instruction in one round (independent of batch position)."""
    digest = int.from_bytes(hashlib.sha256(original.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, digest, round_number])
    return mutations[int(rng.integers(len(mutations)))]


@register_step("evol_instruct")
class EvolInstruct(LLMStep):
    """Evolve instructions for ``rounds`` rounds with seeded in-depth / in-breadth mutations."""

    example: ClassVar[dict] = {
        "step": "evol_instruct",
        "llm": {"model": "./models/my-instruct-model", "max_new_tokens": 256},
        "rounds": 2,
        "mutations": ["deepening", "breadth"],
    }

    llm: LLMConfig
    column: str = "instruction"
    rounds: int = Field(1, ge=1)
    mutations: list[Mutation] = Field(default_factory=lambda: list(MUTATIONS), min_length=1)
    keep_history: bool = False
    #: also write ``messages`` = [user turn with the evolved instruction]
    messages: bool = False

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "column",
        "rounds",
        "mutations",
        "keep_history",
        "messages",
    }  # the mutation reaches the key through the exact prompt text

    def llm_configs(self) -> list[LLMConfig]:
        return [self.llm]

    def _call(self, mutation: str, instruction: str) -> Call:
        turns = [{"role": "user", "content": mutation_prompt(mutation, instruction)}]
        return Call(0, turns if self.configs()[0].chat else raw_text(turns))

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_column(self, batch, self.column)
        originals = batch.get_column(self.column).cast(pl.String).to_list()
        seed = self.seed_of(self.configs()[0])
        current = [t.strip() if t else None for t in originals]
        reasons: list[str | None] = [None if t else "empty_instruction" for t in current]
        applied: list[list[str]] = [[] for _ in current]
        history: list[list[str]] = [[t] if t else [] for t in current]
        called, cached = [0] * len(current), [0] * len(current)
        tried = dict.fromkeys(self.mutations, 0)
        for round_number in range(self.rounds):
            alive = [i for i, r in enumerate(reasons) if r is None]
            if not alive:
                break
            chosen = {i: choose(self.mutations, seed, originals[i], round_number) for i in alive}
            outcomes = self.call([self._call(chosen[i], current[i]) for i in alive])
            for i, outcome in zip(alive, outcomes, strict=True):
                tried[chosen[i]] += 1
                called[i] += int(was_called(outcome))
                cached[i] += int(outcome.cached)
                text = clean_evolution(outcome.text) if outcome.text is not None else None
                reason = self.outcome_reason(outcome, text) or evolution_reason(current[i], text)
                if reason is not None:
                    reasons[i] = reason
                    continue
                current[i] = text
                applied[i].append(chosen[i])
                history[i].append(text)
        columns = [
            pl.Series(self.column, current, dtype=pl.String),
            pl.Series("evolved_from", originals, dtype=pl.String),
            pl.Series("evolutions", applied, dtype=pl.List(pl.String)),
            pl.Series(REASON, reasons, dtype=pl.String),
            pl.Series(CALLED, called, dtype=pl.Int64),
            pl.Series(CACHED, cached, dtype=pl.Int64),
        ]
        if self.keep_history:
            columns.append(pl.Series("evolution_history", history, dtype=pl.List(pl.String)))
        if self.messages:
            turns = [[{"role": "user", "content": t}] if t else None for t in current]
            columns.append(turns_series(MESSAGES, turns))
        out = batch.with_columns(columns)
        first = pl.int_range(pl.len()) == 0
        out = out.with_columns(
            [
                pl.when(first).then(n).otherwise(0).alias(f"{METRIC_PREFIX}mutation_{m}")
                for m, n in tried.items()
            ]
        )
        return self.finish(out)
