"""Preference exporters and the DPO recipe, on real preference pairs and with the real DPOTrainer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import zstandard
from helpers import two_step_dpo_config

from dsforge.chat.schema import MESSAGES_DTYPE
from dsforge.prefs.exporters import (
    SKIP_COLUMN,
    AxolotlDpoSink,
    LlamaFactoryRankingSink,
    OpenAIDpoSink,
)
from dsforge.runner import build

REPO = Path(__file__).resolve().parents[1]
#: LLaMA-Factory's ShareGPT tags back to canonical roles.
FROM_SHAREGPT = {"human": "user", "gpt": "assistant", "system": "system", "observation": "tool"}


def read_zst(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return zstandard.ZstdDecompressor().stream_reader(handle).read()


def _message(tagged: pl.Expr) -> pl.Expr:
    return pl.struct(
        role=tagged.struct.field("from").replace_strict(FROM_SHAREGPT, default=None),
        content=tagged.struct.field("value"),
    )


def canonical_llamafactory(path: Path) -> pl.DataFrame:
    """LLaMA-Factory's ShareGPT pairs as canonical rows, built independently of the adapters."""
    frame = pl.DataFrame(json.loads(read_zst(path)))
    return frame.select(
        prompt=pl.col("conversations").list.eval(_message(pl.element())).cast(MESSAGES_DTYPE),
        chosen=pl.concat_list(_message(pl.col("chosen"))).cast(MESSAGES_DTYPE),
        rejected=pl.concat_list(_message(pl.col("rejected"))).cast(MESSAGES_DTYPE),
        source=pl.lit("llamafactory_dpo_en"),
        chosen_model=pl.lit(None, dtype=pl.String),
        rejected_model=pl.lit(None, dtype=pl.String),
        chosen_score=pl.lit(None, dtype=pl.Float64),
        rejected_score=pl.lit(None, dtype=pl.Float64),
        margin=pl.lit(None, dtype=pl.Float64),
    )


@pytest.fixture(scope="module")
def lf_raw(shared_data: Path) -> list[dict]:
    return json.loads(read_zst(shared_data / "prefs/llamafactory_dpo_en_demo.json.zst"))


@pytest.fixture(scope="module")
def lf_pairs(shared_data: Path) -> pl.DataFrame:
    return canonical_llamafactory(shared_data / "prefs/llamafactory_dpo_en_demo.json.zst")


@pytest.fixture
def pairs_recipe(lf_pairs: pl.DataFrame, tmp_path: Path):
    """A recipe over the real pairs (as a Parquet source): prompt dedup, prompt-grouped split."""
    source = tmp_path / "pairs.parquet"
    lf_pairs.write_parquet(source)

    def recipe(output: dict) -> dict:
        return {
            "sources": [{"path": str(source)}],
            "steps": [
                {"step": "dedup_exact", "columns": ["prompt"], "roles": ["user"]},
                {"step": "split", "by": ["prompt"], "roles": ["user"], "test_size": 0.1},
            ],
            "output": output,
        }

    return recipe


@pytest.fixture(scope="module")
def chatml_model(shared_data: Path, tmp_path_factory) -> Path:
    """The tiny GPT-2 with a ChatML template and a pad token, saved in a scratch folder."""
    from transformers import AutoTokenizer

    chatml = (shared_data / "chat_templates/chatml.jinja").read_text().replace("    ", "").replace("\n", "")
    model_dir = tmp_path_factory.mktemp("model") / "tiny-gpt2"
    shutil.copytree(shared_data / "models/tiny-random-gpt2", model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = chatml
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)
    return model_dir


def render(tokenizer, prompt: list[dict], answer: dict) -> str:
    """Prompt + answer through the chat template: the prompt renders as a prefix (with the
    generation prompt) and the answer follows it."""
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*prompt, answer], tokenize=False)
    assert full.startswith(head) and answer["content"].strip() in full[len(head) :]
    return full


