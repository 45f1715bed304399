"""Pairwise judgment files → one score per (prompt, model), for ``make_pairs``.

A judgment says which of two models answered a prompt better. ``make_pairs`` needs a score per
completion, so judgments are turned into each model's *average share of wins* on that prompt
(win 1, tie 0.5, loss 0; "slightly better" 0.75/0.25). This is a plain average, not a
Bradley-Terry fit: it is only comparable across models that met the same opponents, which is
why each format says who those are:

* ``alpaca_eval`` (AlpacaEval annotations: ``instruction``, ``generator_1`` = the fixed baseline,
  ``generator_2``, ``preference`` in [1, 2], >1.5 = output_2 better): every model met only the
  baseline, so a model's score is ``preference - 1`` (its probability of beating the baseline:
  AlpacaEval's own per-instruction win rate) and the baseline itself scores 0.5 (a tie with
  itself). All scores are then on one scale.
* ``tulu`` (Tulu-1 human eval: ``prompt``, ``model_a``, ``model_b``, ``preference`` =
  a-is-better / a-is-slightly-better / tie / b-is-slightly-better / b-is-better): average share.
* ``generic``: ``prompt``, ``model_a``, ``model_b``, ``winner`` = a / b / tie (names mappable
  with ``fields``).

Judgments are keyed by the prompt text (stripped, hashed like ``make_pairs`` hashes its prompts) or
by ``key`` columns matching ``make_pairs``' ``key``. Judgments whose preference is missing or
not understood are ignored and counted (``judgments_unparseable`` in the step's metrics). The
file is read whole: judgment files are small next to the completions they rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from dsforge.steps.hashing import SEPARATOR, stable_hash
from dsforge.types import InputPath

JudgmentFormat = Literal["alpaca_eval", "tulu", "generic"]
#: Canonical field names per format (what ``fields`` may rename).
DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    "alpaca_eval": {
        "prompt": "instruction",
        "model_a": "generator_1",
        "model_b": "generator_2",
        "preference": "preference",
    },
    "tulu": {"prompt": "prompt", "model_a": "model_a", "model_b": "model_b", "preference": "preference"},
    "generic": {"prompt": "prompt", "model_a": "model_a", "model_b": "model_b", "preference": "winner"},
}
#: Share of the win going to model_a, per label (tulu and generic).
LABEL_SHARE = {
    "a-is-better": 1.0,
    "a-is-slightly-better": 0.75,
    "tie": 0.5,
    "equal": 0.5,
    "b-is-slightly-better": 0.25,
    "b-is-better": 0.0,
    "a": 1.0,
    "b": 0.0,
}


class JudgmentSpec(BaseModel):
    """``judgments:`` of ``make_pairs``: where the pairwise judgments are and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: InputPath
    format: JudgmentFormat = "alpaca_eval"
    fields: dict[str, str] = Field(
        default_factory=dict, description="prompt/model_a/model_b/preference → column"
    )
    key: list[str] | None = Field(None, description="columns matching make_pairs' key (else the prompt text)")


def key_hash(columns: list[pl.Expr]) -> pl.Expr:
    """The group key of ``make_pairs``: xxh3 of the key values as text, joined by the separator."""
    texts = [c.cast(pl.String).fill_null("") for c in columns]
    return stable_hash(texts[0] if len(texts) == 1 else pl.concat_str(texts, separator=SEPARATOR))


def prompt_hash(text: pl.Expr) -> pl.Expr:
    return stable_hash(text.fill_null("").str.strip_chars())


def read_table(path: str) -> pl.DataFrame:
    from dsforge.io.readers import read_file

    batches = read_file(Path(path), "auto", 100_000, text_mode="line", text_field="text", split="train")
    frames = [b.frame for b in batches if b.frame.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def model_scores(spec: JudgmentSpec, where: str) -> tuple[pl.DataFrame, int]:
    """Scores as (``_jk`` u64 prompt key, ``model``, ``score``), and how many judgments were unusable."""
    from dsforge.errors import DsforgeError

    table = read_table(spec.path)
    names = {**DEFAULT_FIELDS[spec.format], **spec.fields}
    needed = [names[f] for f in ("model_a", "model_b", "preference")] + (spec.key or [names["prompt"]])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DsforgeError(
            f"{where}: judgments {spec.path} have no column {missing[0]!r} "
            f"(columns: {', '.join(table.columns)})"
        )
    key = key_hash([pl.col(c) for c in spec.key]) if spec.key else prompt_hash(pl.col(names["prompt"]))
    raw = pl.col(names["preference"])
    if spec.format == "alpaca_eval":
        value = raw.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        share_a = pl.when(value.is_between(1.0, 2.0)).then(2.0 - value)
    else:
        label = raw.cast(pl.String).str.strip_chars().str.to_lowercase()
        share_a = label.replace_strict(LABEL_SHARE, default=None, return_dtype=pl.Float64)
    judged = table.select(
        key.alias("_jk"),
        pl.col(names["model_a"]).cast(pl.String).alias("a"),
        pl.col(names["model_b"]).cast(pl.String).alias("b"),
        share_a.alias("share_a"),
    )
    usable = judged.filter(
        pl.col("share_a").is_not_null() & pl.col("a").is_not_null() & pl.col("b").is_not_null()
    )
    side_b = usable.select("_jk", pl.col("b").alias("model"), (1.0 - pl.col("share_a")).alias("score"))
    if spec.format == "alpaca_eval":  # the baseline met itself only: a tie, 0.5, keeps one scale
        side_a = usable.select("_jk", pl.col("a").alias("model"), pl.lit(0.5).alias("score"))
    else:
        side_a = usable.select("_jk", pl.col("a").alias("model"), pl.col("share_a").alias("score"))
    scores = (
        pl.concat([side_a, side_b]).group_by("_jk", "model").agg(pl.col("score").mean()).sort("_jk", "model")
    )
    return scores, judged.height - usable.height
