"""Trainer exporters: the canonical ``messages`` rows written the way each trainer reads them.

* ``trl`` — Parquet with ``messages`` as list<struct<role, content>> (TRL's conversational format).
* ``axolotl`` — Parquet or JSONL with ``messages`` plus ``axolotl.yaml`` (``type: chat_template``).
* ``llamafactory`` — ShareGPT JSONL (``conversations`` [{from, value}], ``system``) plus the
  ``dataset_info.json`` entry (``formatting: sharegpt``, ``columns``, ``tags``), per LLaMA-Factory's
  data/README: human/observation at odd positions, gpt/function_call at even ones.
* ``openai`` — the fine-tuning JSONL: one ``{"messages": [{role, content}]}`` per line, roles
  system/user/assistant, non-empty string contents, at least one assistant turn.

Rows a format cannot express are left out and counted by reason (``skipped`` in the output
report). Conversion is polars expressions per batch, run twice (count, then write) so shard
names know their totals.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import yaml
from pydantic import Field

from dsforge.chat.schema import MESSAGE_DTYPE, MESSAGES, MESSAGES_DTYPE, TRL_RESERVED
from dsforge.errors import DsforgeError
from dsforge.io.atomic import write_text_atomic
from dsforge.io.parts import PartStore, conform, unify_schemas
from dsforge.io.sinks import (
    DEFAULT_SPLIT,
    JsonlSink,
    ParquetSink,
    Sink,
    _route,
    _ShardedWriter,
    _ShardPlan,
    split_counts,
)
from dsforge.registry import register_sink

SKIP_COLUMN = "__skip__"
#: LLaMA-Factory's ShareGPT tags (its defaults), by canonical role.
SHAREGPT_TAGS = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}
OPENAI_ROLES = ("system", "user", "assistant")


def first_reason(rules: list[tuple[pl.Expr, str]]) -> pl.Expr:
    chain = None
    for condition, reason in rules:
        chain = (pl.when if chain is None else chain.when)(condition.fill_null(False)).then(pl.lit(reason))
    return chain.otherwise(pl.lit(None, dtype=pl.String))


def canonical_messages(column: str = MESSAGES) -> pl.Expr:
    """``messages`` rebuilt as list<struct<role, content>> in that field order (extra fields dropped)."""
    return pl.col(column).list.eval(
        pl.struct(
            role=pl.element().struct.field("role").cast(pl.String),
            content=pl.element().struct.field("content").cast(pl.String),
        )
    )


class _ConvertingSink(Sink):
    """A sink whose rows are converted (and possibly skipped with a reason) before writing."""

    ext: ClassVar[str] = "jsonl"

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows in the format; rows to leave out carry a reason in ``SKIP_COLUMN``."""
        raise NotImplementedError

    def _rows_per_shard(self, store: PartStore, total: int) -> int:
        return max(total, 1)  # one file per split

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        return JsonlSink()._writer(dest, plan, schema)

    def _check_input(self, schema: pl.Schema) -> None:
        dtype = schema.get(MESSAGES)
        ok = isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)
        if not ok or not {"role", "content"} <= set(dtype.inner.to_schema()):
            found = f"is {dtype}" if dtype is not None else f"is missing (columns: {', '.join(schema)})"
            raise DsforgeError(
                f"output ({self.name}): needs a {MESSAGES!r} column of {{role, content}} turns; it {found}"
            )

    def _converted(self, store: PartStore, schema: pl.Schema):
        for frame in store.iter_batches():
            for split, part in _route(conform(frame, schema)):
                out = self.convert(part)
                yield split, out.filter(pl.col(SKIP_COLUMN).is_null()).drop(SKIP_COLUMN), out

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        schema = store.schema()
        self._check_input(schema)
        counts = dict.fromkeys(split_counts(store) or {DEFAULT_SPLIT: 0}, 0)
        skipped: Counter = Counter()
        schemas = []
        for split, kept, out in self._converted(store, schema):
            counts[split] += kept.height
            skipped.update(out.get_column(SKIP_COLUMN).drop_nulls().to_list())
            schemas.append(kept.schema)
        out_schema = unify_schemas(schemas) if schemas else pl.Schema()
        plan = _ShardPlan(counts, self._rows_per_shard(store, sum(counts.values())))
        writer = self._writer(dest, plan, out_schema)
        for split, kept, _ in self._converted(store, schema):
            writer.write(split, conform(kept, out_schema))
        files = writer.close()
        info = {
            "format": self.name,
            "splits": {s: counts.get(s, 0) for s in plan.shards},
            "files": files,
            "data_files": {s: f"data/{s}-*.{self.ext}" for s in plan.shards},
            "columns": {k: str(v) for k, v in out_schema.items()},
            "skipped": dict(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
        info.update(self.write_extra(dest, info))
        return info

    def write_extra(self, dest: Path, info: dict[str, Any]) -> dict[str, Any]:
        """Config files beside the data (axolotl.yaml, dataset_info.json); returns report entries."""
        return {}


def _no_turns() -> pl.Expr:
    return pl.col(MESSAGES).is_null() | (pl.col(MESSAGES).list.len() == 0)


# --------------------------------------------------------------------------- trl
@register_sink("trl")
class TrlSink(_ConvertingSink, ParquetSink):
    """TRL's conversational dataset: Parquet shards with ``messages`` as list<struct<role, content>>.

    Columns TRL treats as other dataset kinds (prompt, completion, text, chosen, rejected, label,
    conversations) must not sit beside ``messages``: the build fails naming the column.
    """

    ext: ClassVar[str] = "parquet"

    def _rows_per_shard(self, store: PartStore, total: int) -> int:
        return ParquetSink._rows_per_shard(self, store, total)

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        return ParquetSink._writer(self, dest, plan, schema)

    def _check_input(self, schema: pl.Schema) -> None:
        super()._check_input(schema)
        clash = [c for c in TRL_RESERVED if c in schema]
        if clash:
            raise DsforgeError(
                f"output (trl): column {clash[0]!r} beside {MESSAGES!r} makes TRL read the dataset as "
                f"another kind; drop or rename it (drop_columns step)"
            )

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            canonical_messages().cast(MESSAGES_DTYPE),
            first_reason([(_no_turns(), "no_turns")]).alias(SKIP_COLUMN),
        )


# --------------------------------------------------------------------------- axolotl
def table_writer(
    sink: Sink, file_format: str, dest: Path, plan: _ShardPlan, schema: pl.Schema
) -> _ShardedWriter:
    """Parquet or JSONL shards for a converting sink that lets the user choose the file format."""
    if file_format == "jsonl":
        return JsonlSink()._writer(dest, plan, schema)
    return ParquetSink._writer(sink, dest, plan, schema)


def write_axolotl_yaml(
    dest: Path,
    info: dict[str, Any],
    *,
    dataset_path: str,
    file_format: str,
    dataset_fields: dict[str, Any],
    top: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``axolotl.yaml``: one ``datasets`` entry for train, ``test_datasets`` for the other splits."""

    def entry(split: str) -> dict[str, Any]:
        return {
            "path": dataset_path,
            "ds_type": "parquet" if file_format == "parquet" else "json",
            "data_files": [f for f in info["files"] if Path(f).name.startswith(f"{split}-")],
            "split": "train",
            **dataset_fields,
        }

    config: dict[str, Any] = {
        **(top or {}),
        "datasets": [entry(s) for s in info["splits"] if s == DEFAULT_SPLIT],
    }
    evaluation = [entry(s) for s in info["splits"] if s != DEFAULT_SPLIT]
    if evaluation:
        config["test_datasets"] = evaluation
    header = (
        "# axolotl dataset config written by dsforge: paste into your axolotl config.\n"
        f"# 'path' is this folder ({dataset_path!r} when axolotl runs from here); data_files are inside it.\n"
    )
    write_text_atomic(dest / "axolotl.yaml", header + yaml.safe_dump(config, sort_keys=False))
    return {"config": "axolotl.yaml"}


@register_sink("axolotl")
class AxolotlSink(TrlSink):
    """``messages`` rows (Parquet or JSONL) plus ``axolotl.yaml``: the ``datasets:`` entries for
    axolotl's ``type: chat_template`` (field_messages, message_property_mappings, roles_to_train)."""

    file_format: Literal["parquet", "jsonl"] = "parquet"
    dataset_path: str = Field(
        ".", description="the 'path' written in axolotl.yaml (this folder as seen by axolotl)"
    )
    roles_to_train: list[str] = Field(default_factory=lambda: ["assistant"])
    train_on_eos: Literal["turn", "last", "all", "none"] = "turn"

    @property
    def ext(self) -> str:  # type: ignore[override]
        return self.file_format

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        return table_writer(self, self.file_format, dest, plan, schema)

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        info = super().write(store, dest)
        info["data_files"] = {s: f"data/{s}-*.{self.file_format}" for s in info["splits"]}
        return info

    def write_extra(self, dest: Path, info: dict[str, Any]) -> dict[str, Any]:
        fields = {
            "type": "chat_template",
            "field_messages": MESSAGES,
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": list(self.roles_to_train),
            "train_on_eos": self.train_on_eos,
        }
        return write_axolotl_yaml(
            dest, info, dataset_path=self.dataset_path, file_format=self.file_format, dataset_fields=fields
        )


# --------------------------------------------------------------------------- llamafactory
def _positions_alternate(tags: pl.Expr) -> pl.Expr:
    """LLaMA-Factory's rule: human/observation at odd positions (1-based), gpt/function_call at even."""
    position = pl.int_range(pl.len())
    ok = ((position % 2 == 0) & pl.element().is_in(["human", "observation"])) | (
        (position % 2 == 1) & pl.element().is_in(["gpt", "function_call"])
    )
    return tags.list.eval(ok).list.all()


@register_sink("llamafactory")
class LlamaFactorySink(_ConvertingSink):
    """ShareGPT-format JSONL for LLaMA-Factory and its ``dataset_info.json`` entry.

    A leading system turn becomes the ``system`` column; user → human, assistant → gpt, tool →
    observation. Skipped (counted): no turns, a system turn after the first, other roles, null
    content, turns out of LLaMA-Factory's order, an odd number of turns (no final answer).
    """

    dataset_name: str = Field("dsforge", description="the key in dataset_info.json")

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        msgs = canonical_messages()
        first_role = msgs.list.first().struct.field("role")
        has_system = first_role == "system"
        rest = pl.when(has_system).then(msgs.list.slice(1)).otherwise(msgs)
        roles = rest.list.eval(pl.element().struct.field("role"))
        tags = roles.list.eval(pl.element().replace_strict(SHAREGPT_TAGS, default=None))
        conversations = rest.list.eval(
            pl.struct(
                **{
                    "from": pl.element().struct.field("role").replace_strict(SHAREGPT_TAGS, default=None),
                    "value": pl.element().struct.field("content"),
                }
            )
        )
        rules = [
            (_no_turns() | (rest.list.len() == 0), "no_turns"),
            (roles.list.eval(pl.element() == "system").list.any(), "system_turn_not_first"),
            (tags.list.eval(pl.element().is_null()).list.any(), "unsupported_role"),
            (rest.list.eval(pl.element().struct.field("content").is_null()).list.any(), "null_content"),
            (~_positions_alternate(tags), "roles_out_of_order"),
            (rest.list.len() % 2 == 1, "no_final_answer"),
        ]
        others = [c for c in frame.columns if c not in (MESSAGES, "conversations", "system")]
        return frame.select(
            conversations.alias("conversations"),
            pl.when(has_system)
            .then(msgs.list.first().struct.field("content"))
            .otherwise(pl.lit(""))
            .alias("system"),
            *others,
            first_reason(rules).alias(SKIP_COLUMN),
        )

    def write_extra(self, dest: Path, info: dict[str, Any]) -> dict[str, Any]:
        import json

        columns = {"messages": "conversations", "system": "system"}
        if "tools" in info["columns"]:
            columns["tools"] = "tools"
        tags = {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "observation_tag": "observation",
            "function_tag": "function_call",
            "system_tag": "system",
        }
        entries = {}
        for split in info["splits"]:
            name = self.dataset_name if split == DEFAULT_SPLIT else f"{self.dataset_name}_{split}"
            (file_name,) = [f for f in info["files"] if Path(f).name.startswith(f"{split}-")]
            entries[name] = {
                "file_name": file_name,
                "formatting": "sharegpt",
                "columns": columns,
                "tags": tags,
            }
        write_text_atomic(
            dest / "dataset_info.json", json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
        )
        return {"config": "dataset_info.json", "datasets": sorted(entries)}


# --------------------------------------------------------------------------- openai
@register_sink("openai")
class OpenAISink(_ConvertingSink):
    """OpenAI fine-tuning JSONL: one ``{"messages": [{"role", "content"}]}`` per line, per split.

    Skipped (counted): no turns, roles other than system/user/assistant (tool turns need tool
    calls this record does not carry), null or empty contents, no assistant turn.
    """

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        msgs = canonical_messages()
        roles = msgs.list.eval(pl.element().struct.field("role"))
        contents = msgs.list.eval(pl.element().struct.field("content"))
        rules = [
            (_no_turns(), "no_turns"),
            (roles.list.eval(~pl.element().is_in(list(OPENAI_ROLES))).list.any(), "unsupported_role"),
            (contents.list.eval(pl.element().is_null() | (pl.element() == "")).list.any(), "empty_content"),
            (~roles.list.eval(pl.element() == "assistant").list.any(), "no_assistant_message"),
        ]
        return frame.select(
            msgs.cast(pl.List(MESSAGE_DTYPE)).alias(MESSAGES), first_reason(rules).alias(SKIP_COLUMN)
        )
