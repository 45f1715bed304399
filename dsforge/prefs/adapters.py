"""The canonical preference record, and ``to_pairs``: ready-made pairs in common formats → that record.

The record is TRL's *explicit conversational* preference format, so DPOTrainer reads it as is:

* ``prompt``: a list of ``{role, content}`` turns ending with a user turn;
* ``chosen`` / ``rejected``: each a one-element list holding the assistant's answer;
* metadata ``source``, ``chosen_model``, ``rejected_model`` (strings), ``chosen_score``,
  ``rejected_score``, ``margin`` (floats; null when the input has no scores).

``style: implicit`` writes the full conversations in ``chosen``/``rejected`` and no ``prompt``.
A string ``prompt`` beside conversational answers is never written (TRL would misread it).

Formats of ``to_pairs``, detected from column names and dtypes only (first match wins):

1. ``llamafactory``: ``conversations`` [{from, value}] and ``chosen``/``rejected`` {from, value};
2. ``trl``: ``chosen``/``rejected`` are lists of turns; with a conversational ``prompt`` the pair is
   explicit, otherwise (no prompt, or a string prompt beside multi-turn answers, as in
   UltraFeedback-binarized) the prompt is the turns before each side's last turn (TRL's
   ``maybe_extract_prompt``, restricted to one answer turn);
3. ``strings``: ``prompt``, ``chosen``, ``rejected`` strings (+ optional ``system``);
4. ``hh_rlhf``: ``chosen``/``rejected`` are ``Human:/Assistant:`` transcripts and there is no
   ``prompt``; each is split into turns (the SFT transcript parser) and the pair is cut at the
   last turn: the turns before it must be the same on both sides.

Drop reasons (first that applies): ``unparseable_transcript``, ``no_shared_prompt``,
``empty_answer``, ``multi_turn_answer``, ``answer_not_assistant``, ``empty_prompt``,
``prompt_<rule>`` (a conversation rule of :mod:`dsforge.chat.rules` broken by the prompt, e.g.
``prompt_not_alternating``), ``identical_answers``, ``missing_score``/``unparseable_score`` (a
mapped score column that is empty or not a number), ``tie`` (equal scores), ``inverted_scores``.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from dsforge.chat.formats.conversation import convert_sharegpt
from dsforge.chat.formats.transcript import convert_hh_rlhf
from dsforge.chat.formats.turns import (
    EMPTY_TURNS,
    UNCONVERTIBLE,
    Job,
    content_text,
    normalize_role,
    optional_system,
    single_turn,
    turns_from_list,
)
from dsforge.chat.rules import conversation_drop_reason
from dsforge.chat.schema import MESSAGE_DTYPE, MESSAGES, MESSAGES_DTYPE, TRL_RESERVED
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import DROP_COLUMN, DROPPED_ONLY_PREFIX, METRIC_PREFIX, Transform, merge_drop_reason

# --------------------------------------------------------------------------- the canonical record
PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"
#: Metadata columns of every preference record, with their dtypes.
METADATA: dict[str, pl.DataType] = {
    "source": pl.String,
    "chosen_model": pl.String,
    "rejected_model": pl.String,
    "chosen_score": pl.Float64,
    "rejected_score": pl.Float64,
    "margin": pl.Float64,
}
PAIR_COLUMNS = (PROMPT, CHOSEN, REJECTED, *METADATA)
Style = Literal["explicit", "implicit"]


def canonical_schema(style: Style = "explicit") -> pl.Schema:
    """The columns and dtypes of a preference record in the given style."""
    sides = {CHOSEN: MESSAGES_DTYPE, REJECTED: MESSAGES_DTYPE}
    head = sides if style == "implicit" else {PROMPT: MESSAGES_DTYPE, **sides}
    return pl.Schema({**head, **METADATA})


def answer_turn(text: pl.Expr) -> pl.Expr:
    """A text as the one-assistant-turn list that ``chosen``/``rejected`` hold."""
    return single_turn("assistant", text)


def _blank(text: pl.Expr) -> pl.Expr:
    return (text.is_null() | (text.str.strip_chars() == "")).fill_null(True)


_CONVERSATION = "__pair_conversation__"


def pair_drop_reason(
    frame: pl.DataFrame, prompt: str = PROMPT, chosen: str = CHOSEN, rejected: str = REJECTED
) -> pl.Series:
    """Why each explicit pair breaks the canonical format (null where the row is a valid record).

    The prompt is checked with the SFT conversation rules applied to ``prompt + chosen``: with a
    valid answer, only the prompt can break them (e.g. a prompt ending on an assistant turn makes
    the roles not alternate)."""
    rules: list[tuple[pl.Expr, str | pl.Expr]] = []
    for side in (chosen, rejected):
        rules += [
            (pl.col(side).list.len().fill_null(0) == 0, "empty_answer"),
            (_blank(pl.col(side).list.first().struct.field("content")), "empty_answer"),
        ]
    for side in (chosen, rejected):
        rules += [
            (pl.col(side).list.len() > 1, "multi_turn_answer"),
            (pl.col(side).list.first().struct.field("role") != "assistant", "answer_not_assistant"),
        ]
    prompt_rule = conversation_drop_reason(_CONVERSATION)
    rules += [
        (pl.col(prompt).list.len().fill_null(0) == 0, "empty_prompt"),
        (prompt_rule.is_not_null(), pl.lit("prompt_") + prompt_rule),
        (
            pl.col(chosen).list.first().struct.field("content")
            == pl.col(rejected).list.first().struct.field("content"),
            "identical_answers",
        ),
    ]
    reason = pl.lit(None, dtype=pl.String)
    for condition, name in reversed(rules):
        value = pl.lit(name) if isinstance(name, str) else name
        reason = pl.when(condition.fill_null(False)).then(value).otherwise(reason)
    with_conversation = frame.select(
        pl.col(prompt),
        pl.col(chosen),
        pl.col(rejected),
        pl.concat_list([pl.col(prompt), pl.col(chosen)]).alias(_CONVERSATION),
    )
    return with_conversation.select(reason.alias("reason")).to_series()


def score_columns(chosen: pl.Expr, rejected: pl.Expr) -> tuple[list[pl.Expr], pl.Expr]:
    """Parsed scores and margin, and a drop reason: scores absent, not numbers, tied or inverted."""
    parsed, reasons = [], []
    for raw, name in ((chosen, "chosen_score"), (rejected, "rejected_score")):
        value, bad = parse_score(raw)
        parsed.append(value.alias(name))
        reasons.append((raw.is_null(), "missing_score"))
        reasons.append((bad, "unparseable_score"))
    margin = (parsed[0] - parsed[1]).alias("margin")
    reasons += [(margin == 0, "tie"), (margin < 0, "inverted_scores")]
    reason = pl.lit(None, dtype=pl.String)
    for condition, name in reversed(reasons):
        reason = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    return [*parsed, margin], reason


def parse_score(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A score as Float64, and whether a present value is not a finite number ("4.5" parses, "good" not).

    Blank strings count as missing (null, not flagged)."""
    text = raw.cast(pl.String).str.strip_chars()
    value = text.cast(pl.Float64, strict=False)
    value = pl.when(value.is_finite()).then(value)
    bad = (text.is_not_null() & (text != "") & value.is_null()).fill_null(False)
    return value, bad


