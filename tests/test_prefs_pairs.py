"""Preference inputs on real data: to_pairs formats (HH-RLHF, LLaMA-Factory, TRL, strings) and
make_pairs policies (AlpacaEval outputs scored by the AlpacaEval GPT-4-turbo judgments)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import datasets
import orjson
import polars as pl
import pytest
from helpers import read_records

from dsforge.runner import build

PREFS = Path("prefs")
HH = PREFS / "hh_rlhf_harmless_base_test.jsonl.gz"
LF_EN = PREFS / "llamafactory_dpo_en_demo.json.zst"
LF_ZH = PREFS / "llamafactory_dpo_zh_demo.json.zst"
OUTPUTS = PREFS / "alpaca_eval_model_outputs.jsonl.zst"
ANNOTATIONS = PREFS / "alpaca_eval_gpt4turbo_annotations.jsonl.zst"
GENERATORS = ["gpt4_1106_preview", "alpaca-7b", "falcon-7b-instruct", "vicuna-7b", "gemma-7b-it", "phi-2"]


def _raw(path: Path) -> list[dict]:
    """The file's records parsed independently of dsforge."""
    return read_records(path)


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def _build(write_recipe, source: Path | list[Path], steps: list[dict], seed: int = 0, name: str = "out"):
    """Build through the runner; returns the step stats and the output rows read by datasets."""
    sources = [{"path": str(p)} for p in (source if isinstance(source, list) else [source])]
    recipe = write_recipe({"sources": sources, "steps": steps, "seed": seed}, name=f"{name}.yaml")
    # a unique folder name per build: datasets' cache must never answer with another build's data
    output = recipe.parent / f"{name}-{uuid.uuid4().hex[:8]}"
    result = build(recipe, output=str(output), progress=False)
    rows = datasets.load_dataset(str(result.output))["train"] if result.stats["steps"][-1]["rows_out"] else []
    return result.stats["steps"], list(rows)


