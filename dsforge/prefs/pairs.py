"""``make_pairs``: several scored completions per prompt → preference pairs, grouped across the stream.

Inputs, one completion per row (``completion: output``) or a list per row (UltraFeedback style,
``completion: completions``, with ``model``/``score`` lists beside it). Field names are paths:
``choices[0].turns[0].content`` reads into structs and lists; on a list of structs a field name
maps over the list (``completions.response``). The prompt is ``prompt`` (text or a conversation
ending on a user turn) or, when the rows only carry an id, ``prompts_file`` joined on ``key``
(Arena-Hard answers + questions). Completions are grouped by ``key`` or by the prompt text.

Scores come from one of: a ``score`` column (numbers or numeric strings), a pairwise
``judgments`` file (:mod:`dsforge.prefs.judgments`), a rule ``scorer``
(:mod:`dsforge.prefs.scorers`); ``by_role`` needs none. Policies: :mod:`dsforge.prefs.policies`.

Every drop is counted, in its own unit: completions (``empty_answer``, ``missing_score``,
``unparseable_score``, ``unlisted_model`` for by_role), rows (``no_completions``), prompts
(``single_completion``: fewer than 2 usable completions; ``missing_role``), picked pairs
(``identical_answers``, ``tie``, ``inverted_scores``, ``below_margin``, ``length_ratio``,
``length_balance``) and finished pairs that break the canonical record (``prompt_*`` …).
Metrics: ``margin_bin_<lo>_to_<hi>`` and ``length_diff_bin_<lo>_to_<hi>`` (chosen - rejected
characters) count kept pairs per bin; ``chosen_longer``, ``completions``, ``prompts``.

Memory: pass 1 reads the key, model, score and text columns batch by batch and keeps about 60
bytes per completion (hashes, lengths, score, model name) — never the texts; pairs are decided on
that with polars. Pass 2 reads the stream again, keeps only completions that are in a pair
(text + prompt) and scatters them to disk buckets by prompt key, so assembling holds one bucket
(whole prompt groups, ``bucket_size``) at a time. ``prompts_file`` and ``judgments`` are read whole.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from dsforge.chat.formats.turns import single_turn
from dsforge.chat.schema import MESSAGES_DTYPE
from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.prefs import policies
from dsforge.prefs.adapters import (
    Style,
    answer_turn,
    canonical_schema,
    pair_drop_reason,
    parse_score,
    to_implicit,
)
from dsforge.prefs.judgments import JudgmentSpec, key_hash, model_scores, prompt_hash, read_table
from dsforge.prefs.scorers import SCORERS
from dsforge.registry import register_step
from dsforge.steps.base import DROP_COLUMN, DROPPED_ONLY_PREFIX, METRIC_PREFIX, GlobalStep, merge_drop_reason
from dsforge.steps.hashing import SEPARATOR, is_conversation, stable_hash
from dsforge.types import InputPath

_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")


def field_expr(path: str, schema: pl.Schema, where: str) -> tuple[pl.Expr, pl.DataType]:
    """A dotted path with list indices (``choices[0].turns[0].content``) → expression and dtype."""
    expr: pl.Expr | None = None
    dtype: pl.DataType | None = None
    for number, part in enumerate(path.split(".")):
        match = _SEGMENT.match(part)
        if match is None:
            raise DsforgeError(f"{where}: cannot read field path {path!r} at {part!r}")
        name, indices = match.group(1), [int(i) for i in re.findall(r"\d+", match.group(2))]
        if number == 0:
            if name not in schema:
                raise DsforgeError(f"{where}: no column {name!r} (columns here: {', '.join(schema)})")
            expr, dtype = pl.col(name), schema[name]
        elif isinstance(dtype, pl.Struct):
            fields = dict(dtype.to_schema())
            if name not in fields:
                raise DsforgeError(f"{where}: {path!r}: no field {name!r} (fields: {', '.join(fields)})")
            expr, dtype = expr.struct.field(name), fields[name]
        elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            fields = dict(dtype.inner.to_schema())
            if name not in fields:
                raise DsforgeError(f"{where}: {path!r}: no field {name!r} (fields: {', '.join(fields)})")
            expr, dtype = expr.list.eval(pl.element().struct.field(name)), pl.List(fields[name])
        else:
            raise DsforgeError(f"{where}: {path!r}: {part!r} is inside a {dtype}, not a struct")
        for index in indices:
            if not isinstance(dtype, pl.List):
                raise DsforgeError(f"{where}: {path!r}: [{index}] on a {dtype}, not a list")
            expr, dtype = expr.list.get(index, null_on_oob=True), dtype.inner
    return expr, dtype


def glob_regex(patterns: list[str]) -> str:
    """Model-name globs (``*``, ``?``) as one anchored regex."""
    parts = [
        "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in p) for p in patterns
    ]
    return "^(?:" + "|".join(parts) + ")$"


def _bins(edges: list[float], value: pl.Expr, name: str, below: bool = True) -> list[pl.Expr]:
    """One 0/1 metric column per bin of ``value`` (``below``: a bin under the first edge too)."""
    bounds = [-math.inf, *edges, math.inf] if below else [*edges, math.inf]
    exprs = []
    for lo, hi in itertools.pairwise(bounds):
        label = f"{METRIC_PREFIX}{name}_{lo:g}_to_{hi:g}"
        exprs.append(((value >= lo) & (value < hi)).fill_null(False).cast(pl.Int64).alias(label))
    return exprs


@register_step("make_pairs")
class MakePairs(GlobalStep):
    """Group completions by prompt across the whole stream and turn them into preference pairs."""

    prompt: str = Field("prompt", description="prompt field (text or conversation); unused with prompts_file")
    completion: str = Field("completion", description="answer text, or a list of answers per row")
    model: str | None = Field("model", description="generator name (or list); null to ignore")
    score: str | None = Field(None, description="score field (numbers or numeric strings; list with lists)")
    scorer: Literal["length", "refusal"] | None = Field(
        None, description="rule-based score of the answer text"
    )
    judgments: JudgmentSpec | None = Field(None, description="pairwise judgments → per-model scores")
    key: list[str] | None = Field(None, description="fields identifying the prompt (default: its text)")
    prompts_file: InputPath | None = Field(None, description="file of prompts joined on key")
    prompts_key: str | None = Field(None, description="prompts_file: its key field (default: key[0])")
    prompts_field: str = Field("prompt", description="prompts_file: the prompt field (text or conversation)")
    policy: Literal["best_vs_worst", "best_vs_random", "all_pairs_above_margin", "by_role"] = "best_vs_worst"
    min_margin: float = Field(0.0, ge=0)
    roles: dict[str, list[str]] = Field(default_factory=dict, description="group → model names/globs")
    chosen_role: str = "instruct"
    rejected_role: str = "base"
    max_length_ratio: float | None = Field(
        None, gt=0, description="drop pairs with chosen/rejected length above"
    )
    balance_longer_share: float | None = Field(
        None, ge=0, le=1, description="max share of chosen-longer pairs"
    )
    style: Style = "explicit"
    margin_bins: list[float] = Field(default_factory=lambda: [0, 0.1, 0.25, 0.5, 1, 2, 5])
    length_bins: list[float] = Field(default_factory=lambda: [-1000, -300, -100, 0, 100, 300, 1000])
    bucket_size: int | str = "256MB"
    batch_rows: int = Field(2000, ge=1)
    example = {
        "completion": "output",
        "prompt": "instruction",
        "model": "generator",
        "score": "rating",
        "policy": "best_vs_random",
        "min_margin": 1.0,
        "balance_longer_share": 0.5,
    }

    @model_validator(mode="after")
    def _consistent(self) -> MakePairs:
        sources = [s for s in (self.score, self.scorer, self.judgments) if s is not None]
        if len(sources) > 1:
            raise ValueError("give one of score, scorer, judgments")
        if not sources and self.policy != "by_role":
            raise ValueError(f"policy {self.policy} needs scores: give score, scorer or judgments")
        if self.policy == "by_role":
            missing = [r for r in (self.chosen_role, self.rejected_role) if not self.roles.get(r)]
            if missing:
                raise ValueError(f"policy by_role: roles has no models for {missing[0]!r}")
        if self.prompts_file is not None and (not self.key or len(self.key) != 1):
            raise ValueError("prompts_file needs key: [<one field>] to join on")
        if (
            self.judgments is not None
            and self.judgments.key
            and len(self.judgments.key) != len(self.key or [])
        ):
            raise ValueError("judgments.key needs key with as many fields, matched in order")
        if self.judgments is not None and self.model is None:
            raise ValueError("judgments score models: give model")
        return self

    @property
    def where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    @property
    def scored(self) -> bool:
        return any(s is not None for s in (self.score, self.scorer, self.judgments))

    # ------------------------------------------------------------------ reading completions
    def _prompts(self) -> pl.DataFrame | None:
        if self.prompts_file is None:
            return None
        table = read_table(self.prompts_file)
        key, _ = field_expr(self.prompts_key or self.key[0], table.schema, f"{self.where}: prompts_file")
        text, dtype = field_expr(self.prompts_field, table.schema, f"{self.where}: prompts_file")
        frame = table.select(
            key.cast(pl.String).alias("_pk"), self._conversation(text, dtype).alias("_prompt")
        )
        return frame.unique("_pk", keep="first", maintain_order=True)

    def _conversation(self, expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
        if dtype in (pl.String, pl.Null):
            return single_turn("user", expr.cast(pl.String))
        if is_conversation(dtype):
            return expr.list.eval(
                pl.struct(
                    role=pl.element().struct.field("role").cast(pl.String),
                    content=pl.element().struct.field("content").cast(pl.String),
                )
            ).cast(MESSAGES_DTYPE)
        raise DsforgeError(
            f"{self.where}: the prompt is {dtype}: neither text nor a list of {{role, content}}"
        )

    def _completions(self, batch: pl.DataFrame, offset: int, prompts: pl.DataFrame | None) -> pl.DataFrame:
        """One row per completion: keys, position, model, raw score, text, prompt (and source)."""
        schema = batch.schema
        text, text_dtype = field_expr(self.completion, schema, self.where)
        lists = isinstance(text_dtype, pl.List)
        if (text_dtype.inner if lists else text_dtype) not in (pl.String, pl.Null):
            raise DsforgeError(f"{self.where}: completion {self.completion!r} is {text_dtype}, not text")
        columns = [
            pl.int_range(offset, offset + batch.height, dtype=pl.Int64).alias("_row"),
            text.alias("_text"),
        ]
        listed = []
        for name, path in (("model", self.model), ("_score_raw", self.score)):
            if path is None:
                columns.append(pl.lit(None, dtype=pl.String).alias(name))
                continue
            expr, dtype = field_expr(path, schema, self.where)
            columns.append(expr.alias(name))
            if lists and isinstance(dtype, pl.List):
                listed.append(name)
        if self.key:
            columns.append(key_hash([field_expr(k, schema, self.where)[0] for k in self.key]).alias("_g"))
        if prompts is not None:
            columns.append(field_expr(self.key[0], schema, self.where)[0].cast(pl.String).alias("_pk"))
        else:
            expr, dtype = field_expr(self.prompt, schema, self.where)
            columns.append(self._conversation(expr, dtype).alias("_prompt"))
        source = pl.col("source").cast(pl.String) if "source" in schema else pl.lit(None, dtype=pl.String)
        frame = batch.select(*columns, source.alias("_source"))
        if prompts is not None:
            frame = frame.join(prompts, on="_pk", how="left").drop("_pk")
        contents = pl.col("_prompt").list.eval(pl.element().struct.field("content")).list.join(SEPARATOR)
        frame = frame.with_columns(prompt_hash(contents).alias("_ph"))
        if not self.key:
            frame = frame.with_columns(pl.col("_ph").alias("_g"))
        if lists:
            count = pl.col("_text").list.len().fill_null(0)
            frame = frame.with_columns(pl.int_ranges(0, count).alias("_pos")).filter(count > 0)
            frame = frame.explode("_text", "_pos").with_columns(
                [pl.col(c).list.get(pl.col("_pos"), null_on_oob=True).alias(c) for c in listed]
            )
        else:
            frame = frame.with_columns(pl.lit(0, dtype=pl.Int64).alias("_pos"))
        return frame.with_columns(pl.col("model").cast(pl.String), pl.col("_pos").cast(pl.Int64))

    def _score_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Per completion: ``score``, ``_bad`` (a score was there but is not a number), ``_role``."""
        if self.scorer is not None:
            score, bad = SCORERS[self.scorer](pl.col("_text")), pl.lit(False)
        elif self.score is not None:
            score, bad = parse_score(pl.col("_score_raw"))
        else:
            score, bad = pl.lit(None, dtype=pl.Float64), pl.lit(False)
        role = pl.lit(None, dtype=pl.String)
        for name, patterns in reversed(list(self.roles.items())):
            role = (
                pl.when(pl.col("model").str.contains(glob_regex(patterns))).then(pl.lit(name)).otherwise(role)
            )
        return frame.with_columns(score.alias("score"), bad.alias("_bad"), role.alias("_role"))

    # ------------------------------------------------------------------ pass 1: decide
    def _candidates(self, store: PartStore, prompts: pl.DataFrame | None) -> tuple[pl.DataFrame, int]:
        parts, offset, empty_rows = [], 0, 0
        for batch in store.iter_batches():
            if batch.height:
                frame = self._score_columns(self._completions(batch, offset, prompts))
                empty_rows += batch.height - frame.get_column("_row").n_unique()
                text = pl.col("_text")
                parts.append(
                    frame.select(
                        "_g", "_ph", "_row", "_pos", "model", "score", "_bad", "_role",
                        text.str.len_chars().cast(pl.Int64).alias("_len"),
                        stable_hash(text).alias("_th"),
                        (text.is_null() | (text.str.strip_chars() == "")).alias("_empty"),
                    )
                )  # fmt: skip
            offset += batch.height
        if not parts:
            return pl.DataFrame(), empty_rows
        return pl.concat(parts, how="vertical_relaxed").sort("_g", "_row", "_pos"), empty_rows

    def _decide(
        self, cands: pl.DataFrame, rng: np.random.Generator
    ) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
        """Returns (all picked pairs with ``_reason``, dropped-item carriers, scalar metrics)."""
        metrics: dict[str, float] = {"completions": cands.height}
        if self.judgments is not None:
            scores, unusable = model_scores(self.judgments, self.where)
            metrics["judgments_unparseable"] = unusable
            join_key = "_g" if self.judgments.key else "_ph"
            cands = cands.drop("score").join(
                scores.rename({"_jk": join_key}), on=[join_key, "model"], how="left", maintain_order="left"
            )
        reason = pl.lit(None, dtype=pl.String)
        rules = [(pl.col("_empty"), "empty_answer")]
        if self.scored:
            rules += [(pl.col("_bad"), "unparseable_score"), (pl.col("score").is_null(), "missing_score")]
        if self.policy == "by_role":
            rules.append(
                (
                    ~pl.col("_role").is_in([self.chosen_role, self.rejected_role]).fill_null(False),
                    "unlisted_model",
                )
            )
        for condition, name in reversed(rules):
            reason = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(reason)
        cands = cands.with_columns(reason.alias("_reason"))
        dropped = [cands.filter(pl.col("_reason").is_not_null()).select("_g", "model", "_reason")]
        usable = cands.filter(pl.col("_reason").is_null())
        counts = cands.group_by("_g").agg(pl.col("_reason").is_null().sum().alias("n"))
        few = counts.filter(pl.col("n") < 2).select("_g")
        dropped.append(few.with_columns(pl.lit("single_completion").alias("_reason")))
        usable = usable.join(few, on="_g", how="anti")
        if self.policy == "by_role":
            have = usable.group_by("_g").agg(
                (pl.col("_role") == self.chosen_role).any().alias("c"),
                (pl.col("_role") == self.rejected_role).any().alias("r"),
            )
            lacking = have.filter(~(pl.col("c") & pl.col("r"))).select("_g")
            dropped.append(lacking.with_columns(pl.lit("missing_role").alias("_reason")))
            usable = usable.join(lacking, on="_g", how="anti")
        metrics["prompts"] = usable.get_column("_g").n_unique()
        usable = usable.sort("_g", "_row", "_pos").with_columns(pl.Series("_u", rng.random(usable.height)))
        if self.policy == "best_vs_worst":
            pairs = policies.best_vs_worst(usable)
        elif self.policy == "best_vs_random":
            pairs = policies.best_vs_random(usable)
        elif self.policy == "all_pairs_above_margin":
            pairs = policies.all_pairs(usable)
        else:
            pairs = policies.by_role(usable, self.chosen_role, self.rejected_role, self.scored)
        pairs = policies.check_pairs(
            pairs.sort("_g", "c_row", "c_pos", "r_row", "r_pos"), self.min_margin, self.max_length_ratio
        )
        if self.balance_longer_share is not None:
            pairs = policies.balance_longer(pairs, self.balance_longer_share, rng)
        dropped.append(
            pairs.filter(pl.col("_reason").is_not_null()).select(
                "_g",
                pl.col("c_model").alias("chosen_model"),
                pl.col("r_model").alias("rejected_model"),
                pl.col("c_score").alias("chosen_score"),
                pl.col("r_score").alias("rejected_score"),
                "margin",
                "_reason",
            )
        )
        present = [d for d in dropped if d.height]
        carriers = pl.concat(present, how="diagonal_relaxed") if present else None
        return pairs.filter(pl.col("_reason").is_null()), carriers, metrics

    # ------------------------------------------------------------------ pass 2: assemble
    def run(self, store: PartStore) -> Iterator[pl.DataFrame]:
        from dsforge.io.sinks import parse_size

        rng = np.random.default_rng([self.context.seed, self.context.step_index])
        prompts = self._prompts()
        cands, empty_rows = self._candidates(store, prompts)
        schema = canonical_schema(self.style)
        if cands.height == 0:
            return
        pairs, carriers, metrics = self._decide(cands, rng)
        del cands
        scalar = {f"{METRIC_PREFIX}{k}": v for k, v in metrics.items()}
        carrier_frame = self._carriers(carriers, empty_rows, schema)
        if carrier_frame.height:
            yield self._with_scalars(carrier_frame, scalar)
            scalar = {}
        buckets = max(1, math.ceil(store.total_bytes() * 3 / parse_size(self.bucket_size)))
        scratch = Path(self.context.work_dir or store.root.parent) / f"make_pairs-{self.context.step_index}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            for frame in self._assemble(store, prompts, pairs, buckets, scratch):
                for start in range(0, frame.height, self.batch_rows):
                    piece = frame.slice(start, self.batch_rows)
                    if scalar and piece.height:
                        piece, scalar = self._with_scalars(piece, scalar), {}
                    yield piece
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _with_scalars(frame: pl.DataFrame, scalar: dict[str, float]) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        return frame.with_columns(
            [pl.when(first).then(pl.lit(float(v))).otherwise(0.0).alias(k) for k, v in scalar.items()]
        )

    def _carriers(self, carriers: pl.DataFrame | None, empty_rows: int, schema: pl.Schema) -> pl.DataFrame:
        """Dropped items as rows of the output's shape, with the reason and the prompt key to explain them."""
        pieces = [pl.DataFrame(schema=schema)]
        if carriers is not None and carriers.height:
            pieces.append(
                carriers.rename({"_reason": DROP_COLUMN, "_g": f"{DROPPED_ONLY_PREFIX}prompt_key"}).rename(
                    {"model": f"{DROPPED_ONLY_PREFIX}model"}, strict=False
                )
            )
        if empty_rows:
            pieces.append(pl.DataFrame({DROP_COLUMN: ["no_completions"] * empty_rows}))
        return pl.concat(pieces, how="diagonal_relaxed")

    def _assemble(
        self, store: PartStore, prompts: pl.DataFrame | None, pairs: pl.DataFrame, buckets: int, scratch: Path
    ) -> Iterator[pl.DataFrame]:
        needed = (
            pl.concat(
                [
                    pairs.select(pl.col("c_row").alias("_row"), pl.col("c_pos").alias("_pos")),
                    pairs.select(pl.col("r_row").alias("_row"), pl.col("r_pos").alias("_pos")),
                ]
            )
            .unique()
            .sort("_row", "_pos")
        )
        held: list[pl.DataFrame] = []
        offset = 0
        for number, batch in enumerate(store.iter_batches()):
            end = offset + batch.height
            wanted = needed.filter(pl.col("_row").is_between(offset, end, closed="left"))
            if wanted.height:
                frame = self._completions(batch, offset, prompts).join(
                    wanted, on=["_row", "_pos"], how="semi"
                )
                frame = frame.select("_g", "_row", "_pos", "_text", "_prompt", "_source")
                if buckets == 1:
                    held.append(frame)
                else:
                    for (bucket,), piece in frame.group_by(pl.col("_g") % buckets):
                        folder = scratch / f"bucket-{bucket:05d}"
                        folder.mkdir(parents=True, exist_ok=True)
                        piece.write_parquet(folder / f"{number:08d}.parquet")
            offset = end
        if buckets == 1:
            if held:
                yield self._finish(pairs, pl.concat(held, how="vertical_relaxed"))
            return
        for bucket in range(buckets):
            folder = scratch / f"bucket-{bucket:05d}"
            if folder.exists():
                texts = pl.concat([pl.read_parquet(f) for f in sorted(folder.glob("*.parquet"))])
                yield self._finish(pairs.filter(pl.col("_g") % buckets == bucket), texts)

    def _finish(self, pairs: pl.DataFrame, texts: pl.DataFrame) -> pl.DataFrame:
        """Pair rows of one bucket: texts joined in, the canonical record built and checked, metrics added."""
        side = texts.select("_row", "_pos", "_text", "_prompt", "_source")
        out = pairs.join(
            side.rename({"_row": "c_row", "_pos": "c_pos", "_text": "c_text"}),
            on=["c_row", "c_pos"],
            how="left",
        ).join(
            side.select(
                pl.col("_row").alias("r_row"), pl.col("_pos").alias("r_pos"), pl.col("_text").alias("r_text")
            ),
            on=["r_row", "r_pos"],
            how="left",
        )
        out = out.sort("c_row", "c_pos", "r_row", "r_pos").select(
            pl.col("_prompt").alias("prompt"),
            answer_turn(pl.col("c_text")).alias("chosen"),
            answer_turn(pl.col("r_text")).alias("rejected"),
            pl.col("_source").alias("source"),
            pl.col("c_model").alias("chosen_model"),
            pl.col("r_model").alias("rejected_model"),
            pl.col("c_score").cast(pl.Float64).alias("chosen_score"),
            pl.col("r_score").cast(pl.Float64).alias("rejected_score"),
            pl.col("margin").cast(pl.Float64),
            (pl.col("c_len") - pl.col("r_len")).alias("_diff"),
        )
        out = merge_drop_reason(out, pl.lit(pair_drop_reason(out)))
        kept = pl.col(DROP_COLUMN).is_null()
        metrics = [
            *_bins(self.margin_bins, pl.col("margin"), "margin_bin", below=False),
            *_bins(self.length_bins, pl.col("_diff").cast(pl.Float64), "length_diff_bin"),
            (pl.col("_diff") > 0).cast(pl.Int64).alias(f"{METRIC_PREFIX}chosen_longer"),
        ]
        out = out.with_columns(
            [pl.when(kept).then(m).otherwise(0).alias(m.meta.output_name()) for m in metrics]
        )
        out = out.drop("_diff")
        return to_implicit(out) if self.style == "implicit" else out
