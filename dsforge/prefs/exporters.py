"""Preference exporters: canonical pairs written the way each DPO trainer reads them.

The canonical pair is TRL's explicit conversational preference format: ``prompt`` (turns ending
with a user turn), ``chosen`` and ``rejected`` (one assistant message each), all
list<struct<role, content>>. The default ``parquet`` output already *is* TRL's format; these
sinks cover the others:

* ``llamafactory_ranking`` — ShareGPT JSONL (``conversations`` [{from, value}] ending with a human
  turn, ``chosen`` / ``rejected`` as one {from: gpt, value} each, ``system``) plus the
  ``dataset_info.json`` entry with ``"ranking": true`` (LLaMA-Factory's data/README).
* ``openai_dpo`` — OpenAI's preference fine-tuning JSONL: ``{"input": {"messages": [...]},
  "preferred_output": [assistant], "non_preferred_output": [assistant]}``.
* ``axolotl_dpo`` — the pairs as they are (Parquet or JSONL) plus ``axolotl.yaml`` with
  ``rl: dpo`` and ``type: chat_template.default`` mapping field_messages/chosen/rejected.

The SFT exporters' machinery (two passes, rows a format cannot express skipped and counted by
reason in the output report) is reused; only the pair rules and conversions live here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from dsforge.chat.exporters import (
    OPENAI_ROLES,
    SHAREGPT_TAGS,
    SKIP_COLUMN,
    _ConvertingSink,
    _positions_alternate,
    canonical_messages,
    first_reason,
    table_writer,
    write_axolotl_yaml,
)
from dsforge.chat.schema import MESSAGES_DTYPE
from dsforge.errors import DsforgeError
from dsforge.io.atomic import write_text_atomic
from dsforge.io.sinks import DEFAULT_SPLIT, ParquetSink, _ShardedWriter, _ShardPlan
from dsforge.registry import register_sink
from dsforge.steps.hashing import is_conversation

PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"
PAIR_COLUMNS = (PROMPT, CHOSEN, REJECTED)


def _roles(column: str) -> pl.Expr:
    return canonical_messages(column).list.eval(pl.element().struct.field("role"))


def _any_empty(column: str) -> pl.Expr:
    contents = canonical_messages(column).list.eval(pl.element().struct.field("content"))
    return contents.list.eval(pl.element().is_null() | (pl.element().str.strip_chars() == "")).list.any()


def _answer(column: str) -> pl.Expr:
    """The single answer message of ``chosen`` / ``rejected`` as a {role, content} struct."""
    return canonical_messages(column).list.first()


def pair_rules() -> list[tuple[pl.Expr, str]]:
    """What every preference format needs (TRL's explicit-prompt contract), first match wins."""
    prompt = pl.col(PROMPT)
    last_role = _roles(PROMPT).list.last()
    one = {c: pl.col(c).list.len() == 1 for c in (CHOSEN, REJECTED)}
    return [
        (prompt.is_null() | (prompt.list.len() == 0), "no_prompt"),
        (last_role != "user", "prompt_not_ending_with_user"),
        (~one[CHOSEN].fill_null(False), "chosen_not_one_message"),
        (~one[REJECTED].fill_null(False), "rejected_not_one_message"),
        (
            (_answer(CHOSEN).struct.field("role") != "assistant")
            | (_answer(REJECTED).struct.field("role") != "assistant"),
            "answer_not_assistant",
        ),
        (_any_empty(PROMPT) | _any_empty(CHOSEN) | _any_empty(REJECTED), "empty_content"),
    ]


class _PreferenceSink(_ConvertingSink):
    """A converting sink over canonical pairs (``prompt`` / ``chosen`` / ``rejected`` turns)."""

    def _check_input(self, schema: pl.Schema) -> None:
        for column in PAIR_COLUMNS:
            dtype = schema.get(column)
            if dtype is None or not is_conversation(dtype):
                found = f"is {dtype}" if dtype is not None else f"is missing (columns: {', '.join(schema)})"
                raise DsforgeError(
                    f"output ({self.name}): needs preference pairs ({', '.join(PAIR_COLUMNS)} as lists of "
                    f"{{role, content}} turns, e.g. from to_pairs or make_pairs); {column!r} {found}"
                )


# --------------------------------------------------------------------------- llamafactory
def _sharegpt(message: pl.Expr) -> pl.Expr:
    """A {role, content} struct as LLaMA-Factory's {from, value} (unknown roles become null tags)."""
    return pl.struct(
        **{
            "from": message.struct.field("role").replace_strict(SHAREGPT_TAGS, default=None),
            "value": message.struct.field("content"),
        }
    )


@register_sink("llamafactory_ranking")
class LlamaFactoryRankingSink(_PreferenceSink):
    """ShareGPT preference JSONL for LLaMA-Factory (``stage: dpo`` / ``rm``) and its dataset_info entry.

    ``conversations`` is the prompt (a leading system turn becomes ``system``), ending with a human
    turn; ``chosen`` / ``rejected`` are one ``{from: gpt, value}`` each. Metadata columns stay beside
    them (LLaMA-Factory reads only the mapped ones). Skipped, besides the pair rules: a system turn
    after the first, roles without a ShareGPT tag, turns out of LLaMA-Factory's order.
    """

    dataset_name: str = Field("dsforge_dpo", description="the key in dataset_info.json")

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        prompt = canonical_messages(PROMPT)
        has_system = prompt.list.first().struct.field("role") == "system"
        rest = pl.when(has_system).then(prompt.list.slice(1)).otherwise(prompt)
        roles = rest.list.eval(pl.element().struct.field("role"))
        tags = roles.list.eval(pl.element().replace_strict(SHAREGPT_TAGS, default=None))
        rules = [
            *pair_rules(),
            (roles.list.eval(pl.element() == "system").list.any(), "system_turn_not_first"),
            (tags.list.eval(pl.element().is_null()).list.any(), "unsupported_role"),
            (~_positions_alternate(tags), "roles_out_of_order"),
        ]
        others = [c for c in frame.columns if c not in (*PAIR_COLUMNS, "conversations", "system")]
        return frame.select(
            rest.list.eval(_sharegpt(pl.element())).alias("conversations"),
            _sharegpt(_answer(CHOSEN)).alias(CHOSEN),
            _sharegpt(_answer(REJECTED)).alias(REJECTED),
            pl.when(has_system)
            .then(prompt.list.first().struct.field("content"))
            .otherwise(pl.lit(""))
            .alias("system"),
            *others,
            first_reason(rules).alias(SKIP_COLUMN),
        )

    def write_extra(self, dest: Path, info: dict[str, Any]) -> dict[str, Any]:
        entries = {}
        for split in info["splits"]:
            name = self.dataset_name if split == DEFAULT_SPLIT else f"{self.dataset_name}_{split}"
            (file_name,) = [f for f in info["files"] if Path(f).name.startswith(f"{split}-")]
            entries[name] = {
                "file_name": file_name,
                "formatting": "sharegpt",
                "ranking": True,
                "columns": {
                    "messages": "conversations",
                    "chosen": CHOSEN,
                    "rejected": REJECTED,
                    "system": "system",
                },
                "tags": {
                    "role_tag": "from",
                    "content_tag": "value",
                    "user_tag": SHAREGPT_TAGS["user"],
                    "assistant_tag": SHAREGPT_TAGS["assistant"],
                    "observation_tag": SHAREGPT_TAGS["tool"],
                    "system_tag": SHAREGPT_TAGS["system"],
                },
            }
        text = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
        write_text_atomic(dest / "dataset_info.json", text)
        return {"config": "dataset_info.json", "datasets": sorted(entries)}


# --------------------------------------------------------------------------- openai
@register_sink("openai_dpo")
class OpenAIDpoSink(_PreferenceSink):
    """OpenAI preference (DPO) fine-tuning JSONL: ``input.messages``, ``preferred_output`` and
    ``non_preferred_output`` (one assistant message each); nothing else on the line.

    Skipped, besides the pair rules: prompt roles other than system/user/assistant.
    """

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        roles = _roles(PROMPT)
        rules = [
            *pair_rules(),
            (roles.list.eval(~pl.element().is_in(list(OPENAI_ROLES))).list.any(), "unsupported_role"),
        ]
        return frame.select(
            pl.struct(canonical_messages(PROMPT).cast(MESSAGES_DTYPE).alias("messages")).alias("input"),
            canonical_messages(CHOSEN).cast(MESSAGES_DTYPE).alias("preferred_output"),
            canonical_messages(REJECTED).cast(MESSAGES_DTYPE).alias("non_preferred_output"),
            first_reason(rules).alias(SKIP_COLUMN),
        )


# --------------------------------------------------------------------------- axolotl
@register_sink("axolotl_dpo")
class AxolotlDpoSink(_PreferenceSink, ParquetSink):
    """The pairs as they are (Parquet or JSONL) plus ``axolotl.yaml``: ``rl: dpo`` and datasets of
    ``type: chat_template.default`` (field_messages: prompt, field_chosen / field_rejected), the
    strategy that renders the prompt and each answer with the model's chat template."""

    file_format: Literal["parquet", "jsonl"] = "parquet"
    dataset_path: str = Field(
        ".", description="the 'path' written in axolotl.yaml (this folder as seen by axolotl)"
    )
    ext: ClassVar[str] = "parquet"

    def _rows_per_shard(self, store, total: int) -> int:
        return ParquetSink._rows_per_shard(self, store, total)

    def _writer(self, dest: Path, plan: _ShardPlan, schema: pl.Schema) -> _ShardedWriter:
        return table_writer(self, self.file_format, dest, plan, schema)

    def convert(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            *(canonical_messages(c).cast(MESSAGES_DTYPE) for c in PAIR_COLUMNS),
            first_reason(pair_rules()).alias(SKIP_COLUMN),
        )

    def write(self, store, dest: Path) -> dict[str, Any]:
        info = super().write(store, dest)
        info["data_files"] = {s: f"data/{s}-*.{self.file_format}" for s in info["splits"]}
        return info

    def write_extra(self, dest: Path, info: dict[str, Any]) -> dict[str, Any]:
        fields = {
            "type": "chat_template.default",
            "field_messages": PROMPT,
            "field_chosen": CHOSEN,
            "field_rejected": REJECTED,
            "message_property_mappings": {"role": "role", "content": "content"},
        }
        return write_axolotl_yaml(
            dest,
            info,
            dataset_path=self.dataset_path,
            file_format=self.file_format,
            dataset_fields=fields,
            top={"rl": "dpo"},
        )
