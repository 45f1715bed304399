"""``self_instruct``: new instructions bootstrapped from seed tasks (Wang et al. 2022, arXiv:2212.10560).

A global step, because the filter needs the whole pool: the seed instructions (the stored rows)
plus every instruction accepted so far. Each round sends ``prompts_per_round`` prompts; each
shows ``k`` in-context instructions sampled (seeded per round and prompt) from the pool: human
seeds, and up to ``k_generated`` accepted machine instructions once there are some (the paper's
6 + 2). Candidates are parsed from the answer, filtered, and accepted ones join the pool, so
later candidates (in the same answer, round or later rounds) are checked against them too.

Prompt styles:

* ``distilabel`` (instruct models): distilabel's SelfInstruct template
  (``steps/tasks/templates/self-instruct.jinja2``, its default criteria), with the in-context
  instructions as its context, asking for ``num_instructions`` queries, one per line.
* ``numbered`` (base models; the step sends it raw, ``chat`` off): the paper's prompt,
  ``Come up with a series of tasks:`` then ``1. …`` to ``k. …`` and ``k+1.`` to continue; it
  stops at a blank line or after ``num_instructions`` items.

Parsing (:func:`parse_instructions`): numbered items (``3. text``, ``3) text``) when the answer
has any, else one instruction per non-empty line, bullets stripped. An answer cut by
``max_new_tokens`` loses only its last item (``cut_off``). Drop reasons, per candidate:
``too_short``/``too_long`` (words), ``unsupported_task`` (the paper's blocklist: image, graph,
file, …, "write a program"), ``starts_with_punctuation``, ``non_ascii_start``,
``duplicate_instruction`` (normalized text already in the pool), ``too_similar_to_pool``
(ROUGE-L F1 with a pool instruction ≥ ``similarity``, the paper's 0.7; the match is kept with
the drop as ``similar_to``/``rouge_l``); per prompt: ``unparseable_instructions`` and the call
failures (``llm_error``, ``empty_output``, ``prompt_too_long``). Drop counts thus mix two units,
candidates and prompts; ``llm_calls``/``cache_hits`` count prompts.

Near duplicates: ROUGE-L against the pool is the paper's near-duplicate test (word LCS, so it
also catches reordered clauses MinHash shingles miss); pools here are thousands, not millions,
and a cheap multiset bound skips most pairs. Run ``dedup_minhash`` afterwards for more.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from importlib.resources import files
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from dsforge.chat.schema import MESSAGES
from dsforge.generate.backends import LLMConfig
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, raw_text, was_called
from dsforge.generate.prompts import require_column, turns_series
from dsforge.io.parts import PartStore
from dsforge.registry import register_step
from dsforge.steps.base import DROPPED_ONLY_PREFIX, GlobalStep

UNPARSEABLE = "unparseable_instructions"
TOO_SIMILAR = "too_similar_to_pool"
#: the paper's blocklist: tasks a text-only model cannot do (whole words, case-insensitive)
BLOCKLIST = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
]  # fmt: skip
NUMBERED_ITEM = re.compile(r"^[ \t]*(\d{1,3})[ \t]*[.)][ \t]+", re.MULTILINE)
BULLET = re.compile(r"^\s*(?:[-*•]+|\d{1,3}\s*[.)])\s*")
ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------- parsing and similarity
def parse_instructions(text: str) -> list[str]:
    """Candidate instructions in a model's answer (numbered items, else non-empty lines)."""
    starts = list(NUMBERED_ITEM.finditer(text))
    if starts:
        ends = [m.start() for m in starts[1:]] + [len(text)]
        items = [text[m.end() : end] for m, end in zip(starts, ends, strict=True)]
    else:
        items = [BULLET.sub("", line) for line in text.splitlines()]
    cleaned = (re.sub(r"\s+", " ", item).strip().strip('"').strip() for item in items)
    return [item for item in cleaned if item]


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenization: lowercase ASCII letters and digits, no stemming."""
    return ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists (symmetric)."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


class Pool:
    """Instructions seen so far, for the duplicate and ROUGE-L checks."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self.counts: list[Counter] = []
        self.normalized: set[str] = set()

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        self.texts.append(text)
        self.tokens.append(tokens)
        self.counts.append(Counter(tokens))
        self.normalized.add(" ".join(text.lower().split()))

    def contains(self, text: str) -> bool:
        return " ".join(text.lower().split()) in self.normalized

    def most_similar(self, text: str, at_least: float) -> tuple[float, str | None]:
        """The first pool instruction with ROUGE-L ≥ ``at_least`` (and its score), else (best below, None).

        F1 = 2·LCS/(m+n) and LCS ≤ the shared multiset of tokens, so pairs whose length or token
        overlap cannot reach the threshold are skipped without the quadratic LCS.
        """
        tokens = rouge_tokens(text)
        if not tokens:
            return 0.0, None
        counts, m, best = Counter(tokens), len(tokens), 0.0
        for k, other in enumerate(self.tokens):
            n = len(other)
            if not n or 2 * min(m, n) / (m + n) < at_least:
                continue
            if 2 * sum((counts & self.counts[k]).values()) / (m + n) < at_least:
                continue
            score = rouge_l(tokens, other)
            if score >= at_least:
                return score, self.texts[k]
            best = max(best, score)
        return best, None


