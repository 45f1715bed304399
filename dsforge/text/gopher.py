"""Gopher's web-text rules (Rae et al. 2021, table A1) as two filters, decided like datatrove's.

``gopher_quality`` looks at words, symbols and line shapes; ``gopher_repetition`` at repeated
paragraphs, lines and word n-grams. Statistics come from :mod:`dsforge.text.doc_stats`, once
per batch; each rule is then one comparison, and the first failing rule (in datatrove's order)
names the drop reason.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import polars as pl
from pydantic import Field

from dsforge.registry import register_step
from dsforge.steps.base import Filter
from dsforge.steps.columns import require_columns
from dsforge.text import doc_stats
from dsforge.text.words import special_cases

NgramSize = Annotated[int, Field(ge=1)]
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


def first_reason(rules: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """The name of the first rule whose condition holds (a null condition does not), else null."""
    if not rules:
        return pl.lit(None, dtype=pl.String)
    chain = pl.when(rules[0][0].fill_null(False)).then(pl.lit(rules[0][1]))
    for condition, name in rules[1:]:
        chain = chain.when(condition.fill_null(False)).then(pl.lit(name))
    return chain.otherwise(pl.lit(None, dtype=pl.String))


def ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator, null when the denominator is 0 (such rules then never fire)."""
    return pl.when(denominator > 0).then(numerator / denominator)


def texts_of(step: Filter, batch: pl.DataFrame, column: str) -> pl.Series:
    require_columns(step, batch, [column])
    return batch.get_column(column).cast(pl.String).fill_null("")


@register_step("gopher_quality")
class GopherQuality(Filter):
    """Drop documents failing Gopher's quality rules: word count, mean word length, '#'/ellipsis
    per word, bullet and ellipsis lines, words with a letter, stop words (datatrove's defaults).

    A threshold set to null (or 0) disables its rule, as in datatrove.
    """

    column: str = "text"
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS))
    example = {"column": "text"}

    def setup(self) -> None:
        special_cases()  # spaCy's English exception table, loaded once per process

    def statistics(self, texts: pl.Series) -> pl.DataFrame:
        """One row per text: the counts every rule compares."""
        words = doc_stats.word_rows(texts)
        word_stats = doc_stats.gopher_word_stats(words, len(texts), self.stop_words)
        return pl.concat([word_stats, doc_stats.gopher_line_stats(texts)], how="horizontal")

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        stats = self.statistics(texts_of(self, batch, self.column))
        return stats.select(reason=self.decide()).get_column("reason")

    def decide(self) -> pl.Expr:
        """The first failing rule's reason, from the columns of :meth:`statistics`."""
        c = pl.col
        content, words, lines = c("n_non_symbol"), c("n_words"), c("n_lines")
        mean_length = ratio(c("non_symbol_chars"), content)
        # (threshold, rule failing for it, reason) in datatrove's order; a falsy threshold disables
        checks = [
            (self.min_doc_words, lambda t: content < t, "gopher_short_doc"),
            (self.max_doc_words, lambda t: content > t, "gopher_long_doc"),
            (self.min_avg_word_length, lambda t: mean_length < t, "gopher_below_avg_threshold"),
            (self.max_avg_word_length, lambda t: mean_length > t, "gopher_above_avg_threshold"),
            (self.max_symbol_word_ratio, lambda t: ratio(c("hashes"), words) > t, "gopher_too_many_hashes"),
            (
                self.max_symbol_word_ratio,
                lambda t: ratio(c("ellipses"), words) > t,
                "gopher_too_many_ellipsis",
            ),
            (
                self.max_bullet_lines_ratio,
                lambda t: ratio(c("bullet_lines"), lines) > t,
                "gopher_too_many_bullets",
            ),
            (
                self.max_ellipsis_lines_ratio,
                lambda t: ratio(c("ellipsis_lines"), lines) > t,
                "gopher_too_many_end_ellipsis",
            ),
            (
                self.max_non_alpha_words_ratio,
                lambda t: ratio(c("n_alpha"), words) < t,
                "gopher_below_alpha_threshold",
            ),
            (self.min_stop_words, lambda t: c("n_stop_words") < t, "gopher_enough_stop_words"),
        ]
        return first_reason([(fails(t), name) for t, fails, name in checks if t])


@register_step("gopher_repetition")
class GopherRepetition(Filter):
    """Drop documents that repeat themselves: duplicated paragraphs and lines (count and character
    fractions), the most frequent 2/3/4-gram's character share, characters in repeated 5..10-grams.

    ``top_n_grams`` / ``dup_n_grams`` are [n, max fraction] pairs; datatrove's defaults.
    """

    column: str = "text"
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[NgramSize, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[NgramSize, float]] = [
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    ]
    example = {"column": "text"}

    def setup(self) -> None:
        special_cases()  # spaCy's English exception table, loaded once per process

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        texts = texts_of(self, batch, self.column)
        stats = doc_stats.paragraph_and_line_duplicates(texts)
        c = pl.col
        chars = c("text_chars")
        checks = [
            (
                self.dup_para_frac,
                lambda t: ratio(c("dup_paragraphs"), c("n_paragraphs")) > t,
                "gopher_dup_para_frac",
            ),
            (
                self.dup_para_char_frac,
                lambda t: ratio(c("dup_paragraph_chars"), chars) > t,
                "gopher_dup_para_char_frac",
            ),
            (self.dup_line_frac, lambda t: ratio(c("dup_lines"), c("n_lines")) > t, "gopher_dup_line_frac"),
            (
                self.dup_line_char_frac,
                lambda t: ratio(c("dup_line_chars"), chars) > t,
                "gopher_dup_line_char_frac",
            ),
        ]
        rules = [(chars == 0, "gopher_empty")] + [(fails(t), name) for t, fails, name in checks if t]
        reason = stats.select(first_reason(rules)).to_series()
        n_grams = [n for n, _ in self.top_n_grams] + [n for n, _ in self.dup_n_grams]
        if not n_grams or reason.is_not_null().all():
            return reason
        # word n-grams only for the documents the cheap rules kept
        open_docs = np.flatnonzero(reason.is_null().to_numpy())
        words = doc_stats.word_rows(texts.gather(open_docs))
        index = doc_stats.NgramIndex(words, len(open_docs))
        text_chars = stats.get_column("text_chars").gather(open_docs).to_numpy()
        decided = np.full(len(open_docs), None, dtype=object)
        for n, fraction in self.top_n_grams:
            top = doc_stats.top_ngram_chars(index, n)  # NaN where the doc has < n words
            with np.errstate(invalid="ignore"):
                fails = (top / text_chars > fraction) & (decided == None)  # noqa: E711
            decided[fails] = f"gopher_top_{n}_gram"
        for n, fraction in self.dup_n_grams:
            still_open = np.flatnonzero(decided == None)  # noqa: E711
            repeated = doc_stats.duplicated_ngram_chars(index, n, still_open)
            fails = repeated / text_chars[still_open] > fraction
            decided[still_open[fails]] = f"gopher_duplicated_{n}_n_grams"
        values = reason.to_list()
        for slot, doc in enumerate(open_docs):
            values[doc] = decided[slot]
        return pl.Series("reason", values, dtype=pl.String)
