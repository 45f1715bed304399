# ruff: noqa: RUF001, RUF002, RUF003 - look-alike quotes and CJK punctuation are the point of some patterns
"""Filters on the ``messages`` column: length, model-speak phrases, repetition, placeholders, truncation.

Each works on columns: turns are exploded into a long (row, turn, role, content) frame or
selected with ``list.eval``, tested with one regex / statistic per rule, and folded back to one
drop reason per conversation (the first failing turn's, in turn order).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, PrivateAttr, field_validator, model_validator

from dsforge.chat.schema import MESSAGES, joined_text
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import Filter, Step
from dsforge.types import InputPath, PathOrHubId

NULL_REASON = pl.lit(None, dtype=pl.String)


# --------------------------------------------------------------------------- shared helpers
def where(step: Step) -> str:
    return f"steps.{step.context.step_index} ({step.name})"


def check_messages(step: Step, batch: pl.DataFrame, column: str) -> None:
    """The column must be the canonical list of {role, content} structs."""
    if column not in batch.columns:
        raise DsforgeError(
            f"{where(step)}: no column {column!r} (columns here: {', '.join(batch.columns)}); "
            "convert the data to messages first (to_messages)"
        )
    dtype = batch.schema[column]
    fields = (
        set(dtype.inner.to_schema())
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)
        else set()
    )
    if not {"role", "content"} <= fields:
        raise DsforgeError(
            f"{where(step)}: column {column!r} is {dtype}, not a list of {{role, content}} turns"
        )


def turn_rows(batch: pl.DataFrame, column: str, roles: list[str] | None = None) -> pl.DataFrame:
    """(row, turn, role, content) for every turn, in order; rows without turns have no entries."""
    long = (
        batch.select(pl.col(column).alias("m"))
        .with_row_index("row")
        .explode("m")
        .drop_nulls("m")
        .select(
            "row",
            role=pl.col("m").struct.field("role"),
            content=pl.col("m").struct.field("content").cast(pl.String).fill_null(""),
        )
        .with_columns(turn=pl.int_range(pl.len()).over("row"))
    )
    return long.filter(pl.col("role").is_in(roles)) if roles is not None else long


def reasons_per_row(n_rows: int, long: pl.DataFrame, reason: str = "reason") -> pl.Series:
    """The first non-null reason of each row's turns (long frame in row, turn order), aligned to rows."""
    first = (
        long.filter(pl.col(reason).is_not_null())
        .group_by("row", maintain_order=True)
        .agg(pl.col(reason).first())
    )
    rows = pl.DataFrame({"row": pl.arange(0, n_rows, dtype=pl.UInt32, eager=True)})
    joined = rows.join(first, on="row", how="left", maintain_order="left")
    return joined.get_column(reason).cast(pl.String)


def first_reason(rules: list[tuple[pl.Expr, pl.Expr | str]]) -> pl.Expr:
    """The reason of the first rule whose condition holds (null conditions do not), else null."""
    if not rules:
        return NULL_REASON
    chain = None
    for condition, reason in rules:
        reason = pl.lit(reason) if isinstance(reason, str) else reason
        chain = (pl.when if chain is None else chain.when)(condition.fill_null(False)).then(reason)
    return chain.otherwise(NULL_REASON)


# --------------------------------------------------------------------------- chat_length
Bound = int | dict[str, int] | None


