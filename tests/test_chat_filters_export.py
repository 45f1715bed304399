# ruff: noqa: RUF001, RUF003 - typographic apostrophes and CJK punctuation are test data
"""SFT filters, the chat-template step and the trainer exporters, on real conversations."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import zstandard

from dsforge.chat.exporters import LlamaFactorySink, OpenAISink
from dsforge.chat.filters import (
    ChatLength,
    PhraseFilter,
    ResponseRepetition,
    TemplatePlaceholders,
    TruncatedResponse,
)
from dsforge.chat.schema import MESSAGES_DTYPE
from dsforge.chat.template import ChatTemplate
from dsforge.runner import build

DROP = "__drop__"


def read_zst(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return zstandard.ZstdDecompressor().stream_reader(handle).read()


def to_messages(frame: pl.DataFrame, prompt: pl.Expr, answer: str) -> pl.DataFrame:
    """Single-turn conversations from a prompt expression and an answer column (metadata kept)."""
    turns = pl.concat_list(
        pl.struct(role=pl.lit("user"), content=prompt),
        pl.struct(role=pl.lit("assistant"), content=pl.col(answer)),
    )
    return frame.with_columns(messages=turns.cast(MESSAGES_DTYPE))


def alpaca_style(path: Path) -> pl.DataFrame:
    frame = pl.DataFrame(json.loads(read_zst(path)))
    prompt = pl.when(pl.col("input") != "").then(pl.col("instruction") + "\n\n" + pl.col("input"))
    return to_messages(frame, prompt.otherwise(pl.col("instruction")), "output").select("messages")


@pytest.fixture(scope="module")
def alpaca(shared_data: Path) -> pl.DataFrame:
    return alpaca_style(shared_data / "sft/llamafactory_alpaca_en_demo.json.zst")


@pytest.fixture(scope="module")
def identity(shared_data: Path) -> pl.DataFrame:
    return alpaca_style(shared_data / "sft/llamafactory_identity.json.zst")


@pytest.fixture(scope="module")
def alpaca_eval(shared_data: Path) -> pl.DataFrame:
    frame = pl.read_ndjson(io.BytesIO(read_zst(shared_data / "prefs/alpaca_eval_model_outputs.jsonl.zst")))
    return to_messages(frame, pl.col("instruction"), "output").select("messages", "generator")


@pytest.fixture(scope="module")
def kto(shared_data: Path) -> pl.DataFrame:
    frame = pl.DataFrame(json.loads(read_zst(shared_data / "prefs/llamafactory_kto_en_demo.json.zst")))
    return frame.select(pl.col("messages").cast(MESSAGES_DTYPE))


def reasons(step, frame: pl.DataFrame) -> dict:
    out = step.process(frame)
    return dict(out.get_column(DROP).drop_nulls().value_counts().iter_rows()) if DROP in out.columns else {}


def last_answer(frame: pl.DataFrame) -> list[str]:
    return [m[-1]["content"] for m in frame.get_column("messages").to_list()]


# --------------------------------------------------------------------------- filters
def test_template_placeholders_on_identity_and_alpaca(identity, alpaca, kto):
    out = TemplatePlaceholders().process(identity)
    # independent check: every identity answer with a {{...}} slot, and no other
    expected = [bool(re.search(r"\{\{\w+\}\}", a)) for a in last_answer(identity)]
    assert out.get_column(DROP).is_not_null().to_list() == expected
    assert sum(expected) == 85
    assert set(out.get_column("__dropped__placeholder").drop_nulls()) == {"{{name}}", "{{author}}"}
    assert reasons(TemplatePlaceholders(), alpaca) == {"placeholder": 1}  # "[insert date]"
    # {{ github.repository }} twice (GitHub Actions expressions) and one {x_n}
    assert reasons(TemplatePlaceholders(), kto) == {"placeholder": 3}
    assert reasons(TemplatePlaceholders(kinds=["double_brace"]), kto) == {"placeholder": 2}


def test_placeholders_in_code_are_not_slots():
    code = "Use:\n```python\nprint(f'{name}')\n```\nand `{{ var }}` in Jinja."
    rows = [
        [{"role": "user", "content": "Show me."}, {"role": "assistant", "content": text}]
        for text in (code, "Dear <YOUR_NAME>, see {name}.", r"Let $\frac{a}{b}$ be {x} and x^{2}.")
    ]
    out = TemplatePlaceholders().process(
        pl.DataFrame({"messages": rows}, schema={"messages": MESSAGES_DTYPE})
    )
    assert out.get_column("__dropped__placeholder").to_list() == [None, "<YOUR_NAME>", "{x}"]


def test_phrase_filter_refusals_and_disclaimers(alpaca_eval, alpaca, identity, tmp_path):
    out = PhraseFilter().process(alpaca_eval)
    counts = out.group_by("generator", DROP).len().filter(pl.col(DROP).is_not_null())
    table = {(g, r): n for g, r, n in counts.iter_rows()}
    assert table[("llama-2-7b-chat-hf", "phrase:refusal")] == 30
    assert table[("gpt4_1106_preview", "phrase:cutoff")] == 21
    assert table[("tulu-2-dpo-70b", "phrase:ai_disclaimer")] == 68
    matched = out.filter(pl.col("generator") == "llama-2-70b-chat-hf", pl.col(DROP) == "phrase:refusal")
    assert matched.get_column("__dropped__matched_phrase").to_list() == [
        "I’m sorry, but I cannot",  # typographic apostrophe matched by the plain-quote phrase
        "I cannot fulfill your request",
    ]
    assert reasons(PhraseFilter(), alpaca) == {
        "phrase:ai_disclaimer": 20,
        "phrase:refusal": 3,
        "phrase:identity": 1,
    }
    # user phrases and phrase files, on the user side
    (tmp_path / "greetings.txt").write_text("# mine\nre:^(?:hi|hello)\\b\n", encoding="utf-8")
    step = PhraseFilter(
        packs=[], phrases=["Rewrite"], phrase_files=[str(tmp_path / "greetings.txt")], roles=["user"]
    )
    prompts = [m[0]["content"] for m in alpaca.get_column("messages").to_list()]
    assert reasons(step, alpaca) == {
        "phrase:custom": sum(bool(re.search(r"(?i)\brewrite\b", p)) for p in prompts)
    }
    greetings = [m[0]["content"] for m in identity.get_column("messages").to_list()]
    expected = sum(bool(re.match(r"(?i)(hi|hello)\b", p)) for p in greetings)
    assert expected > 0 and reasons(step, identity) == {"phrase:greetings": expected}


def test_response_repetition_flags_loops(kto, alpaca, alpaca_eval):
    assert reasons(ResponseRepetition(), kto) == {"repetition:4-grams": 6, "repetition:lines": 3}
    assert reasons(ResponseRepetition(), alpaca) == {"repetition:4-grams": 1, "repetition:lines": 1}
    looping = [{"role": "user", "content": "Sing."}, {"role": "assistant", "content": "la la la " * 30}]
    fine = [
        {"role": "user", "content": "Sing."},
        {"role": "assistant", "content": " ".join(f"w{i}" for i in range(60))},
    ]
    frame = pl.DataFrame({"messages": [looping, fine]}, schema={"messages": MESSAGES_DTYPE})
    assert ResponseRepetition().process(frame).get_column(DROP).to_list() == ["repetition:4-grams", None]
    assert (
        ResponseRepetition(max_dup_ngram_frac=None, max_dup_line_frac=None).process(frame)[DROP].null_count()
        == 2
    )


def test_truncated_response_on_gamed_outputs(alpaca_eval, alpaca, shared_data):
    gamed = alpaca_eval.filter(pl.col("generator") == "gpt4_gamed")
    strict = TruncatedResponse(short_answer_words=0).process(gamed)
    # gpt4_gamed answers are mostly cut at 10 characters ("Many famou"); "Of course!" is complete
    assert strict.get_column(DROP).value_counts().sort(DROP).rows() == [
        (None, 147),
        ("truncated:open_code_fence", 1),
        ("truncated:unfinished_sentence", 657),
    ]
    kept = set(last_answer(strict.filter(pl.col(DROP).is_null())))
    assert {"Of course!", "Certainly!"} <= kept and "Many famou" not in kept
    out = TruncatedResponse().process(alpaca)
    dropped = last_answer(out.filter(pl.col(DROP).is_not_null()))
    assert len(dropped) == 10
    assert any(a.endswith("Then we reverse") for a in dropped)
    zh = alpaca_style(shared_data / "sft/llamafactory_alpaca_zh_demo.json.zst")
    assert TruncatedResponse().process(zh).get_column(DROP).drop_nulls().len() == 4  # 。！？ end sentences


def test_chat_length_chars_and_tokens(alpaca, identity, shared_data):
    from tokenizers import Tokenizer

    assert reasons(ChatLength(min_turn={"assistant": 2}, max_total=3000), alpaca) == {
        "min_turn_chars:assistant": 1
    }
    step = ChatLength(tokenizer=str(shared_data / "tokenizers/gpt2"), max_turn={"user": 300}, max_total=512)
    assert reasons(step, alpaca) == {"max_total_tokens": 15}
    gpt2 = Tokenizer.from_file(str(shared_data / "tokenizers/gpt2/tokenizer.json"))
    totals = [
        sum(len(gpt2.encode(t["content"]).ids) for t in m) for m in alpaca.get_column("messages").to_list()
    ]
    assert sum(t > 512 for t in totals) == 15
    answers = [len(a) for a in last_answer(identity)]
    assert reasons(ChatLength(max_turn=80), identity) == {
        "max_turn_chars:assistant": sum(n > 80 for n in answers)
    }


# --------------------------------------------------------------------------- chat_template
ALTERNATION_ERROR = "template_error: Conversation roles must alternate user/assistant/user/assistant/..."


@pytest.mark.parametrize("template", ["chatml.jinja", "zephyr.jinja", "llama-3-instruct.jinja", None])
def test_chat_template_counts_and_drops(template, kto, shared_data):
    from transformers import AutoTokenizer

    templates = shared_data / "chat_templates"
    tokenizer_dir = shared_data / "tokenizers" / ("gpt2" if template else "phi-3-mini")
    params = {"tokenizer": str(tokenizer_dir), "num_tokens": True, "assistant_mask": True, "max_tokens": 600}
    if template:
        params |= {"template": str(templates / template), "compact_template": True}
    step = ChatTemplate(**params)
    double_user = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    frame = pl.concat([kto.head(40), pl.DataFrame({"messages": [double_user]}, schema=kto.schema)])
    out = step.process(frame)
    if template:  # the curated templates refuse user, user; phi-3's own template renders it
        assert out.get_column(DROP)[-1] == ALTERNATION_ERROR
    kept = out.filter(pl.col(DROP).is_null())
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    if template:
        reference.chat_template = (templates / template).read_text().replace("    ", "").replace("\n", "")
    for row in kept.head(5).iter_rows(named=True):
        ids = reference.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert row["num_tokens"] == len(ids) <= 600
        masked = [i for i, m in zip(ids, row["assistant_masks"], strict=True) if m]
        answer = reference.decode(masked)
        assert answer.strip().startswith(row["messages"][-1]["content"].strip()[:40])
        assert row["messages"][0]["content"].strip()[:40] not in answer
    too_long = out.filter(pl.col(DROP) == "too_many_tokens")
    assert too_long.height > 0 and too_long.get_column("num_tokens").min() > 600


def test_generation_tag_mask_agrees_with_prefix_mask(kto, shared_data):
    """SmolLM3's template marks assistant turns with {% generation %}; without the tags the prefix
    method must find the same tokens, except the role header the tags also cover."""
    tokenizer = str(shared_data / "tokenizers/phi-3-mini")
    template = str(shared_data / "chat_templates/from_model_repos/smollm3.jinja")
    tagged = ChatTemplate(tokenizer=tokenizer, template=template, assistant_mask=True, input_ids=True)
    assert tagged.uses_generation_tags
    by_tags = tagged.process(kto.head(20))
    untagged = ChatTemplate(tokenizer=tokenizer, template=template, assistant_mask=True, input_ids=True)
    untagged.setup()
    untagged._template = re.sub(r"\{%-?\s*(?:end)?generation\s*-?%\}", "", untagged._template)
    untagged._tokenizer.chat_template = untagged._template
    assert not untagged.uses_generation_tags
    by_prefix = untagged.process(kto.head(20))
    assert by_tags.get_column("input_ids").to_list() == by_prefix.get_column("input_ids").to_list()
    decode = untagged._tokenizer.decode
    for ids, tags, prefix in zip(
        by_tags["input_ids"].to_list(),
        by_tags["assistant_masks"].to_list(),
        by_prefix["assistant_masks"].to_list(),
        strict=True,
    ):
        assert sum(prefix) > 0 and all(t >= p for t, p in zip(tags, prefix, strict=True))
        extra = decode([i for i, t, p in zip(ids, tags, prefix, strict=True) if t and not p])
        assert extra.replace("<|im_start|>assistant", "").strip() == ""


def test_template_only_validation_drops_unrenderable(shared_data, kto):
    step = ChatTemplate(
        template=str(shared_data / "chat_templates/from_model_repos/qwen2.5.tokenizer_config.json")
    )
    assert reasons(step, kto.head(30)) == {}
    gemma = ChatTemplate(template=str(shared_data / "chat_templates/gemma-it.jinja"), compact_template=True)
    system_twice = [{"role": "system", "content": "s"}, {"role": "system", "content": "t"}]
    frame = pl.concat([kto.head(3), pl.DataFrame({"messages": [system_twice]}, schema=kto.schema)])
    assert reasons(gemma, frame) == {ALTERNATION_ERROR: 1}


# --------------------------------------------------------------------------- builds and exporters
def kto_recipe(shared_data: Path, output: dict, steps: list | None = None) -> dict:
    return {
        "sources": [
            {"path": str(shared_data / "prefs/llamafactory_kto_en_demo.json.zst"), "columns": ["messages"]}
        ],
        "steps": steps
        if steps is not None
        else [{"step": "template_placeholders"}, {"step": "truncated_response"}],
        "output": output,
    }


def test_trl_export_trains_with_sft_trainer(shared_data, write_recipe, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    chatml = (shared_data / "chat_templates/chatml.jinja").read_text().replace("    ", "").replace("\n", "")
    model_dir = tmp_path / "model"
    shutil.copytree(shared_data / "models/tiny-random-gpt2", model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = chatml
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)
    steps = [
        {"step": "template_placeholders"},
        {"step": "chat_template", "tokenizer": str(model_dir), "max_tokens": 512, "num_tokens": True},
    ]
    result = build(write_recipe(kto_recipe(shared_data, {"format": "trl"}, steps)))
    funnel = {s["step"]: s for s in result.stats["steps"]}
    assert funnel["chat_template"]["metrics"]["tokens"] > 0
    data = datasets.load_dataset(str(result.output), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert data.features["messages"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")}
    )
    assert (
        data.num_rows == result.stats["output"]["splits"]["train"] == funnel["chat_template"]["rows_out"] > 50
    )
    config = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        max_length=512,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0


def check_sharegpt(record: dict) -> None:
    """LLaMA-Factory data/README: conversations of {from, value}; human/observation at odd
    positions, gpt/function_call at even ones; system and tools are strings."""
    turns = record["conversations"]
    assert turns and len(turns) % 2 == 0
    for position, turn in enumerate(turns, start=1):
        assert set(turn) == {"from", "value"} and isinstance(turn["value"], str)
        allowed = {"human", "observation"} if position % 2 else {"gpt", "function_call"}
        assert turn["from"] in allowed
    assert isinstance(record.get("system", ""), str)


def check_openai(record: dict) -> None:
    """OpenAI fine-tuning chat format: only "messages"; roles system/user/assistant; string contents."""
    assert set(record) == {"messages"}
    roles = [m["role"] for m in record["messages"]]
    assert all(
        set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"]
        for m in record["messages"]
    )
    assert set(roles) <= {"system", "user", "assistant"} and "assistant" in roles


def test_llamafactory_and_openai_exports(shared_data, write_recipe, tmp_path):
    from transformers import AutoTokenizer

    phi3 = AutoTokenizer.from_pretrained(shared_data / "tokenizers/phi-3-mini")
    result = build(
        write_recipe(kto_recipe(shared_data, {"format": "llamafactory", "dataset_name": "kto_demo"}))
    )
    out = result.output
    info = json.loads((out / "dataset_info.json").read_text())
    entry = info["kto_demo"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {
        "messages": "conversations",
        "system": "system",
    }
    assert entry["tags"]["user_tag"] == "human" and entry["tags"]["assistant_tag"] == "gpt"
    lines = (out / entry["file_name"]).read_text().splitlines()
    rows = result.stats["output"]["splits"]["train"]
    assert len(lines) == rows and rows == result.stats["steps"][-1]["rows_out"]
    back = {"human": "user", "gpt": "assistant", "observation": "tool"}
    for line in lines:
        record = json.loads(line)
        check_sharegpt(record)
        messages = [{"role": back[t["from"]], "content": t["value"]} for t in record["conversations"]]
        assert phi3.apply_chat_template(messages, tokenize=False).count("<|assistant|>") == len(messages) // 2

    result = build(
        write_recipe(kto_recipe(shared_data, {"format": "openai"}), name="openai.yaml"), force=True
    )
    lines = (result.output / "data/train-00000-of-00001.jsonl").read_text().splitlines()
    for line in lines:
        record = json.loads(line)
        check_openai(record)
        phi3.apply_chat_template(record["messages"], tokenize=False)
    assert len(lines) == result.stats["output"]["splits"]["train"] == rows


def test_exporters_skip_what_they_cannot_express():
    from dsforge.chat.exporters import SKIP_COLUMN

    rows = [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
        [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "{}"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}],
        [],
    ]
    frame = pl.DataFrame({"messages": rows}, schema={"messages": MESSAGES_DTYPE})
    lf = LlamaFactorySink().convert(frame)
    assert lf.get_column(SKIP_COLUMN).to_list() == [
        None,
        "roles_out_of_order",
        "roles_out_of_order",
        None,
        "no_turns",
    ]
    assert lf.get_column("system").to_list()[0] == "Be brief."
    assert lf.get_column("conversations")[0].to_list() == [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."},
    ]
    oa = OpenAISink().convert(frame)
    assert oa.get_column(SKIP_COLUMN).to_list() == [
        None,
        "no_assistant_message",
        "unsupported_role",
        "empty_content",
        "no_turns",
    ]


def test_axolotl_export_writes_config(shared_data, write_recipe):
    import yaml

    result = build(write_recipe(kto_recipe(shared_data, {"format": "axolotl", "file_format": "jsonl"}, [])))
    config = yaml.safe_load((result.output / "axolotl.yaml").read_text())
    (entry,) = config["datasets"]
    assert entry["type"] == "chat_template" and entry["field_messages"] == "messages"
    assert entry["message_property_mappings"] == {"role": "role", "content": "content"}
    assert entry["ds_type"] == "json" and all((result.output / f).exists() for f in entry["data_files"])
    first = json.loads((result.output / entry["data_files"][0]).read_text().splitlines()[0])
    assert [set(m) for m in first["messages"]] == [{"role", "content"}] * len(first["messages"])