def to_implicit(frame: pl.DataFrame) -> pl.DataFrame:
    """Explicit → implicit: the prompt is put in front of each answer and the column removed."""
    return frame.with_columns(
        pl.concat_list([pl.col(PROMPT), pl.col(CHOSEN)]).alias(CHOSEN),
        pl.concat_list([pl.col(PROMPT), pl.col(REJECTED)]).alias(REJECTED),
    ).drop(PROMPT)


# --------------------------------------------------------------------------- to_pairs
PairFormat = Literal["auto", "hh_rlhf", "llamafactory", "trl", "strings"]
#: ``fields:`` keys: canonical names the input may call otherwise.
FIELD_NAMES = (
    "prompt",
    "chosen",
    "rejected",
    "system",
    "conversations",
    "chosen_model",
    "rejected_model",
    "chosen_score",
    "rejected_score",
)
_UNPARSEABLE = "__pair_unparseable__"
_P, _C, _R = "__p__", "__c__", "__r__"


def _is_turns(dtype: pl.DataType | None) -> bool:
    return isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)


def detect_pair_format(schema: pl.Schema, col) -> str | None:
    """The pair format of a batch from its column names and dtypes; None when none fits."""
    chosen, rejected = schema.get(col("chosen")), schema.get(col("rejected"))
    if chosen is None or rejected is None:
        return None
    if _is_turns(schema.get(col("conversations"))) and isinstance(chosen, pl.Struct):
        return "llamafactory"
    if _is_turns(chosen):
        return "trl"
    if col("prompt") in schema and chosen == pl.String:
        return "strings"
    if chosen == pl.String and rejected == pl.String:
        return "hh_rlhf"
    return None