@register_step("chat_length")
class ChatLength(Filter):
    """Drop conversations whose turns or whole length fall outside bounds, in characters or tokens.

    ``min_turn`` / ``max_turn`` bound every turn (an int) or turns by role (``{assistant: 1}``);
    ``min_total`` / ``max_total`` bound the sum over all turns (no template overhead: use
    ``chat_template``'s ``max_tokens`` for the rendered length). Reasons name the bound:
    ``min_turn_chars:assistant``, ``max_total_tokens``…
    """

    column: str = MESSAGES
    unit: Literal["chars", "tokens"] | None = Field(
        None, description="default: tokens if a tokenizer is given"
    )
    tokenizer: PathOrHubId | None = None
    min_turn: Bound = None
    max_turn: Bound = None
    min_total: int | None = Field(None, ge=0)
    max_total: int | None = Field(None, ge=0)
    example = {"tokenizer": "gpt2", "min_turn": {"assistant": 1}, "max_total": 4096}

    _backend: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> ChatLength:
        if all(b is None for b in (self.min_turn, self.max_turn, self.min_total, self.max_total)):
            raise ValueError("give at least one of min_turn, max_turn, min_total, max_total")
        if self.unit == "tokens" and self.tokenizer is None:
            raise ValueError("unit 'tokens' needs a tokenizer")
        if self.unit == "chars" and self.tokenizer is not None:
            raise ValueError("a tokenizer is only used with unit 'tokens'")
        return self

    @property
    def measure(self) -> str:
        return self.unit or ("tokens" if self.tokenizer else "chars")

    def setup(self) -> None:
        if self.measure == "tokens" and self._backend is None:
            from dsforge.tokens.tokenizer import load_tokenizer

            self._backend = load_tokenizer(self.tokenizer, where(self)).backend

    def _lengths(self, contents: pl.Series) -> pl.Series:
        if self.measure == "chars":
            return contents.str.len_chars().cast(pl.Int64)
        self.setup()
        texts = contents.to_list()
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return pl.Series([len(e.ids) for e in encode(texts, add_special_tokens=False)], dtype=pl.Int64)

    def _turn_bound(self, bound: Bound) -> pl.Expr | None:
        if bound is None:
            return None
        if isinstance(bound, int):
            return pl.lit(bound, dtype=pl.Int64)
        return pl.col("role").replace_strict(bound, default=None, return_dtype=pl.Int64)

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        check_messages(self, batch, self.column)
        long = turn_rows(batch, self.column)
        long = long.with_columns(length=self._lengths(long.get_column("content")))
        unit, rules = self.measure, []
        low, high = self._turn_bound(self.min_turn), self._turn_bound(self.max_turn)
        if low is not None:
            rules.append((pl.col("length") < low, pl.format(f"min_turn_{unit}:{{}}", pl.col("role"))))
        if high is not None:
            rules.append((pl.col("length") > high, pl.format(f"max_turn_{unit}:{{}}", pl.col("role"))))
        turn_reason = reasons_per_row(batch.height, long.with_columns(reason=first_reason(rules)))
        totals = (
            pl.DataFrame({"row": pl.arange(0, batch.height, dtype=pl.UInt32, eager=True)})
            .join(long.group_by("row").agg(total=pl.col("length").sum()), on="row", how="left")
            .sort("row")
            .get_column("total")
            .fill_null(0)
        )
        total_rules = []
        if self.min_total is not None:
            total_rules.append((pl.col("total") < self.min_total, f"min_total_{unit}"))
        if self.max_total is not None:
            total_rules.append((pl.col("total") > self.max_total, f"max_total_{unit}"))
        frame = pl.DataFrame({"turn": turn_reason, "total": totals})
        return frame.select(pl.coalesce(pl.col("turn"), first_reason(total_rules))).to_series()


# --------------------------------------------------------------------------- phrase_filter
PHRASE_PACKS = ("refusal", "ai_disclaimer", "identity", "cutoff")


def pack_path(name: str):
    return files("dsforge").joinpath("resources", "phrases", f"{name}.txt")


def phrase_regex(line: str) -> str:
    """A phrase-file line as a regex: ``re:`` lines verbatim; phrases escaped, spaces → any
    whitespace, ' → either apostrophe, ASCII word boundaries at word-character ends."""
    if line.startswith("re:"):
        return line[3:].strip()
    import re

    body = re.escape(line.strip())
    body = re.sub(r"(?:\\ )+", r"\\s+", body).replace("'", "['’]")
    start = r"(?-u:\b)" if re.match(r"\w", line.strip()) else ""
    end = r"(?-u:\b)" if re.search(r"\w$", line.strip()) else ""
    return start + body + end


