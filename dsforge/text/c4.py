"""C4's line cleaning and page rules (Raffel et al. 2020), as datatrove's ``C4QualityFilter`` applies them.

Each line (``str.splitlines``) is stripped, then removed when it has a word over
``max_word_length`` characters, does not end in terminal punctuation (or ends in "..."), has
fewer than ``min_words_per_line`` words, mentions javascript, or a cookie/terms policy phrase;
Wikipedia-style citations are cut out first. A kept line saying "lorem ipsum" or holding a "{"
drops the whole page, and so does a page whose kept lines hold fewer than ``min_num_sentences``
sentences. Kept pages get their text rewritten to the kept lines.

All line rules run on one exploded (doc, line) table; sentences are only counted (spaCy's
sentencizer rules, :func:`dsforge.text.doc_stats.sentence_counts`) for pages with fewer kept lines
than the sentence minimum, since every kept line holds at least one sentence.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Filter, merge_drop_reason
from dsforge.text import doc_stats
from dsforge.text.gopher import texts_of
from dsforge.text.words import special_cases

CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)

#: line outcomes, in the order datatrove tests them; two of them drop the whole page
LINE_REMOVALS = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")
PAGE_DROPS = {"lorem_ipsum": "c4_lorem_ipsum", "curly_bracket": "c4_curly_bracket"}


@register_step("c4_quality")
class C4Quality(Filter):
    """Remove C4's bad lines (javascript, policy/cookie notices, no terminal punctuation, short
    lines, giant words), rewrite the text to the kept lines, and drop pages with "lorem ipsum",
    a curly bracket, or fewer than 5 sentences left (datatrove's defaults; -1 disables a count rule).

    Adds metrics ``c4_lines_kept`` and ``c4_lines_removed_<rule>`` over the pages it keeps.
    """

    column: str = "text"
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    example = {"column": "text"}

    def setup(self) -> None:
        special_cases()  # spaCy's English exception table, loaded once per process

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        result = self.clean(texts_of(self, batch, self.column))
        kept = result.get_column("reason").is_null()
        metrics = {
            f"{METRIC_PREFIX}c4_lines_{name}": pl.when(kept).then(result.get_column(name)).otherwise(0)
            for name in ("kept", *(f"removed_{r}" for r in LINE_REMOVALS))
        }
        out = batch.with_columns(
            pl.when(kept).then(result.get_column("text")).otherwise(pl.col(self.column)).alias(self.column),
            **{name: pl.lit(result.select(expr).to_series()) for name, expr in metrics.items()},
        )
        return merge_drop_reason(out, pl.lit(result.get_column("reason")))

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        return self.clean(texts_of(self, batch, self.column)).get_column("reason")

    # ------------------------------------------------------------------ the rules
    def line_outcomes(self, texts: pl.Series) -> pl.DataFrame:
        """(doc, line, outcome) for every line, outcome = "kept", a removal rule, or a page drop."""
        lines = doc_stats.explode_items(texts, doc_stats.py_splitlines(pl.col("text"))).with_row_index("row")
        stripped = doc_stats.py_strip(pl.col("item"))
        lines = lines.with_columns(item=stripped, n_words=stripped.str.count_matches(doc_stats.WS_RUN))
        too_long = self._too_long_word(lines)
        line = pl.col("item").str.replace_all(CITATION, "") if self.remove_citations else pl.col("item")
        lines = lines.with_columns(line=line)
        line, lower = pl.col("line"), pl.col("line").str.to_lowercase()
        rules: list[tuple[pl.Expr, str]] = [(pl.col("row").is_in(too_long.to_list()), "too_long_word")]
        if self.filter_no_terminal_punct:
            no_punct = ~line.str.contains(r"[.?!\"']$") | line.str.ends_with("...")
            rules.append((no_punct, "no_terminal_punct"))
        rules.append((pl.col("n_words") < self.min_words_per_line, "too_few_words"))
        if self.filter_lorem_ipsum:
            rules.append((lower.str.contains("lorem ipsum", literal=True), "lorem_ipsum"))
        if self.filter_javascript:
            rules.append((lower.str.contains("javascript", literal=True), "javascript"))
        if self.filter_curly_bracket:
            rules.append((line.str.contains("{", literal=True), "curly_bracket"))
        if self.filter_policy:
            rules.append((lower.str.contains("|".join(POLICY_PHRASES)), "policy"))
        outcome = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
        for condition, name in rules[1:]:
            outcome = outcome.when(condition).then(pl.lit(name))
        return lines.select("doc", "line", outcome=outcome.otherwise(pl.lit("kept")))

    def _too_long_word(self, lines: pl.DataFrame) -> pl.Series:
        """Rows of lines holding a whitespace-separated word longer than max_word_length."""
        if self.max_word_length == -1:
            return pl.Series("row", [], dtype=pl.UInt32)
        long_lines = lines.filter(pl.col("item").str.len_chars() > self.max_word_length)
        longest = (
            pl.col("item")
            .str.extract_all(doc_stats.WS_RUN)
            .list.eval(pl.element().str.len_chars())
            .list.max()
        )
        return long_lines.filter(longest > self.max_word_length).get_column("row")

    def clean(self, texts: pl.Series) -> pl.DataFrame:
        """Per text: drop reason (null = keep), cleaned text, and line counts per outcome."""
        n_docs = len(texts)
        outcomes = self.line_outcomes(texts)
        outcome, is_kept = pl.col("outcome"), pl.col("outcome") == "kept"
        per_page = outcomes.group_by("doc").agg(
            page_drop=outcome.filter(outcome.is_in(list(PAGE_DROPS))).first(),
            text=pl.col("line").filter(is_kept).str.join("\n"),
            kept=is_kept.sum(),
            sure_sentences=(is_kept & pl.col("line").str.contains(r"[^\s\x1c-\x1f]")).sum(),
            **{f"removed_{rule}": (outcome == rule).sum() for rule in LINE_REMOVALS},
        )
        counts = {name: 0 for name in ("kept", "sure_sentences", *(f"removed_{r}" for r in LINE_REMOVALS))}
        pages = doc_stats.per_doc(n_docs, per_page, {**counts, "text": ""})
        pages = pages.with_columns(text=doc_stats.py_strip(pl.col("text")))
        reason = pl.col("page_drop").replace_strict(PAGE_DROPS, default=None, return_dtype=pl.String)
        pages = pages.with_columns(reason=reason)
        if self.min_num_sentences > 0:
            pages = pages.with_columns(reason=pl.coalesce("reason", self._too_few_sentences(outcomes, pages)))
        return pages.drop("doc", "page_drop", "sure_sentences")

    def _too_few_sentences(self, outcomes: pl.DataFrame, pages: pl.DataFrame) -> pl.Series:
        """c4_too_few_sentences where a page's kept lines hold < min_num_sentences sentences."""
        unsure = pages.filter(
            pl.col("reason").is_null() & (pl.col("sure_sentences") < self.min_num_sentences)
        ).get_column("doc")
        reasons = np.full(pages.height, None, dtype=object)
        if len(unsure):
            unsure_kept = (pl.col("outcome") == "kept") & pl.col("doc").is_in(unsure.to_list())
            kept_lines = outcomes.filter(unsure_kept)
            sentences = doc_stats.sentence_counts(kept_lines.get_column("line"))
            totals = (
                kept_lines.select("doc", sentences=sentences).group_by("doc").agg(pl.col("sentences").sum())
            )
            totals = (
                doc_stats.per_doc(pages.height, totals, {"sentences": 0}).get_column("sentences").to_numpy()
            )
            too_few = np.zeros(pages.height, dtype=bool)
            too_few[unsure.to_numpy()] = True
            reasons[too_few & (totals < self.min_num_sentences)] = "c4_too_few_sentences"
        return pl.Series("reason", reasons.tolist(), dtype=pl.String)
