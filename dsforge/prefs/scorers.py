"""Rule-based completion scorers for ``make_pairs``: cheap, deterministic, and honest about their bias.

They exist for data with no ratings at all (and for tests); neither measures quality:

* ``length``: the answer's length in characters. Prefers longer answers by construction, which is
  the very bias DPO data should avoid; pair it with ``balance_longer_share``/``max_length_ratio``.
* ``refusal``: 0 when the answer matches the built-in refusal phrase pack
  (dsforge/resources/phrases/refusal.txt, shared with ``phrase_filter``), else 1: prefers
  answering over refusing, and ties between two answers of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import polars as pl


@cache
def _refusal_regex() -> str:
    from dsforge.chat.filters import combined_regex, pack_path, read_phrases

    return combined_regex(read_phrases(pack_path("refusal").read_text(encoding="utf-8")))


def length_score(text: pl.Expr) -> pl.Expr:
    return text.str.len_chars().cast(pl.Float64)


def refusal_score(text: pl.Expr) -> pl.Expr:
    return pl.when(text.str.contains(_refusal_regex())).then(0.0).otherwise(1.0).cast(pl.Float64)


#: name → function of the answer text giving a Float64 score (higher is better).
SCORERS: dict[str, Callable[[pl.Expr], pl.Expr]] = {"length": length_score, "refusal": refusal_score}
