"""Pair policies: which two completions of a prompt become (chosen, rejected), decided with polars.

Input: the usable completions, one row each: ``_g`` (prompt key), ``_row``/``_pos`` (where the
completion is in the stream), ``model``, ``score``, ``_len`` (characters), ``_th`` (text hash),
``_role`` and ``_u`` (a seeded uniform draw, for the random picks). Output: one row per
candidate pair with ``c_*``/``r_*`` columns (row, pos, model, score, len, th) and ``margin``.

* ``best_vs_worst``: the highest against the lowest score of the prompt;
* ``best_vs_random``: the highest against one other completion drawn at random (the
  UltraFeedback binarization of the Zephyr/alignment-handbook recipe; a draw that ties is dropped,
  not redrawn);
* ``all_pairs_above_margin``: every two completions, the better one chosen, kept when the margin
  reaches ``min_margin`` (n·(n-1)/2 candidates per prompt);
* ``by_role``: a completion of the ``chosen_role`` model group against one of the
  ``rejected_role`` group: with scores, that group's best against the other's worst; without,
  one of each drawn at random.

Ties between equal scores are broken by stream order (the first completion wins), so a policy
gives the same pairs for the same input and seed. The policies only pick; :func:`check_pairs`
then drops picks that are bad pairs, each with its reason.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SIDE = ("_row", "_pos", "model", "score", "_len", "_th")
POLICIES = ("best_vs_worst", "best_vs_random", "all_pairs_above_margin", "by_role")


def _side(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    return frame.select("_g", *[pl.col(c).alias(prefix + c.lstrip("_")) for c in SIDE])


def _first(frame: pl.DataFrame, by: str, descending: bool) -> pl.DataFrame:
    """Per prompt, the row with the highest (or lowest) ``by``; stream order breaks ties."""
    ordered = frame.sort(
        ["_g", by, "_row", "_pos"], descending=[False, descending, False, False], nulls_last=True
    )
    return ordered.group_by("_g", maintain_order=True).first()


def _pair(chosen: pl.DataFrame, rejected: pl.DataFrame) -> pl.DataFrame:
    pairs = _side(chosen, "c_").join(_side(rejected, "r_"), on="_g", how="inner")
    return pairs.with_columns((pl.col("c_score") - pl.col("r_score")).alias("margin"))


def _best_and_others(usable: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The best completion per prompt, and the prompt's other completions (never the best itself)."""
    best = _first(usable, "score", True)
    return best, usable.join(best.select("_g", "_row", "_pos"), on=["_g", "_row", "_pos"], how="anti")


def best_vs_worst(usable: pl.DataFrame) -> pl.DataFrame:
    best, others = _best_and_others(usable)
    return _pair(best, _first(others, "score", False))


def best_vs_random(usable: pl.DataFrame) -> pl.DataFrame:
    best, others = _best_and_others(usable)
    return _pair(best, _first(others, "_u", False))


def all_pairs(usable: pl.DataFrame) -> pl.DataFrame:
    left, right = _side(usable, "a_"), _side(usable, "b_")
    joined = left.join(right, on="_g", how="inner").filter(
        (pl.col("a_row") < pl.col("b_row"))
        | ((pl.col("a_row") == pl.col("b_row")) & (pl.col("a_pos") < pl.col("b_pos")))
    )
    swap = pl.col("b_score") > pl.col("a_score")
    fields = [c.lstrip("_") for c in SIDE]
    return joined.select(
        "_g",
        *[pl.when(swap).then(pl.col(f"b_{f}")).otherwise(pl.col(f"a_{f}")).alias(f"c_{f}") for f in fields],
        *[pl.when(swap).then(pl.col(f"a_{f}")).otherwise(pl.col(f"b_{f}")).alias(f"r_{f}") for f in fields],
    ).with_columns((pl.col("c_score") - pl.col("r_score")).alias("margin"))


def by_role(usable: pl.DataFrame, chosen_role: str, rejected_role: str, scored: bool) -> pl.DataFrame:
    chosen = usable.filter(pl.col("_role") == chosen_role)
    rejected = usable.filter(pl.col("_role") == rejected_role)
    if scored:
        return _pair(_first(chosen, "score", True), _first(rejected, "score", False))
    return _pair(_first(chosen, "_u", False), _first(rejected, "_u", False))


def check_pairs(pairs: pl.DataFrame, min_margin: float, max_length_ratio: float | None) -> pl.DataFrame:
    """Add ``_reason``: why a picked pair is not kept (first that applies), null when it is.

    ``identical_answers`` (same text), ``tie`` (equal scores), ``inverted_scores`` (by_role: the
    chosen group's answer scored lower), ``below_margin``, ``length_ratio`` (chosen longer than
    ``max_length_ratio`` times rejected, in characters)."""
    margin = pl.col("margin")
    rules = [
        (pl.col("c_th") == pl.col("r_th"), "identical_answers"),
        (margin == 0, "tie"),
        (margin < 0, "inverted_scores"),
        (margin < min_margin, "below_margin"),
    ]
    if max_length_ratio is not None:
        ratio = pl.col("c_len").cast(pl.Float64) / pl.col("r_len").cast(pl.Float64)
        rules.append((ratio > max_length_ratio, "length_ratio"))
    reason = pl.lit(None, dtype=pl.String)
    for condition, name in reversed(rules):
        reason = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    return pairs.with_columns(reason.alias("_reason"))


def balance_longer(pairs: pl.DataFrame, share: float, rng: np.random.Generator) -> pl.DataFrame:
    """Drop (``length_balance``) random kept pairs whose chosen answer is the longer, until it is the
    longer in at most ``share`` of the kept pairs; pairs of equal length count as not longer.

    With L longer pairs out of N, dropping k of them leaves (L-k)/(N-k) <= share, so
    k = ceil((L - share·N) / (1 - share)) (all L when share is 0)."""
    kept = pl.col("_reason").is_null()
    longer = kept & (pl.col("c_len") > pl.col("r_len"))
    n_kept = int(pairs.select(kept.sum()).item())
    n_longer = int(pairs.select(longer.sum()).item())
    if n_kept == 0 or n_longer <= share * n_kept:
        return pairs
    excess = n_longer - share * n_kept
    k = n_longer if share >= 1 or share <= 0 else min(n_longer, math.ceil(excess / (1 - share) - 1e-9))
    positions = pairs.with_row_index("_i").filter(longer).get_column("_i").to_numpy()
    chosen = np.sort(rng.choice(positions, size=k, replace=False))
    mask = np.zeros(pairs.height, dtype=bool)
    mask[chosen] = True
    return pairs.with_columns(
        pl.when(pl.Series(mask)).then(pl.lit("length_balance")).otherwise(pl.col("_reason")).alias("_reason")
    )
