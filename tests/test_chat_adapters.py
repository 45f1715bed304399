"""to_messages and the conversation rules on real SFT data: every format, detection, drops with reasons."""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
from pathlib import Path

import datasets
import orjson
import polars as pl
import pytest
from helpers import read_records

from dsforge.chat.adapters import ToMessages
from dsforge.chat.rules import ValidateMessages
from dsforge.chat.schema import MESSAGES_DTYPE, TRL_RESERVED
from dsforge.errors import DsforgeError
from dsforge.execute import split_drops
from dsforge.io.readers import read_file
from dsforge.runner import build

SFT = Path("sft")
ALPACA_EN = SFT / "llamafactory_alpaca_en_demo.json.zst"
GLAIVE = SFT / "llamafactory_glaive_toolcall_en_demo.json.zst"
FASTCHAT = SFT / "fastchat_dummy_conversation.json"
KTO = Path("prefs") / "llamafactory_kto_en_demo.json.zst"
SEED_TASKS = SFT / "self_instruct_seed_tasks.jsonl"
OASST = SFT / "oasst" / "en_100_tree.jsonl.zst"
HH = Path("prefs") / "hh_rlhf_harmless_base_test.jsonl.gz"


def _raw(path: Path) -> list[dict]:
    """The file's records parsed independently of dsforge."""
    return read_records(path)


def _frame(records: list[dict]) -> pl.DataFrame:
    """Records → a batch the way the JSON reader builds one, tagged with a source like the engine."""
    payload = b"\n".join(orjson.dumps(r) for r in records)
    return pl.read_ndjson(io.BytesIO(payload), infer_schema_length=None).with_columns(source=pl.lit("t"))


def _read(path: Path) -> pl.DataFrame:
    batches = read_file(path, "auto", 100_000, text_mode="line", text_field="text", split="train")
    return pl.concat([b.frame for b in batches], how="diagonal_relaxed").with_columns(source=pl.lit("t"))


def _convert(frame: pl.DataFrame, **params) -> tuple[pl.DataFrame, dict, dict]:
    """Run the step as the executor does: kept rows, drop reasons counted, metrics summed."""
    kept, _, counts, metrics = split_drops(ToMessages(**params).process(frame), 0, "to_messages")
    return kept, counts, metrics


def _roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


@pytest.mark.parametrize(
    ("relpath", "fmt", "rows_in", "rows_out", "dropped"),
    [
        (ALPACA_EN, "alpaca", 999, 999, {}),
        (SFT / "llamafactory_alpaca_zh_demo.json.zst", "alpaca", 1000, 1000, {}),
        (SFT / "gpteacher" / "toolformer-similarity-0.9-dataset.json.zst", "alpaca", 5959, 5959, {}),
        (SFT / "gpteacher" / "roleplay-simple-deduped-roleplay-dataset.json.zst", "alpaca", 3146, 3146, {}),
        (FASTCHAT, "sharegpt", 500, 500, {}),
        (GLAIVE, "sharegpt", 300, 300, {}),
        (KTO, "openai", 300, 300, {}),
        (SEED_TASKS, "self_instruct", 175, 175, {}),
        (OASST, "oasst", 100, 100, {}),
        # 4 transcripts end on an empty assistant turn, 8 have two assistant turns in a row (real data)
        (HH, "hh_rlhf", 2312, 2300, {"empty_message": 4, "not_alternating": 8}),
    ],
)
def test_real_files_are_detected_and_converted(shared_data, relpath, fmt, rows_in, rows_out, dropped):
    frame = _read(shared_data / relpath)
    assert frame.height == rows_in
    kept, counts, metrics = _convert(frame)
    assert metrics == {f"format_{fmt}": float(rows_in)}  # the detected format, once per produced row
    assert kept.height == rows_out and counts == dropped
    assert kept.schema["messages"] == MESSAGES_DTYPE
    assert not set(kept.columns) & set(TRL_RESERVED)
    # every kept conversation obeys the rules: ValidateMessages drops none of them
    assert ValidateMessages().process(kept).get_column("__drop__").null_count() == kept.height


