"""FineWeb's extra web-text rules (Penedo et al. 2024), decided like datatrove's ``FineWebQualityFilter``.

Over the non-blank lines of a page (split on "\\n"): too few ending in terminal punctuation, too
many short lines, too many characters in repeated lines, or too many newlines per word.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dsforge.registry import register_step
from dsforge.steps.base import Filter
from dsforge.text import doc_stats
from dsforge.text.gopher import first_reason, ratio, texts_of
from dsforge.text.words import special_cases


@register_step("fineweb_quality")
class FineWebQuality(Filter):
    """Drop pages whose lines rarely end a sentence (< 12 %), are mostly short (> 67 % ≤ 30 chars),
    repeat each other (> 1 % of characters) or are a list (> 0.3 newlines per word).

    ``stop_chars`` defaults to datatrove's terminal punctuation (every script's sentence enders).
    """

    column: str = "text"
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: list[str] | None = None
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    example = {"column": "text"}

    def setup(self) -> None:
        special_cases()  # spaCy's English exception table, loaded once per process

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        texts = texts_of(self, batch, self.column)
        n_docs = len(texts)
        lines = doc_stats.fineweb_line_stats(texts, self.stop_chars)
        per_line = lines.group_by("doc").agg(
            n_lines=pl.len(),
            ends=pl.col("ends").sum(),
            short=(pl.col("chars") <= self.short_line_length).sum(),
        )
        stats = doc_stats.per_doc(n_docs, per_line, {"n_lines": 0, "ends": 0, "short": 0})
        duplicates = doc_stats.duplicate_stats(lines.select("doc", "item"), n_docs)
        text = pl.col("text")
        shape = pl.DataFrame({"text": texts}).select(
            newlines=text.str.count_matches("\n", literal=True),
            chunks=text.str.count_matches(doc_stats.WS_RUN),
            chars=text.str.len_chars(),
        )
        stats = pl.concat([stats, duplicates.select("dup_chars"), shape], how="horizontal")

        c = pl.col
        punct_ratio = ratio(c("ends"), c("n_lines"))
        too_few_ends = punct_ratio < self.line_punct_thr
        if self.line_punct_exclude_zero:
            too_few_ends = too_few_ends & (punct_ratio != 0)
        rules = [
            (c("n_lines") == 0, "fineweb_empty"),
            (too_few_ends, "fineweb_line_punct_ratio"),
            (ratio(c("short"), c("n_lines")) > self.short_line_thr, "fineweb_short_line_ratio"),
            (
                ratio(c("dup_chars"), c("chars") - c("newlines")) > self.char_duplicates_ratio,
                "fineweb_char_dup_ratio",
            ),
        ]
        reason = stats.select(first_reason(rules)).to_series()

        # newlines per word: every whitespace-separated chunk holds at least one word, so only pages
        # with more than new_line_ratio newlines per chunk can fail; only those are split into words
        maybe_list = stats.select(
            reason.is_null() & (c("newlines") > self.new_line_ratio * c("chunks"))
        ).to_series()
        candidates = np.flatnonzero(maybe_list.to_numpy())
        if not len(candidates):
            return reason
        words = doc_stats.word_rows(texts.gather(candidates)).group_by("doc").agg(n_words=pl.len())
        n_words = doc_stats.per_doc(len(candidates), words, {"n_words": 0}).get_column("n_words").to_numpy()
        newlines = stats.get_column("newlines").gather(candidates).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            lists = candidates[newlines / n_words > self.new_line_ratio]
        values = reason.to_list()
        for doc in lists:
            values[doc] = "fineweb_list_ratio"
        return pl.Series("reason", values, dtype=pl.String)