def distilabel_prompt(examples: list[str], num_instructions: int, application: str) -> str:
    """distilabel's SelfInstruct prompt, the in-context instructions as its context."""
    from distilabel.steps.tasks.self_instruct import SelfInstruct
    from jinja2 import Template

    path = files("distilabel").joinpath("steps", "tasks", "templates", "self-instruct.jinja2")
    criteria = SelfInstruct.model_fields["criteria_for_query_generation"].default
    context = "Example queries:\n" + "\n".join(f"{i}. {e}" for i, e in enumerate(examples, 1))
    return Template(path.read_text(encoding="utf-8")).render(
        input=context,
        application_description=application,
        criteria_for_query_generation=criteria,
        num_instructions=num_instructions,
    )


def numbered_prompt(examples: list[str]) -> str:
    """The paper's prompt: the examples as a numbered list, ending on the next number to continue."""
    lines = "".join(f"{i}. {e}\n" for i, e in enumerate(examples, 1))
    return f"Come up with a series of tasks:\n{lines}{len(examples) + 1}."


# --------------------------------------------------------------------------- the step
@register_step("self_instruct")
class SelfInstruct(LLMStep, GlobalStep):
    """Bootstrap new instructions from seed tasks: sampled in-context prompts, parsed, filtered by ROUGE-L."""

    example: ClassVar[dict] = {
        "step": "self_instruct",
        "llm": {"model": "./models/my-instruct-model", "max_new_tokens": 512, "temperature": 0.7},
        "rounds": 2,
        "prompts_per_round": 16,
        "messages": True,
    }

    llm: LLMConfig
    prompt_style: Literal["distilabel", "numbered"] = "distilabel"
    #: the seed instruction column (also the output column)
    column: str = "instruction"
    #: seed ids for ``seed_ids`` (default: ``seed-<row number>``)
    id_column: str | None = "id"
    k: int = Field(8, ge=1, description="in-context instructions per prompt")
    k_generated: int = Field(2, ge=0, description="of which from accepted machine instructions, once any")
    num_instructions: int = Field(
        5, ge=1, description="queries asked for (distilabel) or items before the stop (numbered)"
    )
    application_description: str = "AI assistant"
    rounds: int = Field(1, ge=1)
    prompts_per_round: int = Field(8, ge=1)
    max_instructions: int | None = Field(None, ge=1, description="stop once this many are accepted")
    min_words: int = Field(3, ge=1)
    max_words: int = Field(150, ge=1)
    blocklist: list[str] = Field(default_factory=lambda: list(BLOCKLIST))
    #: also drop tasks starting "Write a program" (the paper's rule)
    no_programs: bool = True
    ascii_start: bool = True
    similarity: float = Field(0.7, gt=0, le=1, description="ROUGE-L F1 at which a candidate is too similar")
    #: also write ``messages`` = [user turn] (ready for ``generate``)
    messages: bool = False
    model_column: str = "model"

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "column", "id_column", "rounds", "max_instructions", "min_words", "max_words", "blocklist",
        "no_programs", "ascii_start", "similarity", "messages", "model_column", "prompts_per_round",
        "k", "k_generated", "num_instructions", "application_description",
    }  # fmt: skip  # the prompt-shaping ones reach the key through the exact prompt text

    @model_validator(mode="after")
    def _sizes(self) -> SelfInstruct:
        if self.k_generated > self.k:
            raise ValueError("k_generated cannot exceed k")
        if self.min_words > self.max_words:
            raise ValueError("min_words exceeds max_words")
        return self

    def llm_configs(self) -> list[LLMConfig]:
        return [self.llm]

    def effective(self, config: LLMConfig) -> LLMConfig:
        if self.prompt_style == "distilabel":
            return config
        # the paper's stops: a blank line, or the number after the last wanted item
        ends = ("\n\n", f"\n{self.k + self.num_instructions + 1}.")
        stop = [*config.stop, *(s for s in ends if s not in config.stop)]
        return config.model_copy(update={"chat": False, "stop": stop})

    # ------------------------------------------------------------------ pieces
    def _blocked(self) -> re.Pattern | None:
        words = [re.escape(w).replace(r"\ ", r"\s+") for w in self.blocklist]
        return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None

    def rule_reason(self, text: str, blocked: re.Pattern | None) -> str | None:
        """The paper's cheap checks, before similarity."""
        words = len(text.split())
        if words < self.min_words:
            return "too_short"
        if words > self.max_words:
            return "too_long"
        if (blocked is not None and blocked.search(text)) or (
            self.no_programs and text.lower().startswith("write a program")
        ):
            return "unsupported_task"
        if not text[0].isalnum() and text[0] not in "\"'(¿¡":
            return "starts_with_punctuation"
        if self.ascii_start and not text[0].isascii():
            return "non_ascii_start"
        return None

    def _prompt(self, examples: list[str]) -> str | list[dict[str, str]]:
        if self.prompt_style == "numbered":
            return numbered_prompt(examples)
        user = [
            {
                "role": "user",
                "content": distilabel_prompt(examples, self.num_instructions, self.application_description),
            }
        ]
        return user if self.configs()[0].chat else raw_text(user)

    def _seeds(self, store: PartStore) -> list[tuple[str, str]]:
        seeds, row = [], 0
        for batch in store.iter_batches():
            if not batch.height:
                continue
            require_column(self, batch, self.column)
            texts = batch.get_column(self.column).cast(pl.String).to_list()
            has_ids = self.id_column is not None and self.id_column in batch.columns
            ids = (
                batch.get_column(self.id_column).cast(pl.String).to_list() if has_ids else [None] * len(texts)
            )
            for text, ident in zip(texts, ids, strict=True):
                if text and text.strip():
                    seeds.append((ident or f"seed-{row}", text.strip()))
                row += 1
        return seeds

    # ------------------------------------------------------------------ run
    def run(self, store: PartStore) -> Iterator[pl.DataFrame]:
        seeds = self._seeds(store)
        if not seeds:
            return
        pool = Pool()
        for _, text in seeds:
            pool.add(text)
        generated: list[tuple[str, str]] = []
        blocked = self._blocked()
        name = self.llm.display_name
        for round_number in range(self.rounds):
            if self.max_instructions is not None and len(generated) >= self.max_instructions:
                break
            picks = [self._sample(seeds, generated, round_number, p) for p in range(self.prompts_per_round)]
            calls = [
                Call(0, self._prompt([text for _, text in pick]), round_number * self.prompts_per_round + p)
                for p, pick in enumerate(picks)
            ]
            outcomes = self.call(calls)
            rows: list[dict] = []
            for p, (pick, outcome) in enumerate(zip(picks, outcomes, strict=True)):
                first = len(rows)
                self._candidates(rows, pick, outcome, round_number, p, pool, generated, blocked, name)
                rows[first][CALLED] = int(was_called(outcome))
                rows[first][CACHED] = int(outcome.cached)
            yield self.finish(self._frame(rows))

    def _sample(
        self, seeds: list[tuple[str, str]], generated: list[tuple[str, str]], round_number: int, p: int
    ) -> list[tuple[str, str]]:
        rng = np.random.default_rng([self.context.seed, self.context.step_index, round_number, p])
        from_generated = min(self.k_generated, len(generated))
        from_seeds = min(self.k - from_generated, len(seeds))
        pick = [seeds[i] for i in rng.choice(len(seeds), size=from_seeds, replace=False)]
        if from_generated:
            pick += [generated[i] for i in rng.choice(len(generated), size=from_generated, replace=False)]
        return [pick[i] for i in rng.permutation(len(pick))]

    def _candidates(
        self,
        rows: list[dict],
        pick: list[tuple[str, str]],
        outcome,
        round_number: int,
        p: int,
        pool: Pool,
        generated: list[tuple[str, str]],
        blocked: re.Pattern | None,
        name: str,
    ) -> None:
        """Append one row per candidate of this prompt (or one failure row), accepting into the pool."""
        seed_ids = [ident for ident, _ in pick]
        base = {"seed_ids": seed_ids, "round": round_number, self.model_column: name}
        reason = outcome.error or (None if (outcome.text or "").strip() else "empty_output")
        text = outcome.text or ""
        if self.prompt_style == "numbered" and reason is None:
            text = f"{len(pick) + 1}. {text.lstrip()}"
        items = parse_instructions(text) if reason is None else []
        if reason is None and not items:
            reason = UNPARSEABLE
        if reason is not None:
            rows.append({**base, "instruction": None, REASON: reason, "output": outcome.text})
            return
        for number, item in enumerate(items):
            row = {**base, "instruction": item, "id": f"self_instruct-{round_number}-{p}-{number}"}
            if outcome.finish == "length" and number == len(items) - 1:
                row[REASON] = "cut_off"
            elif self.max_instructions is not None and len(generated) >= self.max_instructions:
                row[REASON] = "over_max_instructions"
            else:
                row[REASON] = self.rule_reason(item, blocked)
            if row[REASON] is None and pool.contains(item):
                row[REASON] = "duplicate_instruction"
            if row[REASON] is None:
                score, match = pool.most_similar(item, self.similarity)
                if match is not None:
                    row.update({REASON: TOO_SIMILAR, "similar_to": match, "rouge_l": score})
            if row[REASON] is None:
                pool.add(item)
                generated.append((row["id"], item))
            rows.append(row)

    def _frame(self, rows: list[dict]) -> pl.DataFrame:
        def column(key: str, dtype: pl.DataType) -> pl.Series:
            return pl.Series(key, [r.get(key) for r in rows], dtype=dtype)

        frame = pl.DataFrame(
            [
                column("instruction", pl.String).alias(self.column),
                column("id", pl.String),
                column("seed_ids", pl.List(pl.String)),
                column("round", pl.Int64),
                column(self.model_column, pl.String),
                column(REASON, pl.String),
                pl.Series(CALLED, [r.get(CALLED, 0) for r in rows], dtype=pl.Int64),
                pl.Series(CACHED, [r.get(CACHED, 0) for r in rows], dtype=pl.Int64),
                column("similar_to", pl.String).alias(f"{DROPPED_ONLY_PREFIX}similar_to"),
                column("rouge_l", pl.Float64).alias(f"{DROPPED_ONLY_PREFIX}rouge_l"),
                column("output", pl.String).alias(f"{DROPPED_ONLY_PREFIX}output"),
            ]
        )
        if self.messages:
            turns = [
                [{"role": "user", "content": r["instruction"]}] if r.get("instruction") else None
                for r in rows
            ]
            frame = frame.with_columns(turns_series(MESSAGES, turns))
        return frame