# --------------------------------------------------------------------------- TRL (parquet)
def test_parquet_pairs_train_with_dpo_trainer(pairs_recipe, write_recipe, chatml_model, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    result = build(write_recipe(pairs_recipe({"format": "parquet"})))
    data = datasets.load_dataset(str(result.output), cache_dir=str(tmp_path / "hf-cache"))
    turn = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    for column in ("prompt", "chosen", "rejected"):
        assert data["train"].features[column] == turn
    splits = result.stats["output"]["splits"]
    assert {k: v.num_rows for k, v in data.items()} == splits and splits["test"] > 0
    # no prompt sits in both splits (the split is grouped by the user turns)
    train_prompts = {json.dumps(p) for p in data["train"]["prompt"]}
    assert not train_prompts & {json.dumps(p) for p in data["test"]["prompt"]}
    tokenizer = AutoTokenizer.from_pretrained(chatml_model)
    config = two_step_dpo_config(tmp_path / "run")
    model = AutoModelForCausalLM.from_pretrained(chatml_model)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # TRL loads a frozen copy of the policy as the reference
        args=config,
        train_dataset=data["train"].select(range(8)),
        processing_class=tokenizer,
    )
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all("rewards/chosen" in entry for entry in logged)


# --------------------------------------------------------------------------- LLaMA-Factory
def check_ranking_record(record: dict) -> None:
    """LLaMA-Factory data/README, preference (ranking) ShareGPT: ``conversations`` of {from, value}
    with human/observation at odd positions and gpt/function_call at even ones, ending with a human
    turn; ``chosen`` and ``rejected`` are one {from: gpt, value} message each; system is a string."""
    turns = record["conversations"]
    assert turns and len(turns) % 2 == 1
    for position, turn in enumerate(turns, start=1):
        assert set(turn) == {"from", "value"} and isinstance(turn["value"], str) and turn["value"]
        assert turn["from"] in ({"human", "observation"} if position % 2 else {"gpt", "function_call"})
    assert turns[-1]["from"] == "human"
    for answer in (record["chosen"], record["rejected"]):
        assert isinstance(answer, dict) and set(answer) == {"from", "value"}
        assert answer["from"] == "gpt" and isinstance(answer["value"], str) and answer["value"]
    assert isinstance(record["system"], str)


def test_llamafactory_ranking_export(pairs_recipe, write_recipe, lf_raw, chatml_model):
    from transformers import AutoTokenizer

    result = build(write_recipe(pairs_recipe({"format": "llamafactory_ranking", "dataset_name": "pairs"})))
    info = json.loads((result.output / "dataset_info.json").read_text())
    assert sorted(info) == ["pairs", "pairs_test"] == result.stats["output"]["datasets"]
    entry = info["pairs"]
    assert entry["ranking"] is True and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {
        "messages": "conversations",
        "chosen": "chosen",
        "rejected": "rejected",
        "system": "system",
    }
    assert entry["tags"]["role_tag"] == "from" and entry["tags"]["content_tag"] == "value"
    assert entry["tags"]["user_tag"] == "human" and entry["tags"]["assistant_tag"] == "gpt"
    # the source is LLaMA-Factory's own demo: every exported pair is one of its records, the
    # system turn (kept inside conversations there) moved to the system column
    originals = {json.dumps([r["conversations"], r["chosen"], r["rejected"]]) for r in lf_raw}
    tokenizer = AutoTokenizer.from_pretrained(chatml_model)
    rows = 0
    for split, name in (("train", "pairs"), ("test", "pairs_test")):
        lines = (result.output / info[name]["file_name"]).read_text().splitlines()
        assert len(lines) == result.stats["output"]["splits"][split] > 0
        rows += len(lines)
        for line in lines:
            record = json.loads(line)
            check_ranking_record(record)
            system = [{"from": "system", "value": record["system"]}] if record["system"] else []
            key = [system + record["conversations"], record["chosen"], record["rejected"]]
            assert json.dumps(key) in originals
            assert record["source"] == "pairs" and "margin" in record  # metadata travels beside the pair
            prompt = [{"role": t["from"], "content": t["value"]} for t in key[0]]
            prompt = [{**m, "role": FROM_SHAREGPT[m["role"]]} for m in prompt]
            for answer in (record["chosen"], record["rejected"]):
                render(tokenizer, prompt, {"role": "assistant", "content": answer["value"]})
    assert rows == result.stats["steps"][-1]["rows_out"] and result.stats["output"]["skipped"] == {}


