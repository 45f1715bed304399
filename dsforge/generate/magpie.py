"""``magpie``: instructions drawn from an instruct model by giving it only its pre-query template.

Xu et al. 2024 (arXiv:2406.08464): an aligned model handed the text its chat template puts
*before* a user message (``<|im_start|>user\\n``) writes a plausible user query, and stops at the
end of the turn. The step sends that text raw (``chat`` off), ``n`` draws per input row and
model, cleans each draw, and optionally (``response``) asks the same model to answer it.

The pre-query text comes from ``pre_query_template`` (distilabel's names ``llama3``/``qwen2``,
or the literal text) or, by default, from the model's own chat template (``llm.chat_template``
or the tokenizer's): a conversation with a marker as the user message is rendered, and the text
before the marker is the pre-query, the text after it (with the generation prompt) is what goes
between a query and its answer; what follows an assistant turn (``<|im_end|>``) becomes a stop
string. A template's default system prompt stays in; ``system_prompt`` (or a
``system_prompt_column``) renders one in. Responses are prompted as the template would render
the one-turn chat (raw, through the same loaded model); with ``backend: openai`` the server
templates them (give ``pre_query_template`` there: there is no local template to cut).

Each draw is independent: its seed comes from the completion index, made distinct per row from
``key_column`` (default: the whole row), so identical input rows get identical draws. Clean-up
strips whitespace, quotes and a leading ``User:`` label. Drop reasons: ``too_short`` (fewer
than ``min_words``), ``duplicate_instruction`` (an earlier draw of this batch, case and spacing
folded), the call failures, and ``response_<reason>`` for a failed answer.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import polars as pl
from pydantic import Field, PrivateAttr, model_validator

from dsforge.chat.schema import MESSAGES
from dsforge.errors import DsforgeError
from dsforge.generate.backends import LLMConfig, cut_at_stop, load_template
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, was_called
from dsforge.generate.prompts import require_column, turns_series
from dsforge.registry import register_step
from dsforge.steps.hashing import stable_hash

MARKER = "DSFORGE_MAGPIE_QUERY_MARKER"
ANSWER_MARKER = "DSFORGE_MAGPIE_ANSWER_MARKER"
TOO_SHORT = "too_short"
DUPLICATE = "duplicate_instruction"
USER_LABEL = re.compile(r"\A\s*(?:#+\s*)?(?:user|human|query|question|instruction)\s*:\s*", re.I)


class TemplateParts:
    """What a chat template puts around one user query: before it, after it, and at a turn's end."""

    def __init__(self, pre: str, post: str | None, end_of_turn: str | None) -> None:
        self.pre, self.post, self.end_of_turn = pre, post, end_of_turn


def named_pre_query(name: str) -> str:
    from distilabel.models.mixins.magpie import MAGPIE_PRE_QUERY_TEMPLATES

    return MAGPIE_PRE_QUERY_TEMPLATES.get(name, name)


def template_parts(tokenizer: Any, template: str, system: str | None) -> TemplateParts:
    """Cut a rendered one-turn chat at a marker user message (and a marker answer, for the end of turn)."""
    head = [{"role": "system", "content": system}] if system else []
    render = tokenizer.apply_chat_template
    full = render([*head, {"role": "user", "content": MARKER}], chat_template=template, tokenize=False,
                  add_generation_prompt=True)  # fmt: skip
    if MARKER not in full:
        raise DsforgeError(f"the chat template does not render the user message: {full[:200]!r}")
    pre, post = full.split(MARKER, 1)
    answered = render(
        [*head, {"role": "user", "content": MARKER}, {"role": "assistant", "content": ANSWER_MARKER}],
        chat_template=template,
        tokenize=False,
    )
    end = answered.split(ANSWER_MARKER, 1)[1].strip() if ANSWER_MARKER in answered else ""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and pre.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        pre = pre[len(bos) :]  # the backend's tokenizer adds BOS to raw prompts itself
    return TemplateParts(pre, post, end or None)