def read_phrases(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def combined_regex(lines: list[str]) -> str:
    return "(?i)(?:" + "|".join(f"(?:{phrase_regex(line)})" for line in lines) + ")"


def check_regex(pattern: str, what: str) -> None:
    try:
        pl.Series([""]).str.contains(pattern)
    except Exception as exc:  # polars' ComputeError carries the Rust regex message
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{what}: not a valid regex ({first})") from None


@register_step("phrase_filter")
class PhraseFilter(Filter):
    """Drop conversations whose turns (assistant turns by default) contain model-speak phrases.

    Built-in packs (editable text files in dsforge/resources/phrases/): ``refusal`` ("I'm sorry,
    but I cannot"), ``ai_disclaimer`` ("as an AI language model"), ``identity`` ("I am ChatGPT,
    trained by OpenAI"), ``cutoff`` ("as of my last update"). Add ``phrases`` (reason
    ``phrase:custom``) and ``phrase_files`` (reason ``phrase:<file stem>``); one phrase or
    ``re:``-prefixed regex per line, ``#`` comments. Matching is case-insensitive, one combined
    regex per pack; the first matching pack names the reason (``phrase:refusal``…).
    """

    column: str = MESSAGES
    packs: list[str] = Field(default_factory=lambda: list(PHRASE_PACKS))
    phrases: list[str] = Field(default_factory=list)
    phrase_files: list[InputPath] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=lambda: ["assistant"], min_length=1)
    example = {"packs": ["refusal", "ai_disclaimer"], "phrases": ["as a helpful assistant"]}

    _patterns: list[tuple[str, str]] | None = PrivateAttr(default=None)

    @field_validator("packs")
    @classmethod
    def _known_packs(cls, packs: list[str]) -> list[str]:
        for name in packs:
            if not pack_path(name).is_file():
                raise ValueError(f"unknown phrase pack {name!r} (packs: {', '.join(PHRASE_PACKS)})")
        return packs

    @model_validator(mode="after")
    def _compile(self) -> PhraseFilter:
        if not (self.packs or self.phrases or self.phrase_files):
            raise ValueError("give packs, phrases or phrase_files")
        for reason, pattern in self.patterns():
            check_regex(pattern, reason)
        return self

    def _sources(self) -> list[tuple[str, str]]:
        sources = [(f"phrase:{name}", pack_path(name).read_text(encoding="utf-8")) for name in self.packs]
        if self.phrases:
            sources.append(("phrase:custom", "\n".join(self.phrases)))
        for path in self.phrase_files:
            sources.append((f"phrase:{Path(path).stem}", Path(path).read_text(encoding="utf-8")))
        return sources

    def patterns(self) -> list[tuple[str, str]]:
        """(reason, combined case-insensitive regex) per pack / file, in decision order."""
        if self._patterns is None:
            compiled = [(reason, read_phrases(text)) for reason, text in self._sources()]
            self._patterns = [(reason, combined_regex(lines)) for reason, lines in compiled if lines]
        return self._patterns

    def fingerprint_extra(self) -> str:
        return repr(self.patterns())

    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        check_messages(self, batch, self.column)
        text = joined_text(self.column, self.roles).fill_null("")
        hits = [(text.str.contains(pattern), reason, pattern) for reason, pattern in self.patterns()]
        matched = pl.coalesce([pl.when(hit).then(text.str.extract(pattern, 0)) for hit, _, pattern in hits])
        return batch.with_columns(
            first_reason([(hit, reason) for hit, reason, _ in hits]).alias("__phrase_reason"),
            matched.alias("__dropped__matched_phrase"),
        )

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        return pl.col("__phrase_reason")

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        return super().process(batch).drop("__phrase_reason")