# --------------------------------------------------------------------------- OpenAI
def check_openai_dpo(record: dict) -> None:
    """OpenAI preference fine-tuning JSONL: input.messages (system/user/assistant, ending with the
    user turn to answer), preferred_output and non_preferred_output one assistant message each."""
    assert set(record) == {"input", "preferred_output", "non_preferred_output"}
    assert set(record["input"]) == {"messages"}
    messages = record["input"]["messages"]
    assert messages and messages[-1]["role"] == "user"
    assert {m["role"] for m in messages} <= {"system", "user", "assistant"}
    answers = []
    for key in ("preferred_output", "non_preferred_output"):
        (answer,) = record[key]
        assert answer["role"] == "assistant"
        answers.append(answer)
    for message in [*messages, *answers]:
        assert (
            set(message) == {"role", "content"} and isinstance(message["content"], str) and message["content"]
        )


def test_openai_dpo_export(pairs_recipe, write_recipe, chatml_model, lf_pairs):
    from transformers import AutoTokenizer

    result = build(write_recipe(pairs_recipe({"format": "openai_dpo"})))
    tokenizer = AutoTokenizer.from_pretrained(chatml_model)
    splits = result.stats["output"]["splits"]
    assert sum(splits.values()) == result.stats["steps"][-1]["rows_out"]
    seen = 0
    for split, count in splits.items():
        lines = (result.output / f"data/{split}-00000-of-00001.jsonl").read_text().splitlines()
        assert len(lines) == count
        for line in lines:
            record = json.loads(line)
            check_openai_dpo(record)
            prompt = record["input"]["messages"]
            render(tokenizer, prompt, record["preferred_output"][0])
            render(tokenizer, prompt, record["non_preferred_output"][0])
            seen += 1
    # an independent look at the source: how many distinct prompts (the dedup key) it holds
    users = pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
    distinct = lf_pairs.select(pl.col("prompt").list.eval(users)).n_unique()
    assert seen == distinct


# --------------------------------------------------------------------------- axolotl
def test_axolotl_dpo_export_config(pairs_recipe, write_recipe, tmp_path):
    import datasets
    import yaml

    result = build(write_recipe(pairs_recipe({"format": "axolotl_dpo", "file_format": "jsonl"})))
    config = yaml.safe_load((result.output / "axolotl.yaml").read_text())
    assert config["rl"] == "dpo"
    (entry,) = config["datasets"]
    (evaluation,) = config["test_datasets"]
    assert entry["type"] == "chat_template.default" and entry["ds_type"] == "json"
    assert (entry["field_messages"], entry["field_chosen"], entry["field_rejected"]) == (
        "prompt",
        "chosen",
        "rejected",
    )
    assert entry["message_property_mappings"] == {"role": "role", "content": "content"}
    files = {
        split: [str(result.output / f) for f in e["data_files"]]
        for split, e in (("train", entry), ("test", evaluation))
    }
    data = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    assert {k: v.num_rows for k, v in data.items()} == result.stats["output"]["splits"]
    # what axolotl's chat_template.default reads: a list of messages, and the last message of each answer
    mapping = entry["message_property_mappings"]
    for row in data["train"].select(range(20)):
        prompt = row[entry["field_messages"]]
        assert prompt[-1][mapping["role"]] == "user"
        for field in (entry["field_chosen"], entry["field_rejected"]):
            assert [m[mapping["role"]] for m in row[field]] == ["assistant"]


