"""``to_messages``: SFT data in any common format → the canonical ``messages`` column.

The format is detected from column names and dtypes only (never from values), in this order,
first match wins, so one batch always gives the same answer:

1. ``oasst``: ``prompt`` is a struct with ``replies`` (Open Assistant message trees);
2. ``openai``: ``messages`` is a list of structs;
3. ``sharegpt``: ``conversations`` is a list of structs;
4. ``self_instruct``: ``instruction`` and a list column ``instances``;
5. ``dolly``: ``instruction``, ``context`` and ``response``;
6. ``alpaca``: ``instruction`` and ``output``;
7. ``prompt_completion``: ``prompt`` and ``completion``;
8. ``hh_rlhf``: a text column ``transcript_field`` (default ``chosen``) and no ``prompt``.

``fields:`` maps a format's field names to the input's (``{instruction: question}``) and is
applied before detection. After conversion every row passes the conversation rules
(:mod:`dsforge.chat.rules`); rows that could not be converted are dropped as
``unconvertible: <detail>``. The format's own columns are removed; the input's other columns stay
(unless ``keep_columns: false``), those named like TRL's mode columns renamed ``meta_<name>``.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from dsforge.chat.formats.conversation import OPENAI, PROMPT_COMPLETION, SHAREGPT
from dsforge.chat.formats.instruction import ALPACA, DOLLY, SELF_INSTRUCT
from dsforge.chat.formats.oasst import OASST
from dsforge.chat.formats.transcript import HH_RLHF
from dsforge.chat.formats.turns import NON_STRING, UNCONVERTIBLE, FormatSpec, Job
from dsforge.chat.rules import conversation_drop_reason
from dsforge.chat.schema import MESSAGES, TRL_RESERVED
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Transform, merge_drop_reason

#: Known formats, in detection order.
FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (OASST, OPENAI, SHAREGPT, SELF_INSTRUCT, DOLLY, ALPACA, PROMPT_COMPLETION, HH_RLHF)
}
FormatName = Literal[
    "auto", "alpaca", "sharegpt", "openai", "prompt_completion", "dolly", "self_instruct", "oasst", "hh_rlhf"
]
#: A field every format understands: the input's record id, copied to ``source_id``.
ID_FIELD = "id"
#: Columns the adapter itself writes and keeps even with ``keep_columns: false``.
METADATA = ("source", "source_id", "tools")
META_PREFIX = "meta_"


def _is_turn_list(dtype: pl.DataType | None) -> bool:
    return isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)


def detect_format(schema: pl.Schema, job: Job) -> str | None:
    """The format a batch is in, from its column names and dtypes; None when none fits."""

    def has(name: str) -> bool:
        return job.col(name) in schema

    prompt = schema.get(job.col("prompt"))
    if isinstance(prompt, pl.Struct) and "replies" in {f.name for f in prompt.fields}:
        return "oasst"
    if _is_turn_list(schema.get(job.col("messages"))):
        return "openai"
    if _is_turn_list(schema.get(job.col("conversations"))):
        return "sharegpt"
    if has("instruction") and isinstance(schema.get(job.col("instances")), pl.List):
        return "self_instruct"
    if has("instruction") and has("context") and has("response"):
        return "dolly"
    if has("instruction") and has("output"):
        return "alpaca"
    if has("prompt") and has("completion"):
        return "prompt_completion"
    if schema.get(job.transcript_field) == pl.String and not has("prompt"):
        return "hh_rlhf"
    return None


def _known_formats() -> str:
    return "; ".join(f"{name} ({spec.summary})" for name, spec in FORMATS.items())


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    return name


@register_step("to_messages")
class ToMessages(Transform):
    """Convert SFT data in any common format to ``messages``, dropping rule-breaking rows with a reason.

    Formats: alpaca, sharegpt, openai, prompt_completion, dolly, self_instruct, oasst (trees),
    hh_rlhf (transcripts); ``format: auto`` detects them from the columns. The funnel metric
    ``format_<name>`` counts the rows each format produced (before drops).
    """

    format: FormatName = Field("auto", description="input format; auto = detect from the columns")
    fields: dict[str, str] = Field(
        default_factory=dict, description="format field name → input column (or turn key) name"
    )
    oasst_paths: Literal["best", "all"] = Field("best", description="oasst: best-ranked path or every path")
    transcript_field: str = Field("chosen", min_length=1, description="hh_rlhf: the transcript column")
    keep_columns: bool = Field(True, description="keep the input's other columns as metadata")
    example = {"format": "auto", "fields": {"instruction": "question", "output": "answer"}}

    @model_validator(mode="after")
    def _known_fields(self) -> ToMessages:
        specs = FORMATS.values() if self.format == "auto" else [FORMATS[self.format]]
        known = sorted({ID_FIELD, *(f for spec in specs for f in spec.fields)})
        unknown = [key for key in self.fields if key not in known]
        if unknown:
            raise ValueError(
                f"fields: unknown field {unknown[0]!r} for format {self.format} (known: {', '.join(known)})"
            )
        return self

    def _where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    def _job(self) -> Job:
        return Job(dict(self.fields), self._where(), self.oasst_paths, self.transcript_field)

    def resolve_format(self, batch: pl.DataFrame, job: Job) -> str:
        """The format to read this batch as (the recipe's, or detected); raises if unknown."""
        name = self.format if self.format != "auto" else detect_format(batch.schema, job)
        if name is None:
            seen = ", ".join(f"{c}: {t}" for c, t in batch.schema.items())
            raise DsforgeError(
                f"{job.where}: cannot tell the chat format from the columns ({seen}); "
                f"known formats: {_known_formats()}; set 'format:' or map names with 'fields:'"
            )
        spec = FORMATS[name]
        needed = [job.col(f) for f in spec.required] + ([job.transcript_field] if name == "hh_rlhf" else [])
        missing = [c for c in needed if c not in batch.columns]
        if missing:
            seen = ", ".join(batch.columns)
            raise DsforgeError(
                f"{job.where}: format {name} needs a column {missing[0]!r} (columns here: {seen})"
            )
        return name

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        job = self._job()
        name = self.resolve_format(batch, job)
        spec = FORMATS[name]
        frame = spec.convert(batch, job)
        consumed = {job.col(f) for f in spec.fields if f not in spec.keeps}
        if name == "hh_rlhf":
            consumed.add(job.transcript_field)
        id_column = job.col(ID_FIELD)
        if id_column in batch.columns and "source_id" not in batch.columns and id_column != "source":
            if "source_id" not in frame.columns:
                frame = frame.with_columns(pl.col(id_column).cast(pl.String).alias("source_id"))
            consumed.add(id_column)
        unconvertible = pl.lit("unconvertible: ") + pl.col(UNCONVERTIBLE)
        reason = pl.coalesce(unconvertible, conversation_drop_reason(MESSAGES, non_string=pl.col(NON_STRING)))
        frame = merge_drop_reason(frame, reason).with_columns(
            pl.lit(1).alias(f"{METRIC_PREFIX}format_{name}")
        )
        return self._select(frame, consumed)

    def _select(self, frame: pl.DataFrame, consumed: set[str]) -> pl.DataFrame:
        """Messages first, then kept metadata; reserved names renamed; format columns gone."""
        internal = {UNCONVERTIBLE, NON_STRING}
        rest = [c for c in frame.columns if c != MESSAGES and c not in consumed and c not in internal]
        if not self.keep_columns:
            rest = [c for c in rest if c in METADATA or c.startswith("__")]
        out = frame.select([MESSAGES, *rest])
        taken = set(out.columns)
        renames = {}
        for column in out.columns:
            if column in TRL_RESERVED:
                renames[column] = _unique(META_PREFIX + column, taken)
                taken.add(renames[column])
        return out.rename(renames)