# --------------------------------------------------------------------------- response_repetition
@register_step("response_repetition")
class ResponseRepetition(Filter):
    """Drop conversations where an assistant turn repeats itself (degenerate generation loops).

    Per turn: the fraction of its word n-grams that repeat an earlier n-gram of the same turn
    (``max_dup_ngram_frac``, words as :mod:`dsforge.text.doc_stats` splits them for Gopher) and the
    fraction of its lines that repeat an earlier line (``max_dup_line_frac``, Gopher's line
    statistic). Turns shorter than ``min_words`` words are not judged. Reasons
    ``repetition:<n>-grams`` and ``repetition:lines``; null disables a rule.
    """

    column: str = MESSAGES
    roles: list[str] = Field(default_factory=lambda: ["assistant"], min_length=1)
    ngram_size: int = Field(4, ge=1)
    max_dup_ngram_frac: float | None = Field(0.25, gt=0, le=1)
    max_dup_line_frac: float | None = Field(0.3, gt=0, le=1)
    min_words: int = Field(20, ge=1)
    example = {"ngram_size": 4, "max_dup_ngram_frac": 0.25, "max_dup_line_frac": 0.3}

    def setup(self) -> None:
        from dsforge.text.words import special_cases

        special_cases()  # spaCy's English exception table, loaded once per process

    def turn_stats(self, texts: pl.Series) -> pl.DataFrame:
        """Per text: words, n-grams, repeated n-gram occurrences (beyond the first), lines, repeated lines."""
        from dsforge.text import doc_stats

        n_docs, n = len(texts), self.ngram_size
        words = doc_stats.word_rows(texts)
        index = doc_stats.NgramIndex(words, n_docs)
        repeats = (
            index.repeated(n) if words.height else pl.DataFrame(schema={"doc": pl.Int64, "key": pl.UInt64})
        )
        per_doc = repeats.group_by("doc").agg(dup=pl.len() - pl.col("key").n_unique())
        dup = np.zeros(n_docs, dtype=np.int64)
        dup[per_doc.get_column("doc").to_numpy()] = per_doc.get_column("dup").to_numpy()
        lines = doc_stats.paragraph_and_line_duplicates(texts)
        return pl.DataFrame(
            {
                "n_words": index.doc_words,
                "n_grams": np.maximum(index.doc_words - n + 1, 0),
                "dup_grams": dup,
                "n_lines": lines.get_column("n_lines"),
                "dup_lines": lines.get_column("dup_lines"),
            }
        )

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        check_messages(self, batch, self.column)
        long = turn_rows(batch, self.column, self.roles)
        if long.height == 0:
            return pl.Series([None] * batch.height, dtype=pl.String)
        self.setup()
        stats = self.turn_stats(long.get_column("content"))
        judged = pl.col("n_words") >= self.min_words
        rules = []
        if self.max_dup_ngram_frac is not None:
            frac = pl.col("dup_grams") / pl.col("n_grams")
            rules.append((judged & (frac > self.max_dup_ngram_frac), f"repetition:{self.ngram_size}-grams"))
        if self.max_dup_line_frac is not None:
            frac = pl.col("dup_lines") / pl.col("n_lines")
            rules.append(
                (judged & (pl.col("n_lines") > 1) & (frac > self.max_dup_line_frac), "repetition:lines")
            )
        reasons = stats.with_columns(reason=first_reason(rules)).select("reason")
        return reasons_per_row(batch.height, pl.concat([long, reasons], how="horizontal"))


# --------------------------------------------------------------------------- template_placeholders
#: Markdown code (fenced, inline) is removed before looking: ``{name}`` there is code, not a slot.
CODE_SPANS = r"(?s)```.*?(?:```|\z)|`[^`\n]+`"
PLACEHOLDER_KINDS: dict[str, str] = {
    # {{name}}, {{ user.name }} (Jinja / Mustache / LLaMA-Factory's identity.json)
    "double_brace": r"\{\{\s*[\p{L}_][\w.\-]*\s*\}\}",
    # {name} (str.format); not LaTeX (\frac{a}{b}, x^{2}, a_{i}) nor ${shell}
    "single_brace": r"(?:^|[^\\\w{}$^_])\{[\p{L}_]\w*\}",
    # <YOUR_NAME>, <INSERT NAME>, <PLACEHOLDER>
    "angle": r"<(?:[A-Z][A-Z0-9]*[_ ])+[A-Z0-9]+>"
    r"|<(?:PLACEHOLDER|NAME|TODO|TBD|DATE|EMAIL|PHONE|ADDRESS|COMPANY|URL)>",
    # [INSERT NAME HERE], [insert date], [PLACEHOLDER]
    "insert": r"\[(?i:insert|placeholder)\b[^\]\n]{0,80}\]",
}


@register_step("template_placeholders")
class TemplatePlaceholders(Filter):
    """Drop conversations with unfilled template slots in any turn: ``{{name}}``, ``{name}``,
    ``<PLACEHOLDER>``, ``[INSERT ...]`` (reason ``placeholder``; the match is kept on dropped rows).

    Markdown code spans and blocks are skipped. ``kinds`` picks the built-in patterns; ``patterns``
    adds regexes (e.g. ``'\\[Your [^\\]]+\\]'`` for letter templates).
    """

    column: str = MESSAGES
    roles: list[str] | None = Field(None, description="default: every turn")
    kinds: list[Literal["double_brace", "single_brace", "angle", "insert"]] = Field(
        default_factory=lambda: list(PLACEHOLDER_KINDS)
    )
    patterns: list[str] = Field(default_factory=list)
    example = {"kinds": ["double_brace", "insert"]}

    @model_validator(mode="after")
    def _check(self) -> TemplatePlaceholders:
        if not (self.kinds or self.patterns):
            raise ValueError("give kinds or patterns")
        for pattern in self.patterns:
            check_regex(pattern, f"patterns: {pattern!r}")
        return self

    def regex(self) -> str:
        parts = [PLACEHOLDER_KINDS[k] for k in self.kinds] + list(self.patterns)
        return "|".join(f"(?:{p})" for p in parts)

    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        check_messages(self, batch, self.column)
        roles = self.roles
        turns = pl.col(self.column).list.eval(
            pl.element()
            .struct.field("content")
            .filter(pl.element().struct.field("role").is_in(roles) if roles else pl.lit(True))
        )
        text = turns.list.join("\n\n").fill_null("").str.replace_all(CODE_SPANS, " ")
        regex = self.regex()
        return batch.with_columns(
            __placeholder=text.str.contains(regex),
            __dropped__placeholder=text.str.extract(f"({regex})", 1).str.strip_chars(),
        )

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        return pl.when(pl.col("__placeholder")).then(pl.lit("placeholder"))

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        return super().process(batch).drop("__placeholder")


