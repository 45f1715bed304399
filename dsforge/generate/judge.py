"""``judge``: an LLM rates answers (absolute scores) or picks the better of two (pairwise).

Absolute, ``scale: 5``: UltraFeedback's overall-rating prompt (distilabel's template and system
prompt, one text), answered ``Rating: N``. ``scale: 10``: MT-Bench's single-answer prompt
(FastChat ``single-v1``), answered ``[[N]]``. Pairwise: MT-Bench ``pair-v2`` (``[[A]]``,
``[[B]]``, ``[[C]]`` for a tie), asked in both orders; the pair counts only when both orders
agree. Parsing is strict: exactly one verdict of the expected form, within the scale, or the
row fails with ``unparseable_judgment``. Other reasons: ``judge_inconsistent`` (the two orders
disagree), ``judge_tie``, ``no_response`` (nothing to judge), and the call failures
(``llm_error``, ``empty_output``, ``truncated_output``, ``prompt_too_long``).

Outputs: absolute → ``score`` (Float64) per row, what ``make_pairs`` policies read. Pairwise →
``judge_winner`` ("a"/"b" for ``a_column``/``b_column``); with ``reorder`` the pair is swapped
when b won (with ``<a>_model``/``<a>_score`` and their b twins), so ``chosen`` is the judge's pick.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import model_validator

from dsforge.chat.schema import MESSAGES
from dsforge.generate.backends import LLMConfig
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, raw_text, was_called
from dsforge.generate.prompts import NO_RESPONSE, content_of, question_of, require_column, split_answer
from dsforge.registry import register_step

UNPARSEABLE = "unparseable_judgment"
INCONSISTENT = "judge_inconsistent"
TIE = "judge_tie"

# FastChat llm_judge prompts (Apache-2.0), lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl
MT_SINGLE_SYSTEM = "You are a helpful assistant."
MT_SINGLE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
    "provided by an AI assistant to the user question displayed below. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of "
    "detail of the response. Begin your evaluation by providing a short explanation. Be as objective "
    "as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 "
    'by strictly following this format: "[[rating]]", for example: "Rating: '
    "[[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of "
    "Assistant's Answer]"
)
MT_PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows "
    "the user's instructions and answers the user's question better. Your evaluation should consider "
    "factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of "
    "their responses. Begin your evaluation by comparing the two responses and provide a short "
    "explanation. Avoid any position biases and ensure that the order in which the responses were "
    "presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following "
    'this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" '
    "for a tie."
)
MT_PAIR = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)

RATING_LINE = re.compile(
    r"^[ \t]*\**Rating\**[ \t]*:[ \t]*\[?(\d{1,2})\]?[ \t]*$", re.MULTILINE | re.IGNORECASE
)
BRACKETED = re.compile(r"\[\[(\d{1,2}(?:\.\d+)?)\]\]")
VERDICT = re.compile(r"\[\[([ABC])\]\]")
PLACEHOLDER = re.compile(r"\{(question|answer|answer_a|answer_b)\}")


def parse_rating(text: str | None, output_format: str, scale: int) -> float | None:
    """The one rating in a judgment, or None: no match, several different ones, or off the scale."""
    if not text:
        return None
    pattern = RATING_LINE if output_format == "rating_line" else BRACKETED
    values = {float(v) for v in pattern.findall(text)}
    if len(values) != 1:
        return None
    value = values.pop()
    return value if 1 <= value <= scale else None


def parse_verdict(text: str | None) -> str | None:
    """ "A", "B" or "C" (tie) when the judgment names exactly one of them, else None."""
    found = set(VERDICT.findall(text or ""))
    return found.pop() if len(found) == 1 else None


DIRECT = {"A": "a", "B": "b", "C": "tie"}
MIRRORED = {"A": "b", "B": "a", "C": "tie"}


def combine_verdicts(
    first: str | None, second: str | None = None, *, swapped: bool = True
) -> tuple[str | None, str | None]:
    """Winner ("a"/"b") from the A-vs-B verdict and (``swapped``) the B-vs-A one, or (None, reason)."""
    if first is None or (swapped and second is None):
        return None, UNPARSEABLE
    winner = DIRECT[first]
    if swapped and MIRRORED[second] != winner:
        return None, INCONSISTENT
    return (None, TIE) if winner == "tie" else (winner, None)


def fill(template: str, **values: str) -> str:
    """Substitute ``{question}``-style placeholders in one pass (answers may contain braces)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def ultrafeedback_prompt(question: str, answer: str) -> tuple[str, str]:
    """distilabel's UltraFeedback overall-rating prompt for one text: (system, user)."""
    from distilabel.steps.tasks.ultrafeedback import UltraFeedback
    from jinja2 import Template

    path = files("distilabel").joinpath(
        "steps", "tasks", "templates", "ultrafeedback", "overall-rating.jinja2"
    )
    system = UltraFeedback.__private_attributes__["_system_prompt"].default.format(no_texts=1)
    user = Template(path.read_text(encoding="utf-8")).render(instruction=question, generations=[answer])
    return system, user