def test_alpaca_prompt_is_instruction_blank_line_input_plus_system_and_history(shared_data):
    records = _raw(shared_data / ALPACA_EN)
    kept, counts, _ = _convert(_frame(records))
    assert not counts and sum(1 for r in records if r["input"].strip()) == 412
    for r, turns in zip(records, kept["messages"].to_list(), strict=True):
        user = f"{r['instruction']}\n\n{r['input']}" if r["input"].strip() else r["instruction"]
        assert turns == [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
    # system + history ([[user, assistant], ...]) from real rows; a broken pair is unconvertible
    pairs = [[r["instruction"], r["output"]] for r in records[:2]]
    rich = [
        {**records[2], "system": "You are terse.", "history": pairs},
        {**records[3], "system": "  ", "history": []},
        {**records[4], "system": "x", "history": [pairs[0], [records[0]["instruction"]]]},
    ]
    kept, counts, _ = _convert(_frame(rich))
    assert counts == {"unconvertible: alpaca history entry is not a [user, assistant] pair": 1}
    first, second = kept["messages"][0].to_list(), kept["messages"][1].to_list()
    assert _roles(first) == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert first[0]["content"] == "You are terse." and first[3]["content"] == records[1]["instruction"]
    assert _roles(second) == ["user", "assistant"]  # a blank system column means no system turn


def test_sharegpt_tool_calls_map_to_assistant_and_tool_turns(shared_data):
    records = _raw(shared_data / GLAIVE)
    kept, counts, _ = _convert(_read(shared_data / GLAIVE))
    assert not counts and kept.height == 300
    mapping = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    for record, turns in zip(records, kept["messages"].to_list(), strict=True):
        assert _roles(turns) == [mapping[t["from"]] for t in record["conversations"]]
        assert [t["content"] for t in turns] == [
            t["value"] for t in record["conversations"]
        ]  # calls verbatim
    tool_turns = sum(t["from"] == "observation" for r in records for t in r["conversations"])
    assert (
        tool_turns == 211
        and kept["messages"].list.eval(pl.element().struct.field("role") == "tool").list.sum().sum() == 211
    )
    assert kept["tools"].to_list() == [r["tools"] for r in records]  # kept as metadata
    assert "conversations" not in kept.columns
    fastchat, _, _ = _convert(_read(shared_data / FASTCHAT))
    assert fastchat["source_id"].to_list() == [r["id"] for r in _raw(shared_data / FASTCHAT)]
    assert "id" not in fastchat.columns


def test_openai_messages_roles_parts_and_reserved_columns(shared_data):
    records = _raw(shared_data / KTO)
    kept, _, _ = _convert(_read(shared_data / KTO))
    assert kept["messages"].to_list() == [
        [{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in records
    ]
    assert "label" not in kept.columns and kept["meta_label"].to_list() == [r["label"] for r in records]
    # role names normalized; OpenAI text parts joined with a blank line; tool calls kept as JSON text
    first = records[0]["messages"]
    variant = {
        "messages": [
            {
                "role": " Human",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": first[0]["content"]}],
            },
            {
                "role": "GPT",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "function", "content": [{"type": "text", "text": "42"}]},
            {"role": "assistant", "content": [{"type": "text", "text": first[1]["content"]}]},
        ]
    }
    kept, counts, _ = _convert(_frame([variant]))
    turns = kept["messages"][0].to_list()
    assert not counts and _roles(turns) == ["user", "assistant", "tool", "assistant"]
    assert turns[0]["content"] == "a\n\n" + first[0]["content"]
    assert json.loads(turns[1]["content"]) == [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


def test_dolly_and_prompt_completion_built_from_real_rows(shared_data):
    records = _raw(shared_data / ALPACA_EN)[:50]
    dolly = [
        {"instruction": r["instruction"], "context": r["input"], "response": r["output"], "category": "x"}
        for r in records
    ]
    kept, counts, metrics = _convert(_frame(dolly))
    assert (
        metrics == {"format_dolly": 50.0}
        and not counts
        and kept.columns == ["messages", "category", "source"]
    )
    i = next(i for i, r in enumerate(records) if r["input"])
    assert kept["messages"][i][0]["content"] == f"{records[i]['instruction']}\n\n{records[i]['input']}"

    strings = [{"prompt": r["instruction"], "completion": r["output"]} for r in records]
    kept, counts, metrics = _convert(_frame(strings))
    assert metrics == {"format_prompt_completion": 50.0} and not counts
    assert kept["messages"][0].to_list() == [
        {"role": "user", "content": records[0]["instruction"]},
        {"role": "assistant", "content": records[0]["output"]},
    ]
    kto = _raw(shared_data / KTO)[:30]
    lists = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in kto]
    kept, counts, _ = _convert(_frame(lists))
    assert not counts and kept["messages"].to_list() == [
        [{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in kto
    ]
    assert not set(kept.columns) & set(TRL_RESERVED)


def test_self_instruct_one_conversation_per_instance(shared_data):
    tasks = _raw(shared_data / SEED_TASKS)
    kept, _, _ = _convert(_read(shared_data / SEED_TASKS))
    assert kept["source_id"].head(2).to_list() == ["seed_task_0#0", "seed_task_1#0"]
    assert set(kept.columns) == {"messages", "name", "is_classification", "source", "source_id"}
    # every seed task has one instance; give some tasks their neighbour's instance too, one none
    merged = [
        {**t, "instances": t["instances"] + tasks[i + 1]["instances"]} for i, t in enumerate(tasks[:10])
    ]
    merged.append({**tasks[10], "instances": []})
    kept, counts, metrics = _convert(_frame(merged))
    assert counts == {"unconvertible: self_instruct task has no instances": 1}
    assert kept.height == 20 and metrics == {"format_self_instruct": 21.0}
    assert kept["source_id"][:2].to_list() == ["seed_task_0#0", "seed_task_0#1"]
    second = kept["messages"][1].to_list()
    instance = tasks[1]["instances"][0]
    prompt = tasks[0]["instruction"] + (f"\n\n{instance['input']}" if instance["input"].strip() else "")
    assert second == [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": instance["output"]},
    ]


def _usable(m: dict) -> bool:
    return not m.get("deleted") and m.get("review_result") is not False


def _ends(m: dict) -> int:
    """Paths ending on an assistant that no longer path extends, counted by a second method:
    assistant messages with no usable assistant below them."""

    def has_assistant_below(node: dict) -> bool:
        return any(
            _usable(c) and (c["role"] == "assistant" or has_assistant_below(c))
            for c in node.get("replies") or []
        )

    own = int(m["role"] == "assistant" and not has_assistant_below(m))
    return own + sum(_ends(c) for c in m.get("replies") or [] if _usable(c))


def test_oasst_best_and_all_paths(shared_data):
    trees = _raw(shared_data / OASST)
    frame = _read(shared_data / OASST)
    best, counts, _ = _convert(frame)
    assert best.height == 100 and not counts
    everything, counts, _ = _convert(frame, oasst_paths="all")
    expected = sum(_ends(t["prompt"]) for t in trees)
    assert everything.height == expected == 546 and not counts
    assert everything["source_id"].n_unique() == 546
    # the best path of tree 0 follows rank 0 at every level
    node, texts = trees[0]["prompt"], []
    while True:
        texts.append(node["text"])
        replies = [r for r in node.get("replies") or [] if r.get("rank") == 0] or (node.get("replies") or [])[
            :1
        ]
        if not replies:
            break
        node = replies[0]
    while len(texts) % 2:  # cut a trailing prompter turn
        texts.pop()
    assert [m["content"] for m in best["messages"][0]] == texts
    assert best["source_id"][0].startswith(trees[0]["message_tree_id"] + "/")
    # deleted and failed-review messages are skipped with their subtrees
    changed = copy.deepcopy(trees[:3])
    top = changed[0]["prompt"]["replies"]
    rank0 = next(r for r in top if r.get("rank") == 0)
    rank1 = next(r for r in top if r.get("rank") == 1)
    rank0["deleted"] = True
    changed[1]["prompt"]["deleted"] = True
    for reply in changed[2]["prompt"]["replies"]:
        reply["review_result"] = False
    kept, counts, _ = _convert(_frame(changed))
    assert counts == {"unconvertible: oasst tree has no usable path ending on an assistant reply": 2}
    assert kept.height == 1 and kept["messages"][0][1]["content"] == rank1["text"]


def test_hh_transcripts_split_into_turns(shared_data):
    records = _raw(shared_data / HH)
    kept, _, _ = _convert(_read(shared_data / HH))
    assert "chosen" not in kept.columns and "meta_rejected" in kept.columns
    first = kept["messages"][0].to_list()
    transcript = records[0]["chosen"]
    assert len(first) == transcript.count("\n\nHuman:") + transcript.count("\n\nAssistant:") == 6
    assert first[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert first[1]["content"] == "Are you looking for practical joke ideas?"
    # the 12 drops are real faults: an empty last answer, or two answers in a row
    empty = [r for r in records if r["chosen"].rstrip().endswith("Assistant:")]
    speakers = [re.findall(r"\n\n(Human|Assistant):", r["chosen"]) for r in records]
    doubled = [s for s in speakers if any(a == b == "Assistant" for a, b in itertools.pairwise(s))]
    assert len(empty) == 4 and len(doubled) == 8
    # the other transcript field reads too; text before the first marker is unconvertible
    rejected, _, metrics = _convert(_read(shared_data / HH), transcript_field="rejected")
    assert metrics == {"format_hh_rlhf": 2312.0} and "meta_chosen" in rejected.columns
    bad = [
        {"chosen": "Preamble" + records[0]["chosen"]},
        {"chosen": records[1]["chosen"].replace("Human:", "H:")},
    ]
    _, counts, _ = _convert(_frame(bad))
    assert counts == {"unconvertible: text before the first Human:/Assistant: marker": 2}


def test_detection_is_by_columns_and_errors_name_what_was_seen(shared_data):
    predictions = _read(shared_data / SFT / "self_instruct_user_oriented_predictions.jsonl.zst").head(100)
    with pytest.raises(DsforgeError) as error:
        ToMessages().process(predictions)
    message = str(error.value)
    assert "steps.0 (to_messages): cannot tell the chat format" in message
    assert "response: String" in message and "alpaca (instruction, output" in message and "hh_rlhf" in message
    kept, counts, metrics = _convert(predictions, fields={"output": "response"})
    assert metrics == {"format_alpaca": 100.0} and kept.height + sum(counts.values()) == 100
    assert "response" not in kept.columns and "meta_prompt" in kept.columns  # `prompt` is TRL-reserved
    renamed = _read(shared_data / ALPACA_EN).rename({"instruction": "question", "output": "answer"})
    kept, _, metrics = _convert(
        renamed, fields={"instruction": "question", "output": "answer"}, keep_columns=False
    )
    assert metrics == {"format_alpaca": 999.0} and kept.columns == ["messages", "source"]
    with pytest.raises(DsforgeError, match="format sharegpt needs a column 'conversations'"):
        ToMessages(format="sharegpt").process(renamed)
    with pytest.raises(ValueError, match="unknown field 'question'"):
        ToMessages(fields={"question": "q"})


def _bad_rows(shared_data: Path) -> list[dict]:
    """Real KTO conversations as OpenAI text parts, six of them broken in one way each."""
    rows = [
        {
            "messages": [
                {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                for m in r["messages"]
            ]
        }
        for r in _raw(shared_data / KTO)[:40]
    ]
    rows[0]["messages"][0]["role"] = "bot"  # unknown_role
    rows[1]["messages"][1]["content"] = [{"type": "text", "text": "   "}]  # empty_message
    rows[2]["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": "file:///cat.png"}})
    rows[3]["messages"] = (
        rows[3]["messages"] + rows[3]["messages"][:1]
    )  # a user turn at the end: ends_on_user
    rows[4]["messages"] = rows[4]["messages"][:1] + rows[4]["messages"]  # user, user, …: not_alternating
    rows[5]["messages"] = []  # no_assistant_turn
    return rows


def test_build_counts_bad_rows_with_their_reasons_and_goes_on(shared_data, write_recipe, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(orjson.dumps(r) for r in _bad_rows(shared_data)))
    recipe = {
        "sources": [
            {"name": "alpaca", "path": str(shared_data / ALPACA_EN)},
            {"name": "glaive", "path": str(shared_data / GLAIVE)},
            {"name": "bad", "path": str(bad)},
            {"name": "hh", "path": str(shared_data / HH)},
        ],
        "steps": [{"step": "to_messages"}, {"step": "validate_messages"}],
    }
    result = build(write_recipe(recipe))
    convert, validate = result.stats["steps"]
    assert convert["rows_in"] == 999 + 300 + 40 + 2312
    assert convert["dropped"] == {
        "unknown_role": 1,
        "non_string_content": 1,
        "empty_message": 1 + 4,
        "ends_on_user": 1,
        "not_alternating": 1 + 8,
        "no_assistant_turn": 1,
    }
    assert convert["metrics"] == {
        "format_alpaca": 999,
        "format_sharegpt": 300,
        "format_openai": 40,
        "format_hh_rlhf": 2312,
    }
    assert convert["rows_out"] == 999 + 300 + 34 + 2300 == validate["rows_out"] and validate["dropped"] == {}
    loaded = datasets.load_dataset(str(result.output))["train"]
    assert loaded.num_rows == 3633 and not set(loaded.column_names) & set(TRL_RESERVED)
    assert loaded.features["messages"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")}
    )
    assert {"tools", "source", "meta_rejected"} <= set(loaded.column_names)
    assert dict(zip(*pl.Series(loaded["source"]).value_counts().to_dict().values(), strict=True)) == {
        "alpaca": 999,
        "glaive": 300,
        "bad": 34,
        "hh": 2300,
    }


def test_validate_messages_on_data_already_in_messages_form(shared_data):
    rows = _bad_rows(shared_data)
    frame = _frame(
        [
            {"messages": [{"role": m["role"], "content": m["content"][0]["text"]} for m in r["messages"]]}
            for r in rows
        ]
    )
    reasons = ValidateMessages().process(frame).get_column("__drop__").to_list()
    # row 2's image part is gone in this plain-text copy, so only five rows break a rule
    assert reasons[:6] == [
        "unknown_role",
        "empty_message",
        None,
        "ends_on_user",
        "not_alternating",
        "no_assistant_turn",
    ]
    assert reasons[6:] == [None] * 34
    numbers = pl.DataFrame(
        {"messages": [[{"role": "user", "content": 1}, {"role": "assistant", "content": 2}]]}
    )
    assert ValidateMessages().process(numbers)["__drop__"].to_list() == ["non_string_content"]
    with pytest.raises(DsforgeError, match="not a list of"):
        ValidateMessages(column="source").process(frame)