def _split_last(turns: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A conversation → (the turns before the last, the last turn as a one-element list)."""
    length = turns.list.len().fill_null(0)
    return turns.list.head(pl.max_horizontal(length - 1, 0)), turns.list.slice(-1, 1)


def _implicit(chosen: pl.Expr, rejected: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """Split both full conversations at their last turn; returns prompt, chosen, rejected, reason."""
    prompt, chosen_answer = _split_last(chosen)
    other_prompt, rejected_answer = _split_last(rejected)
    reason = pl.when((prompt != other_prompt).fill_null(True)).then(pl.lit("no_shared_prompt"))
    return prompt, chosen_answer, rejected_answer, reason


@register_step("to_pairs")
class ToPairs(Transform):
    """Ready preference pairs (HH-RLHF, LLaMA-Factory, TRL, plain strings) → the canonical pair record.

    Rows that cannot be made a valid pair are dropped with a reason; the funnel metric
    ``pair_format_<name>`` counts rows per detected format.
    """

    format: PairFormat = Field("auto", description="input format; auto = detect from the columns")
    fields: dict[str, str] = Field(default_factory=dict, description="canonical field name → input column")
    style: Style = Field("explicit", description="explicit: prompt + one-turn answers; implicit: full chats")
    keep_columns: bool = Field(True, description="keep the input's other columns (TRL names → meta_<name>)")
    example = {
        "format": "auto",
        "fields": {"chosen_score": "score_chosen", "rejected_score": "score_rejected"},
    }

    def model_post_init(self, _context) -> None:
        unknown = [k for k in self.fields if k not in FIELD_NAMES]
        if unknown:
            raise ValueError(f"fields: unknown field {unknown[0]!r} (known: {', '.join(FIELD_NAMES)})")

    def _where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    def col(self, name: str) -> str:
        return self.fields.get(name, name)

    def resolve_format(self, schema: pl.Schema) -> str:
        name = self.format if self.format != "auto" else detect_pair_format(schema, self.col)
        if name is None:
            seen = ", ".join(f"{c}: {t}" for c, t in schema.items())
            raise DsforgeError(
                f"{self._where()}: cannot tell the preference format from the columns ({seen}); known: "
                "llamafactory (conversations + chosen/rejected {from, value}), trl (chosen/rejected turn "
                "lists), strings (prompt/chosen/rejected text), hh_rlhf (chosen/rejected transcripts); "
                "set 'format:' or map names with 'fields:'"
            )
        extra = {"llamafactory": ["conversations"], "strings": ["prompt"]}.get(name, [])
        needed = ["chosen", "rejected", *extra]
        missing = [self.col(f) for f in needed if self.col(f) not in schema]
        if missing:
            raise DsforgeError(f"{self._where()}: format {name} needs a column {missing[0]!r}")
        return name

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        name = self.resolve_format(batch.schema)
        converted = getattr(self, f"_{name}")(batch)
        frame = batch.with_columns(
            converted[0].cast(MESSAGES_DTYPE).alias(_P),
            converted[1].cast(MESSAGES_DTYPE).alias(_C),
            converted[2].cast(MESSAGES_DTYPE).alias(_R),
            converted[3].cast(pl.String).alias(_UNPARSEABLE),
        )
        scores, score_reason = self._scores(batch.schema)
        frame = frame.with_columns(scores)
        shape = pair_drop_reason(frame, _P, _C, _R)
        reason = pl.coalesce(pl.col(_UNPARSEABLE), pl.lit(shape), score_reason)
        frame = merge_drop_reason(frame, reason).with_columns(
            pl.lit(1).alias(f"{METRIC_PREFIX}pair_format_{name}")
        )
        return self._select(frame, batch.columns, name)

    # -- formats: each returns prompt, chosen, rejected (turn lists) and an unparseable reason
    def _hh_rlhf(self, batch: pl.DataFrame) -> tuple[pl.Expr, ...]:
        where = self._where()
        sides = []
        for field in ("chosen", "rejected"):
            column = self.col(field)
            parsed = convert_hh_rlhf(batch.select(column), Job({}, where, transcript_field=column))
            sides.append(parsed.select(MESSAGES, UNCONVERTIBLE))
        prompt, chosen, rejected, shared = _implicit(pl.lit(sides[0][MESSAGES]), pl.lit(sides[1][MESSAGES]))
        bad = pl.lit(sides[0][UNCONVERTIBLE]).is_not_null() | pl.lit(sides[1][UNCONVERTIBLE]).is_not_null()
        reason = pl.when(bad).then(pl.lit("unparseable_transcript")).otherwise(shared)
        return prompt, chosen, rejected, reason

    def _llamafactory(self, batch: pl.DataFrame) -> tuple[pl.Expr, ...]:
        job = Job({k: v for k, v in self.fields.items() if k in ("conversations", "system")}, self._where())
        prompt = convert_sharegpt(batch, job).get_column(MESSAGES)
        answers = []
        for field in ("chosen", "rejected"):
            column = self.col(field)
            dtype = batch.schema[column]
            keys = {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()
            role_key, content_key = ("from", "value") if {"from", "value"} <= keys else ("role", "content")
            if not {role_key, content_key} <= keys:
                raise DsforgeError(f"{self._where()}: {column!r} is {dtype}, not a {{from, value}} message")
            content, _ = content_text(
                pl.col(column).struct.field(content_key), dict(dtype.to_schema())[content_key]
            )
            role = normalize_role(pl.col(column).struct.field(role_key).cast(pl.String))
            turn = pl.struct(role=role, content=content).cast(MESSAGE_DTYPE)
            answers.append(
                pl.when(pl.col(column).is_not_null()).then(pl.concat_list([turn])).otherwise(EMPTY_TURNS)
            )
        return pl.lit(prompt), answers[0], answers[1], pl.lit(None, dtype=pl.String)

    def _turns(self, batch: pl.DataFrame, field: str) -> pl.Expr:
        column = self.col(field)
        dtype = batch.schema[column]
        keys = {f.name for f in dtype.inner.fields} if _is_turns(dtype) else set()
        role_key, content_key = ("from", "value") if {"from", "value"} <= keys else ("role", "content")
        turns, _ = turns_from_list(column, dtype, role_key, content_key, self._where())
        return turns

    def _trl(self, batch: pl.DataFrame) -> tuple[pl.Expr, ...]:
        chosen, rejected = self._turns(batch, "chosen"), self._turns(batch, "rejected")
        prompt_dtype = batch.schema.get(self.col("prompt"))
        if _is_turns(prompt_dtype):
            return self._turns(batch, "prompt"), chosen, rejected, pl.lit(None, dtype=pl.String)
        prompt, chosen_answer, rejected_answer, reason = _implicit(chosen, rejected)
        if prompt_dtype == pl.String:  # a string prompt with one-turn answers: the prompt is that string
            one_turn = (chosen.list.len() == 1) & (rejected.list.len() == 1)
            text = pl.col(self.col("prompt"))
            prompt = pl.when(one_turn).then(single_turn("user", text)).otherwise(prompt)
            chosen_answer = pl.when(one_turn).then(chosen).otherwise(chosen_answer)
            rejected_answer = pl.when(one_turn).then(rejected).otherwise(rejected_answer)
            reason = pl.when(one_turn).then(pl.lit(None, dtype=pl.String)).otherwise(reason)
        return prompt, chosen_answer, rejected_answer, reason

    def _strings(self, batch: pl.DataFrame) -> tuple[pl.Expr, ...]:
        def text(field: str) -> pl.Expr:
            return content_text(pl.col(self.col(field)), batch.schema[self.col(field)])[0]

        prompt = single_turn("user", text("prompt"))
        if self.col("system") in batch.columns:
            prompt = pl.concat_list([optional_system(text("system")), prompt])
        return (
            prompt,
            answer_turn(text("chosen")),
            answer_turn(text("rejected")),
            pl.lit(None, dtype=pl.String),
        )

    # -- metadata
    def _scores(self, schema: pl.Schema) -> tuple[list[pl.Expr], pl.Expr]:
        exprs = [
            (
                pl.col(self.col(m)).cast(pl.String)
                if self.col(m) in schema
                else pl.lit(None, dtype=pl.String)
            ).alias(f"__{m}__")
            for m in ("chosen_model", "rejected_model")
        ]
        scored = [self.col(s) in schema for s in ("chosen_score", "rejected_score")]
        if not any(scored):
            nulls = [
                pl.lit(None, dtype=pl.Float64).alias(f"__{m}__")
                for m in ("chosen_score", "rejected_score", "margin")
            ]
            return exprs + nulls, pl.lit(None, dtype=pl.String)
        raw = [
            pl.col(self.col(s)) if ok else pl.lit(None)
            for s, ok in zip(("chosen_score", "rejected_score"), scored, strict=True)
        ]
        values, reason = score_columns(*raw)
        return exprs + [v.alias(f"__{v.meta.output_name()}__") for v in values], reason

    def _select(self, frame: pl.DataFrame, input_columns: list[str], name: str) -> pl.DataFrame:
        consumed = {self.col(f) for f in FIELD_NAMES} | {"chosen", "rejected", "prompt"}
        if name == "llamafactory":
            consumed |= {self.col("conversations"), self.col("system")}
        source = (
            pl.col("source").cast(pl.String) if "source" in frame.columns else pl.lit(None, dtype=pl.String)
        )
        out = frame.select(
            pl.col(_P).alias(PROMPT),
            pl.col(_C).alias(CHOSEN),
            pl.col(_R).alias(REJECTED),
            source.alias("source"),
            *[pl.col(f"__{m}__").alias(m) for m in list(METADATA)[1:]],
            *[
                c
                for c in frame.columns
                if c == DROP_COLUMN or c.startswith((METRIC_PREFIX, DROPPED_ONLY_PREFIX))
            ],
        )
        extras = [c for c in input_columns if c not in consumed and c not in PAIR_COLUMNS]
        if self.keep_columns and extras:
            taken = set(out.columns) | set(extras)
            renames = {}
            for column in extras:
                if column in TRL_RESERVED or column == MESSAGES:
                    renamed = "meta_" + column
                    while renamed in taken:
                        renamed += "_"
                    renames[column] = renamed
                    taken.add(renamed)
            out = out.with_columns(frame.select(extras).rename(renames))
        if self.style == "implicit":
            out = to_implicit(out)
        return out