# --------------------------------------------------------------------------- rules
def test_preference_exporters_skip_what_they_cannot_express(lf_pairs):
    def turns(*pairs: tuple[str, str]) -> list[dict]:
        return [{"role": r, "content": c} for r, c in pairs]

    good = lf_pairs.row(0, named=True)
    answer = turns(("assistant", "Fine."))
    bad = [
        (turns(("system", "Be brief."), ("user", "Hi")), answer, answer),  # kept everywhere
        ([], answer, answer),
        (turns(("user", "Hi"), ("assistant", "Hello")), answer, answer),
        (turns(("user", "Hi")), [], answer),
        (turns(("user", "Hi")), answer, answer * 2),
        (turns(("user", "Hi")), turns(("user", "Fine.")), answer),
        (turns(("user", "Hi")), turns(("assistant", " ")), answer),
        (turns(("user", "Hi"), ("user", "Hi?")), answer, answer),
        (turns(("user", "Weather?"), ("tool", "{}"), ("user", "So?")), answer, answer),
    ]
    rows = [{**good, "prompt": p, "chosen": c, "rejected": r} for p, c, r in bad]
    frame = pl.concat([lf_pairs.head(0), pl.DataFrame(rows, schema=lf_pairs.schema)])
    common = [
        None,
        "no_prompt",
        "prompt_not_ending_with_user",
        "chosen_not_one_message",
        "rejected_not_one_message",
        "answer_not_assistant",
        "empty_content",
    ]
    lf = LlamaFactoryRankingSink().convert(frame)
    assert lf.get_column(SKIP_COLUMN).to_list() == [*common, "roles_out_of_order", "roles_out_of_order"]
    assert lf.row(0, named=True)["system"] == "Be brief."
    assert lf.row(0, named=True)["conversations"] == [{"from": "human", "value": "Hi"}]
    oa = OpenAIDpoSink().convert(frame)
    assert oa.get_column(SKIP_COLUMN).to_list() == [*common, None, "unsupported_role"]
    ax = AxolotlDpoSink().convert(frame)
    assert ax.get_column(SKIP_COLUMN).to_list() == [*common, None, None]
    # the real pairs need no skipping
    for sink in (LlamaFactoryRankingSink(), OpenAIDpoSink(), AxolotlDpoSink()):
        assert sink.convert(lf_pairs).get_column(SKIP_COLUMN).null_count() == lf_pairs.height


def test_preference_sinks_name_missing_pairs(write_recipe, shared_data):
    from dsforge.errors import DsforgeError

    recipe = {
        "sources": [{"path": str(shared_data / "prefs/llamafactory_kto_en_demo.json.zst")}],
        "output": {"format": "openai_dpo"},
    }
    with pytest.raises(DsforgeError, match=r"needs preference pairs.*'prompt' is missing"):
        build(write_recipe(recipe))


# --------------------------------------------------------------------------- recipes/dpo.yaml
def test_dpo_recipe_builds_and_explains_every_pair(tmp_path):
    import datasets

    out = tmp_path / "dpo"
    result = build(REPO / "recipes/dpo.yaml", output=str(out), overrides=["output.keep_dropped=true"])
    stats = result.stats
    read = {s["name"]: s["rows_read"] for s in stats["sources"]}
    assert read == {
        "hh_rlhf_harmless": 2312,
        "llamafactory_dpo_en": 300,
        "llamafactory_dpo_zh": 300,
        "alpaca_eval_outputs": 19313,
        "arena_hard_answers": 1500,
    }
    steps = {s["step"]: s for s in stats["steps"]}
    assert steps["to_pairs"]["rows_in"] == sum(read.values())
    assert steps["to_pairs"]["metrics"] == {"pair_format_hh_rlhf": 2312, "pair_format_llamafactory": 600}
    # every row that left was dropped by a step that names why, and the dropped rows say so too
    for step in stats["steps"]:
        assert all(reason for reason in step["dropped"])
        if step["step"] == "make_pairs":  # completions in, pairs out: its drops count both units
            assert any(k.startswith("margin_bin_") for k in step["metrics"]), step
            continue
        assert step["rows_in"] - step["rows_out"] == sum(step["dropped"].values()), step
    assert set(steps["dedup_exact"]["dropped"]) == {"duplicate"}
    assert set(steps["filter_sql"]["dropped"]) == {"length_ratio_above_3"}
    assert all(r.startswith("contaminated:") for r in steps["decontaminate"]["dropped"])
    files = sorted(Path(f"{out}.dropped").glob("*.parquet"))
    dropped = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    by_step = dropped.group_by("drop_step", "drop_reason").len()
    expected = {
        (f"{s['index']}.{s['step']}", reason, n) for s in stats["steps"] for reason, n in s["dropped"].items()
    }
    assert set(by_step.iter_rows()) == expected and dropped.get_column("drop_reason").null_count() == 0
    contaminated = dropped.filter(pl.col("drop_step").str.ends_with("decontaminate"))
    assert contaminated.get_column("contaminated_items").list.len().min() >= 1
    # the published pairs: canonical, length-capped, split by prompt, loadable
    data = datasets.load_dataset(str(result.output), cache_dir=str(tmp_path / "hf-cache"))
    assert {k: v.num_rows for k, v in data.items()} == stats["output"]["splits"]
    assert sum(stats["output"]["splits"].values()) == stats["steps"][-1]["rows_out"] > 800
    prompts = {}
    for split, rows in data.items():
        for row in rows:
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
            assert len(row["chosen"][0]["content"]) <= 3 * len(row["rejected"][0]["content"])
            users = json.dumps([m["content"] for m in row["prompt"] if m["role"] == "user"])
            assert prompts.setdefault(users, split) == split
    assert set(data["train"]["source"]) == set(read)
    card = (result.output / "README.md").read_text()
    assert "license: other" in card and "LICENSE: mixed" in card and "## Measurements" in card
    assert "pair_format_hh_rlhf" in card and "contaminated_truthfulqa" in card