@register_step("judge")
class Judge(LLMStep):
    """Rate answers with an LLM judge (absolute scores, or pairwise with position swapping)."""

    example: ClassVar[dict] = {
        "step": "judge",
        "llm": {"backend": "openai", "model": "judge-model", "base_url": "http://127.0.0.1:8000/v1"},
        "mode": "absolute",
        "scale": 5,
    }

    llm: LLMConfig
    mode: Literal["absolute", "pairwise"] = "absolute"
    scale: Literal[5, 10] = 5
    #: absolute: the conversation whose last assistant turn is judged
    column: str = MESSAGES
    #: absolute: judge this text column instead (the question then comes from ``column`` or prompt_column)
    response_column: str | None = None
    #: the question as a text column, or (pairwise) a conversation/text column like TRL's ``prompt``
    prompt_column: str | None = None
    a_column: str = "chosen"
    b_column: str = "rejected"
    #: pairwise: also ask with the answers swapped, and keep only verdicts both orders agree on
    swap: bool = True
    reorder: bool = True
    #: a custom user prompt with {question} and {answer} (or {answer_a}, {answer_b}) placeholders
    template: str | None = None
    system_prompt: str | None = None
    #: how a custom template asks for the rating: "Rating: N" lines or "[[N]]"
    output_format: Literal["rating_line", "brackets"] | None = None
    score_column: str = "score"
    #: keep the judge's raw text(s) in a ``judgment`` column
    keep_judgment: bool = False

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "column",
        "response_column",
        "prompt_column",
        "a_column",
        "b_column",
        "swap",
        "reorder",
        "score_column",
        "keep_judgment",
        "template",
        "system_prompt",
    }  # the template and system prompt reach the key through the exact prompt sent

    @model_validator(mode="after")
    def _template_fits(self) -> Judge:
        if self.template is not None:
            needed = {"answer_a", "answer_b"} if self.mode == "pairwise" else {"answer"}
            missing = needed - set(PLACEHOLDER.findall(self.template))
            if missing:
                raise ValueError(f"template lacks {', '.join('{' + m + '}' for m in sorted(missing))}")
        return self

    def llm_configs(self) -> list[LLMConfig]:
        return [self.llm]

    @property
    def rating_format(self) -> str:
        if self.output_format is not None:
            return self.output_format
        return "rating_line" if self.scale == 5 else "brackets"

    def _messages(self, system: str | None, user: str) -> Any:
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return turns if self.configs()[0].chat else raw_text(turns)

    def absolute_prompt(self, question: str, answer: str) -> Any:
        if self.template is not None:
            return self._messages(self.system_prompt, fill(self.template, question=question, answer=answer))
        if self.scale == 5:
            system, user = ultrafeedback_prompt(question, answer)
        else:
            system, user = MT_SINGLE_SYSTEM, fill(MT_SINGLE, question=question, answer=answer)
        return self._messages(self.system_prompt or system, user)

    def pairwise_prompt(self, question: str, first: str, second: str) -> Any:
        user = fill(self.template or MT_PAIR, question=question, answer_a=first, answer_b=second)
        return self._messages(self.system_prompt or MT_PAIR_SYSTEM, user)

    # ------------------------------------------------------------------ inputs
    def _questions(self, batch: pl.DataFrame) -> list[str | None]:
        source = self.prompt_column
        if source is None and self.mode == "pairwise" and "prompt" in batch.columns:
            source = "prompt"  # TRL's explicit pairs
        if source is not None:
            require_column(self, batch, source)
            values = batch.get_column(source).to_list()
            return [v if isinstance(v, str) or v is None else question_of(_turns(v)) for v in values]
        require_column(self, batch, self.column)
        turns = [_turns(v) for v in batch.get_column(self.column).to_list()]
        if self.mode == "absolute" and self.response_column is None:
            return [question_of(split_answer(t)[0]) for t in turns]
        return [question_of(t) for t in turns]

    def _answers(self, batch: pl.DataFrame, column: str | None) -> list[str | None]:
        if column is None:  # the last assistant turn of the conversation
            return [split_answer(_turns(v))[1] for v in batch.get_column(self.column).to_list()]
        require_column(self, batch, column)
        return [content_of(v) for v in batch.get_column(column).to_list()]

    # ------------------------------------------------------------------ run
    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        questions = self._questions(batch)
        if self.mode == "absolute":
            return self._absolute(batch, questions)
        return self._pairwise(batch, questions)

    def _absolute(self, batch: pl.DataFrame, questions: list[str | None]) -> pl.DataFrame:
        answers = self._answers(batch, self.response_column)
        calls, slots = [], []
        for question, answer in zip(questions, answers, strict=True):
            if question and answer and answer.strip():
                slots.append(len(calls))
                calls.append(Call(0, self.absolute_prompt(question, answer)))
            else:
                slots.append(None)
        outcomes = self.call(calls)
        scores, reasons, called, cached, texts = [], [], [], [], []
        for slot in slots:
            outcome = outcomes[slot] if slot is not None else None
            reason = self.outcome_reason(outcome) if outcome is not None else NO_RESPONSE
            score = parse_rating(outcome.text, self.rating_format, self.scale) if reason is None else None
            if reason is None and score is None:
                reason = UNPARSEABLE
            scores.append(score)
            reasons.append(reason)
            texts.append(outcome.text if outcome is not None else None)
            called.append(int(outcome is not None and was_called(outcome)))
            cached.append(int(outcome is not None and outcome.cached))
        new = [
            pl.Series(self.score_column, scores, dtype=pl.Float64),
            pl.Series(REASON, reasons, dtype=pl.String),
            pl.Series(CALLED, called, dtype=pl.Int64),
            pl.Series(CACHED, cached, dtype=pl.Int64),
        ]
        if self.keep_judgment:
            new.append(pl.Series("judgment", texts, dtype=pl.String))
        return self.finish(batch.with_columns(new))

    def _pairwise(self, batch: pl.DataFrame, questions: list[str | None]) -> pl.DataFrame:
        first, second = self._answers(batch, self.a_column), self._answers(batch, self.b_column)
        calls, slots = [], []
        for question, a, b in zip(questions, first, second, strict=True):
            if not (question and a and b and a.strip() and b.strip()):
                slots.append(None)
                continue
            slots.append(len(calls))
            calls.append(Call(0, self.pairwise_prompt(question, a, b)))
            if self.swap:
                calls.append(Call(0, self.pairwise_prompt(question, b, a)))
        outcomes = self.call(calls)
        per_row = 2 if self.swap else 1
        winners, reasons, called, cached, texts = [], [], [], [], []
        for slot in slots:
            mine = outcomes[slot : slot + per_row] if slot is not None else []
            reason = (
                next((r for r in (self.outcome_reason(o) for o in mine) if r), None) if mine else NO_RESPONSE
            )
            winner = None
            if reason is None:
                verdicts = [parse_verdict(o.text) for o in mine]
                winner, reason = combine_verdicts(*verdicts, swapped=self.swap)
            winners.append(winner)
            reasons.append(reason)
            texts.append("\n\n=====\n\n".join(o.text or "" for o in mine) if mine else None)
            called.append(sum(int(was_called(o)) for o in mine))
            cached.append(sum(int(o.cached) for o in mine))
        out = batch.with_columns(
            pl.Series("judge_winner", winners, dtype=pl.String),
            pl.Series(REASON, reasons, dtype=pl.String),
            pl.Series(CALLED, called, dtype=pl.Int64),
            pl.Series(CACHED, cached, dtype=pl.Int64),
        )
        if self.keep_judgment:
            out = out.with_columns(pl.Series("judgment", texts, dtype=pl.String))
        if self.reorder:
            out = self._swap_losers(out)
        return self.finish(out)

    def _swap_losers(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Where b won, exchange a and b (and their ``_model``/``_score`` twins)."""
        flip = pl.col("judge_winner") == "b"
        pairs = [(self.a_column, self.b_column)] + [
            (f"{self.a_column}{s}", f"{self.b_column}{s}")
            for s in ("_model", "_score")
            if f"{self.a_column}{s}" in frame.columns and f"{self.b_column}{s}" in frame.columns
        ]
        swapped = []
        for a, b in pairs:
            swapped += [
                pl.when(flip).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
                pl.when(flip).then(pl.col(a)).otherwise(pl.col(b)).alias(b),
            ]
        return frame.with_columns(swapped)


def _turns(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [{"role": t.get("role") or "", "content": t.get("content") or ""} for t in value]