def _assert_canonical(rows: list[dict]) -> None:
    """Every row is TRL explicit conversational: prompt ends on user, one assistant turn per side."""
    for row in rows:
        assert isinstance(row["prompt"], list) and row["prompt"], row
        assert row["prompt"][-1]["role"] == "user"
        roles = [t["role"] for t in row["prompt"] if t["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        for side in ("chosen", "rejected"):
            assert len(row[side]) == 1 and row[side][0]["role"] == "assistant"
            assert row[side][0]["content"].strip()
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert set(row) >= {
            "source",
            "chosen_model",
            "rejected_model",
            "chosen_score",
            "rejected_score",
            "margin",
        }


# --------------------------------------------------------------------------- to_pairs
def test_hh_rlhf_every_row_counted(shared_data, write_recipe):
    steps, rows = _build(write_recipe, shared_data / HH, [{"step": "to_pairs"}])
    raw = _raw(shared_data / HH)
    assert steps[0]["rows_in"] == len(raw) == 2312
    assert steps[0]["dropped"] == {"empty_answer": 4, "no_shared_prompt": 5, "prompt_not_alternating": 4}
    assert steps[0]["rows_out"] == len(rows) == 2299
    assert steps[0]["metrics"] == {"pair_format_hh_rlhf": 2312}
    _assert_canonical(rows)
    first = raw[0]
    assert first["chosen"].endswith(rows[0]["chosen"][0]["content"])
    assert first["rejected"].endswith(rows[0]["rejected"][0]["content"])
    assert rows[0]["prompt"][0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}


@pytest.mark.parametrize("relpath", [LF_EN, LF_ZH])
def test_llamafactory_pairs(shared_data, write_recipe, relpath):
    steps, rows = _build(write_recipe, shared_data / relpath, [{"step": "to_pairs"}])
    raw = _raw(shared_data / relpath)
    assert steps[0]["rows_out"] == len(raw) == 300 and steps[0]["dropped"] == {}
    _assert_canonical(rows)
    for record, row in zip(raw, rows, strict=True):
        assert row["chosen"][0]["content"] == record["chosen"]["value"]
        assert row["rejected"][0]["content"] == record["rejected"]["value"]
        assert [t["content"] for t in row["prompt"]] == [t["value"] for t in record["conversations"]]


def test_trl_explicit_implicit_and_strings_agree(shared_data, write_recipe, tmp_path):
    """The same LLaMA-Factory pairs written as TRL explicit, TRL implicit and strings give one result."""
    raw = _raw(shared_data / LF_EN)[:40]
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    conv = [[{"role": role[t["from"]], "content": t["value"]} for t in r["conversations"]] for r in raw]
    answer = [
        {side: [{"role": "assistant", "content": r[side]["value"]}] for side in ("chosen", "rejected")}
        for r in raw
    ]
    explicit = _jsonl(
        tmp_path / "explicit.jsonl", [{"prompt": c, **a} for c, a in zip(conv, answer, strict=True)]
    )
    implicit = _jsonl(
        tmp_path / "implicit.jsonl",
        [
            {"chosen": c + a["chosen"], "rejected": c + a["rejected"]}
            for c, a in zip(conv, answer, strict=True)
        ],
    )
    single = [(r, c) for r, c in zip(raw, conv, strict=True) if len(c) == 1]
    strings = _jsonl(
        tmp_path / "strings.jsonl",
        [
            {"prompt": c[0]["content"], "chosen": r["chosen"]["value"], "rejected": r["rejected"]["value"]}
            for r, c in single
        ],
    )
    _, rows_explicit = _build(write_recipe, explicit, [{"step": "to_pairs"}], name="e")
    _, rows_implicit = _build(write_recipe, implicit, [{"step": "to_pairs", "format": "trl"}], name="i")
    steps, rows_strings = _build(write_recipe, strings, [{"step": "to_pairs"}], name="s")
    assert steps[0]["metrics"] == {"pair_format_strings": len(single)}
    keys = ("prompt", "chosen", "rejected")
    assert [{k: r[k] for k in keys} for r in rows_explicit] == [
        {k: r[k] for k in keys} for r in rows_implicit
    ]
    single_rows = [{k: r[k] for k in keys} for r in rows_explicit if len(r["prompt"]) == 1]
    assert single_rows == [{k: r[k] for k in keys} for r in rows_strings] and len(single_rows) == len(single)
    _assert_canonical(rows_explicit)
    _, rows_implicit_style = _build(
        write_recipe, explicit, [{"step": "to_pairs", "style": "implicit"}], name="x"
    )
    assert "prompt" not in rows_implicit_style[0]
    assert rows_implicit_style[0]["chosen"] == rows_explicit[0]["prompt"] + rows_explicit[0]["chosen"]


def test_bad_pairs_are_counted_and_the_build_goes_on(shared_data, write_recipe, tmp_path):
    hh = _raw(shared_data / HH)[:10]
    broken = [
        {"chosen": "no speaker markers at all", "rejected": hh[0]["rejected"]},  # unparseable transcript
        {"chosen": hh[1]["chosen"], "rejected": hh[1]["rejected"].rsplit("Assistant:", 1)[0] + "Assistant: "},
    ]
    steps, rows = _build(write_recipe, _jsonl(tmp_path / "hh.jsonl", hh[2:] + broken), [{"step": "to_pairs"}])
    assert steps[0]["dropped"] == {"unparseable_transcript": 1, "empty_answer": 1}
    assert len(rows) == 8
    scored = [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away.", "sc": "9", "sr": "2"},
        {"prompt": "Say hi", "chosen": "Hello!", "rejected": "No.", "sc": "great", "sr": "1"},
        {"prompt": "Say hi", "chosen": "Hey!", "rejected": "Hm.", "sc": "3", "sr": "3"},
        {"prompt": "Say hi", "chosen": "Same", "rejected": "Same", "sc": "5", "sr": "1"},
    ]
    fields = {"chosen_score": "sc", "rejected_score": "sr"}
    steps, rows = _build(
        write_recipe, _jsonl(tmp_path / "s.jsonl", scored), [{"step": "to_pairs", "fields": fields}], name="s"
    )
    assert steps[0]["dropped"] == {"unparseable_score": 1, "tie": 1, "identical_answers": 1}
    assert [(r["chosen_score"], r["rejected_score"], r["margin"]) for r in rows] == [(9.0, 2.0, 7.0)]


# --------------------------------------------------------------------------- make_pairs
@pytest.fixture(scope="module")
def alpaca_slice(shared_data, tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    """20 AlpacaEval prompts x 6 generators, with a score column from the GPT-4-turbo judgments
    (preference - 1 = P(beats gpt4_1106_preview); the baseline 0.5), as text like many raw files."""
    outputs = pl.DataFrame(_raw(shared_data / OUTPUTS), infer_schema_length=None)
    prompts = outputs.select("instruction").unique(maintain_order=True).head(20)
    frame = outputs.join(prompts, on="instruction", how="semi").filter(pl.col("generator").is_in(GENERATORS))
    judged = pl.DataFrame(_raw(shared_data / ANNOTATIONS)).select(
        "instruction", pl.col("generator_2").alias("generator"), (pl.col("preference") - 1).alias("score")
    )
    frame = frame.join(judged, on=["instruction", "generator"], how="left").with_columns(
        pl.when(pl.col("generator") == "gpt4_1106_preview")
        .then(0.5)
        .otherwise(pl.col("score"))
        .alias("score")
    )
    assert frame.height == 120 and frame.get_column("score").null_count() == 0
    frame = frame.with_columns(pl.col("score").cast(pl.String)).sort("instruction", "generator")
    path = tmp_path_factory.mktemp("alpaca") / "slice.jsonl"
    frame.write_ndjson(path)
    return path, frame


BASE = {
    "step": "make_pairs",
    "prompt": "instruction",
    "completion": "output",
    "model": "generator",
    "score": "score",
}


def test_best_vs_worst_matches_a_polars_reference(alpaca_slice, write_recipe):
    path, frame = alpaca_slice
    steps, rows = _build(write_recipe, path, [BASE])
    scores = frame.with_columns(pl.col("score").cast(pl.Float64))
    best = (
        scores.sort("score", descending=True, maintain_order=True)
        .group_by("instruction", maintain_order=True)
        .first()
    )
    worst = scores.sort("score", maintain_order=True).group_by("instruction", maintain_order=True).first()
    expected = best.join(worst, on="instruction", suffix="_r").filter(pl.col("score") > pl.col("score_r"))
    ties = 20 - expected.height
    assert steps[0]["dropped"] == ({"tie": ties} if ties else {})
    got = {(r["prompt"][0]["content"], r["chosen_model"], r["rejected_model"]) for r in rows}
    assert got == set(expected.select("instruction", "generator", "generator_r").iter_rows())
    assert all(r["margin"] > 0 for r in rows)
    assert all(r["margin"] == pytest.approx(r["chosen_score"] - r["rejected_score"]) for r in rows)
    bins = {k: v for k, v in steps[0]["metrics"].items() if k.startswith("margin_bin_")}
    assert sum(bins.values()) == len(rows) and steps[0]["metrics"]["completions"] == 120
    assert sum(v for k, v in steps[0]["metrics"].items() if k.startswith("length_diff_bin_")) == len(rows)
    _assert_canonical(rows)


def test_bad_scores_ties_identical_and_single_completion(alpaca_slice, write_recipe, tmp_path):
    _, frame = alpaca_slice
    prompts = frame.get_column("instruction").unique(maintain_order=True).to_list()
    records = frame.to_dicts()
    for r in records:
        if r["instruction"] == prompts[0]:
            r["score"] = "0.7"  # every completion ties
        if r["instruction"] == prompts[1] and r["generator"] == "phi-2":
            r["score"] = "not a number"
        if r["instruction"] == prompts[1] and r["generator"] == "alpaca-7b":
            r["score"] = None
        if r["instruction"] == prompts[2] and r["generator"] == "vicuna-7b":
            r["output"] = "   "
    # prompt 3: the worst answer is a copy of the best one's text
    best3 = max((r for r in records if r["instruction"] == prompts[3]), key=lambda r: float(r["score"]))
    worst3 = min((r for r in records if r["instruction"] == prompts[3]), key=lambda r: float(r["score"]))
    worst3["output"] = best3["output"]
    records.append(
        {"instruction": "A prompt answered once", "output": "Once.", "generator": "x", "score": "1"}
    )
    steps, rows = _build(write_recipe, _jsonl(tmp_path / "bad.jsonl", records), [BASE])
    dropped = steps[0]["dropped"]
    assert (
        dropped["unparseable_score"] == 1 and dropped["missing_score"] == 1 and dropped["empty_answer"] == 1
    )
    assert dropped["single_completion"] == 1 and dropped["identical_answers"] == 1 and dropped["tie"] >= 1
    assert prompts[0] not in {r["prompt"][0]["content"] for r in rows}
    _assert_canonical(rows)


def test_length_ratio_cap_and_balance_share(alpaca_slice, write_recipe):
    path, _ = alpaca_slice
    step = {**BASE, "policy": "all_pairs_above_margin", "min_margin": 0.05}
    _, rows = _build(write_recipe, path, [step], name="all")
    assert rows and all(r["margin"] >= 0.05 for r in rows)
    capped_steps, capped = _build(write_recipe, path, [{**step, "max_length_ratio": 1.5}], name="cap")
    ratio = [len(r["chosen"][0]["content"]) / len(r["rejected"][0]["content"]) for r in capped]
    assert ratio and max(ratio) <= 1.5
    over = [r for r in rows if len(r["chosen"][0]["content"]) / len(r["rejected"][0]["content"]) > 1.5]
    assert capped_steps[0]["dropped"]["length_ratio"] == len(over) > 0
    assert len(capped) == len(rows) - len(over)
    balanced_steps, balanced = _build(write_recipe, path, [{**step, "balance_longer_share": 0.5}], name="bal")
    longer = sum(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in balanced)
    longer_before = sum(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in rows)
    assert longer_before / len(rows) > 0.5 and longer / len(balanced) <= 0.5
    assert balanced_steps[0]["dropped"]["length_balance"] == len(rows) - len(balanced)
    assert balanced_steps[0]["metrics"]["chosen_longer"] == longer


def test_by_role(alpaca_slice, write_recipe):
    path, _ = alpaca_slice
    step = {
        "step": "make_pairs",
        "prompt": "instruction",
        "completion": "output",
        "model": "generator",
        "policy": "by_role",
        "roles": {"instruct": ["gpt4_*", "claude-3-opus-20240229"], "base": ["alpaca-7b", "phi-2"]},
    }
    steps, rows = _build(write_recipe, path, [step])
    assert len(rows) == 20 and steps[0]["dropped"] == {"unlisted_model": 60}
    assert {r["chosen_model"] for r in rows} == {"gpt4_1106_preview"}
    assert {r["rejected_model"] for r in rows} <= {"alpaca-7b", "phi-2"}
    assert all(r["margin"] is None for r in rows)
    _assert_canonical(rows)


def test_best_vs_random_is_seeded(alpaca_slice, write_recipe):
    path, _ = alpaca_slice
    step = {**BASE, "policy": "best_vs_random"}
    picks = []
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        _, rows = _build(write_recipe, path, [step], seed=seed, name=name)
        picks.append([(r["prompt"][0]["content"], r["rejected_model"]) for r in rows])
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_judgments_file_scores(alpaca_slice, shared_data, write_recipe):
    """Scores from the judgment file itself equal the score column derived from it."""
    path, _ = alpaca_slice
    step = {k: v for k, v in BASE.items() if k != "score"}
    judged = {**step, "judgments": {"path": str(shared_data / ANNOTATIONS), "format": "alpaca_eval"}}
    _, from_file = _build(write_recipe, path, [judged], name="j")
    _, from_column = _build(write_recipe, path, [BASE], name="c")
    key = [(r["prompt"][0]["content"], r["chosen_model"], r["rejected_model"]) for r in from_file]
    assert key == [(r["prompt"][0]["content"], r["chosen_model"], r["rejected_model"]) for r in from_column]
    assert json.dumps(from_file[0]["chosen"]) == json.dumps(from_column[0]["chosen"])


def test_lists_per_row_and_prompts_file_join(shared_data, write_recipe):
    """UltraFeedback-style rows (a list of completions + models) and Arena-Hard answers joined to
    their questions by id, both scored by the length rule (the longest vs the shortest)."""
    ultra = shared_data / PREFS / "openinstruct_synth_pref_ultrafeedback_style_example.jsonl.zst"
    step = {
        "step": "make_pairs",
        "prompt": "raw_text",
        "completion": "completions",
        "model": "models",
        "scorer": "length",
        "key": ["id", "aspect"],
    }
    steps, rows = _build(write_recipe, ultra, [step], name="u")
    raw = _raw(ultra)
    # the example's four completions per prompt are one text repeated: lists are read, no pair survives
    assert all(len(set(r["completions"])) == 1 for r in raw)
    assert steps[0]["metrics"]["completions"] == 4 * len(raw) == 32 and steps[0]["metrics"]["prompts"] == 8
    assert steps[0]["dropped"] == {"identical_answers": 8} and rows == []
    arena = {
        "step": "make_pairs",
        "completion": "choices[0].turns[0].content",
        "model": "model_id",
        "scorer": "length",
        "key": ["question_id"],
        "prompts_file": str(shared_data / "bench" / "arena_hard_v0.1_question.jsonl"),
        "prompts_field": "turns[0].content",
    }
    steps, rows = _build(
        write_recipe, shared_data / PREFS / "arena_hard_v0.1_model_answers.jsonl.zst", [arena], name="a"
    )
    assert steps[0]["metrics"]["completions"] == 1500 and len(rows) + sum(steps[0]["dropped"].values()) >= 500
    questions = {
        q["question_id"]: q["turns"][0]["content"]
        for q in _raw(shared_data / "bench" / "arena_hard_v0.1_question.jsonl")
    }
    assert {r["prompt"][0]["content"] for r in rows} <= set(questions.values())
    _assert_canonical(rows)