def test_make_pairs_card_shows_margin_and_length_distributions(shared_data, write_recipe, tmp_path):
    """AlpacaEval outputs paired by the GPT-4-turbo judgments; the card carries make_pairs' bins."""
    outputs = pl.read_ndjson(read_zst(shared_data / "prefs/alpaca_eval_model_outputs.jsonl.zst"))
    judged = ["gpt4_1106_preview", "alpaca-7b", "falcon-7b-instruct", "vicuna-7b", "gemma-7b-it", "phi-2"]
    prompts = outputs.select("instruction").unique(maintain_order=True).head(60)
    slice_path = tmp_path / "alpaca_eval.jsonl"
    outputs.join(prompts, on="instruction", how="semi").filter(
        pl.col("generator").is_in(judged)
    ).write_ndjson(slice_path)
    recipe = {
        "sources": [{"name": "alpaca_eval", "path": str(slice_path)}],
        "steps": [
            {
                "step": "make_pairs",
                "prompt": "instruction",
                "completion": "output",
                "model": "generator",
                "judgments": {
                    "path": str(shared_data / "prefs/alpaca_eval_gpt4turbo_annotations.jsonl.zst"),
                    "format": "alpaca_eval",
                },
                "policy": "all_pairs_above_margin",
                "min_margin": 0.1,
                "max_length_ratio": 3.0,
            },
            {"step": "split", "by": ["prompt"], "roles": ["user"], "test_size": 0.2},
        ],
        "output": {"format": "openai_dpo"},
    }
    result = build(write_recipe(recipe))
    make_pairs = result.stats["steps"][0]
    metrics = make_pairs["metrics"]
    margins = {k: v for k, v in metrics.items() if k.startswith("margin_bin_")}
    lengths = {k: v for k, v in metrics.items() if k.startswith("length_diff_bin_")}
    kept = make_pairs["rows_out"]
    assert kept > 20, (make_pairs["dropped"], make_pairs["metrics"])
    assert sum(margins.values()) == sum(lengths.values()) == kept
    assert metrics["margin_bin_0_to_0.1"] == 0  # min_margin 0.1
    assert all(reason for reason in make_pairs["dropped"])
    assert {"below_margin", "length_ratio"} <= set(make_pairs["dropped"])
    card = (result.output / "README.md").read_text()
    for name in [*margins, *lengths, "chosen_longer"]:
        assert f"`{name}`" in card
    lines = [
        json.loads(line)
        for split in result.stats["output"]["splits"]
        for line in (result.output / f"data/{split}-00000-of-00001.jsonl").read_text().splitlines()
    ]
    assert len(lines) == kept
    for record in lines:
        check_openai_dpo(record)