def clean_instruction(text: str) -> str:
    text = USER_LABEL.sub("", text.strip())
    return text.strip().strip('"').strip()


@register_step("magpie")
class Magpie(LLMStep):
    """Draw instructions from instruct models' pre-query templates (and optionally their answers)."""

    example: ClassVar[dict] = {
        "step": "magpie",
        "llm": {"model": "./models/my-instruct-model", "max_new_tokens": 128, "temperature": 1.0},
        "n": 4,
        "response": True,
    }

    llm: LLMConfig | None = None
    models: list[LLMConfig] | None = None
    n: int = Field(1, ge=1, description="draws per input row and model")
    pre_query_template: str | None = Field(
        None, description="llama3, qwen2 or the text; default: cut from the chat template"
    )
    system_prompt: str | None = None
    system_prompt_column: str | None = None
    #: input columns identifying a row for its draws' seeds (default: all columns)
    key_column: str | None = None
    response: bool = False
    min_words: int = Field(3, ge=1)
    column: str = "instruction"
    response_column: str = "response"
    #: also write ``messages`` ([system], user, [assistant])
    messages: bool = True
    model_column: str = "model"

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "n", "pre_query_template", "system_prompt", "system_prompt_column", "key_column", "response",
        "min_words", "column", "response_column", "messages", "model_column",
    }  # fmt: skip  # the template and system prompt reach the key through the exact prompt text

    _parts: dict[tuple[int, str | None], TemplateParts] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _models(self) -> Magpie:
        if (self.llm is None) == (self.models is None):
            raise ValueError("give either llm (one model) or models (a list)")
        names = [m.display_name for m in self.llm_configs()]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"give at least one model, each with its own name (label): {names}")
        for m in self.llm_configs():
            if m.backend == "openai" and self.pre_query_template is None:
                raise ValueError(f"{m.display_name}: backend openai needs pre_query_template")
        if self.system_prompt is not None and self.system_prompt_column is not None:
            raise ValueError("give system_prompt or system_prompt_column, not both")
        return self

    def _base(self) -> list[LLMConfig]:
        return [self.llm] if self.llm is not None else list(self.models or [])

    def llm_configs(self) -> list[LLMConfig]:
        """Query configs first (raw), then a chat twin per openai model for its responses."""
        base = self._base()
        raw = [m.model_copy(update={"chat": False}) for m in base]
        if not self.response:
            return raw
        return raw + [m.model_copy(update={"chat": True}) for m in base if m.backend == "openai"]

    def configs(self) -> list[LLMConfig]:
        """As declared, with each raw model's end-of-turn text added to its stop strings."""
        out = []
        for number, config in enumerate(self.llm_configs()):
            end = self.parts(number, None).end_of_turn if not config.chat else None
            if end and end not in config.stop:
                config = config.model_copy(update={"stop": [*config.stop, end]})
            out.append(config)
        return out

    def _response_model(self, number: int) -> int:
        """The config answering model ``number``'s instructions: itself, or its chat twin (openai)."""
        openai = [i for i, m in enumerate(self._base()) if m.backend == "openai"]
        return len(self._base()) + openai.index(number) if number in openai else number

    def parts(self, number: int, system: str | None) -> TemplateParts:
        key = (number, system)
        if key not in self._parts:
            config = self.llm_configs()[number]
            if self.pre_query_template is not None:
                self._parts[key] = TemplateParts(named_pre_query(self.pre_query_template), None, None)
            else:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
                template = load_template(config) or tokenizer.chat_template
                if not template:
                    raise DsforgeError(
                        f"{self.where}: {config.model} has no chat template; give llm.chat_template "
                        "or pre_query_template"
                    )
                self._parts[key] = template_parts(tokenizer, template, system)
        return self._parts[key]

    def _stops(self, number: int) -> list[str]:
        return self.configs()[number].stop

    # ------------------------------------------------------------------ run
    def _systems(self, batch: pl.DataFrame) -> list[str | None]:
        if self.system_prompt_column is None:
            return [self.system_prompt] * batch.height
        require_column(self, batch, self.system_prompt_column)
        return [s if s and s.strip() else None for s in batch.get_column(self.system_prompt_column).to_list()]

    def _row_keys(self, batch: pl.DataFrame) -> list[int]:
        if self.key_column is not None:
            require_column(self, batch, self.key_column)
            text = pl.col(self.key_column).cast(pl.String).fill_null("")
        else:
            text = pl.struct(pl.all()).struct.json_encode()
        return (
            batch.select(stable_hash(text) % (2**31)).to_series().to_list()
            if batch.width
            else [0] * batch.height
        )

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        systems, keys = self._systems(batch), self._row_keys(batch)
        models, configs = len(self._base()), self.configs()
        rows, calls, who = [], [], []
        for r in range(batch.height):
            for m in range(models):
                for k in range(self.n):
                    rows.append(r)
                    who.append(m)
                    calls.append(Call(m, self.parts(m, systems[r]).pre, keys[r] * self.n + k))
        outcomes = self.call(calls)
        instructions, reasons, called, cached, seen = [], [], [], [], set()
        for m, outcome in zip(who, outcomes, strict=True):
            text = None
            if outcome.text is not None:
                text = clean_instruction(cut_at_stop(outcome.text, self._stops(m))[0])
            reason = self.outcome_reason(outcome, text)
            if reason is None and len(text.split()) < self.min_words:
                reason = TOO_SHORT
            if reason is None:
                folded = (m, " ".join(text.lower().split()))
                reason = DUPLICATE if folded in seen else None
                seen.add(folded)
            instructions.append(text)
            reasons.append(reason)
            called.append(int(was_called(outcome)))
            cached.append(int(outcome.cached))
        answers: list[str | None] = [None] * len(rows)
        if self.response:
            self._answer(rows, who, systems, instructions, reasons, answers, called, cached)
        out = batch.select(pl.all().gather(rows)) if rows else batch.clear()
        new = [
            pl.Series(self.column, instructions, dtype=pl.String),
            pl.Series(self.model_column, [configs[m].display_name for m in who], dtype=pl.String),
            pl.Series(REASON, reasons, dtype=pl.String),
            pl.Series(CALLED, called, dtype=pl.Int64),
            pl.Series(CACHED, cached, dtype=pl.Int64),
        ]
        if self.response:
            new.append(pl.Series(self.response_column, answers, dtype=pl.String))
        if self.messages:
            new.append(
                turns_series(
                    MESSAGES,
                    [_turns(systems[r], i, a) for r, i, a in zip(rows, instructions, answers, strict=True)],
                )
            )
        return self.finish(out.with_columns(new))

    def _answer(
        self,
        rows: list[int],
        who: list[int],
        systems: list[str | None],
        instructions: list[str | None],
        reasons: list[str | None],
        answers: list[str | None],
        called: list[int],
        cached: list[int],
    ) -> None:
        """Ask each kept instruction's model for the answer (raw through the template, or chat)."""
        wanted = [i for i, reason in enumerate(reasons) if reason is None]
        calls = []
        for i in wanted:
            m, system = who[i], systems[rows[i]]
            number = self._response_model(m)
            if self.configs()[number].chat:
                calls.append(Call(number, _turns(system, instructions[i], None)))
            else:
                parts = self.parts(m, system)
                calls.append(Call(number, parts.pre + instructions[i] + (parts.post or "")))
        for i, outcome in zip(wanted, self.call(calls), strict=True):
            text = outcome.text
            if text is not None:
                text = cut_at_stop(text, self._stops(who[i]))[0].strip()
            reason = self.outcome_reason(outcome, text)
            reasons[i] = f"response_{reason}" if reason else None
            answers[i] = text
            called[i] += int(was_called(outcome))
            cached[i] += int(outcome.cached)


def _turns(system: str | None, instruction: str | None, answer: str | None) -> list[dict[str, str]] | None:
    if not instruction:
        return None
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": instruction})
    if answer:
        turns.append({"role": "assistant", "content": answer})
    return turns