# --------------------------------------------------------------------------- truncated_response
#: Sentence-final punctuation in any script (. ! ? 。 ！ ？ । ؟ …), then closing quotes, brackets,
#: Markdown emphasis or a footnote/citation mark.
_CLOSERS = r"[\"'”’»›」』）)\]】》〉*_~`]*"
_COMPLETE_END = [
    r"[\p{Sentence_Terminal}…‥]" + _CLOSERS + r"$",
    r"```$",  # a closed code block (fences are checked to balance separately)
    r"[)\]}>;]$",  # code, JSON, a parenthetical or a citation
    r"[\p{So}\p{Sk}]$",  # emoji and symbols (✅, ©, ™)
    r"[\"”»」』]$",  # a quoted title or slogan
    r"(?:^|\s)[#@]\w+$",  # a hashtag or handle closing a social-media post
    r"=\s*[-+]?[\d.,]+\s*\S{0,3}$",  # the result of a worked equation (= 98.9°C)
    r"(?m)^[ \t]*\|.*\|$",  # a Markdown table row, as the last line (anchored to the end below)
]
_LIST_ITEM_LAST = r"(?m)^[ \t]*(?:[-*+•]|\d{1,3}[.)]|[a-zA-Z][.)])[ \t]+\S[^\n]*\z"


@register_step("truncated_response")
class TruncatedResponse(Filter):
    """Drop conversations whose last assistant turn was cut off.

    The rule, on the last assistant turn with trailing whitespace removed:

    * an unclosed Markdown code fence (an odd number of ``` fence lines) → ``truncated:open_code_fence``;
    * otherwise the turn is complete when it ends with sentence-final punctuation of any script
      (``. ! ? … 。 ！ ？ । ؟``, optionally followed by closing quotes/brackets/emphasis), a closed
      code fence, a closing bracket / ``;`` / ``>`` (code, JSON), an emoji or symbol, a Markdown
      table row, or — when ``allow_list_end`` — a list item as its last line (lists often have no
      final period), a quoted title, a closing hashtag, an equation's result; a last line of at most
      ``short_answer_words`` words also passes (bare answers "Positive", "42", signatures, a column
      of numbers) — set it to 0 to judge those too (a 10-character cut-off "Many famou" passes at 3);
    * anything else → ``truncated:unfinished_sentence`` (ends mid-word, on a comma, a colon…).

    Conversations without an assistant turn are kept.
    """

    column: str = MESSAGES
    allow_list_end: bool = True
    short_answer_words: int = Field(3, ge=0)
    example = {"allow_list_end": True, "short_answer_words": 3}

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        check_messages(self, batch, self.column)
        last = (
            pl.col(self.column)
            .list.eval(
                pl.element().struct.field("content").filter(pl.element().struct.field("role") == "assistant")
            )
            .list.last()
        )
        text = last.str.strip_chars_end().str.strip_chars_end("*_")  # Markdown emphasis closing the turn
        fences = text.str.count_matches(r"(?m)^[ \t]*```")
        complete = pl.any_horizontal(
            [text.str.contains(p + (r"\z" if p.startswith("(?m)") else "")) for p in _COMPLETE_END]
        )
        if self.allow_list_end:
            complete = complete | text.str.contains(_LIST_ITEM_LAST)
        if self.short_answer_words:
            last_line = text.str.extract(r"([^\n]*)\z", 1)
            complete = complete | (last_line.str.count_matches(r"\S+") <= self.short_answer_words)
        rules = [
            (fences % 2 == 1, "truncated:open_code_fence"),
            (text.is_not_null() & ~complete, "truncated:unfinished_sentence"),
        ]
        return batch.select(first_reason(rules)).to_series()
