"""self_instruct / evol_instruct / magpie on local models, `dsforge compare`, the two generation recipes.

Models: tiny-random-gpt2 (random weights: gibberish, real plumbing) and tiny GPT-2s built here
whose saved generation config carries a ``sequence_bias`` so greedy decoding writes one fixed
text whatever the prompt (as in test_generate.py). The forced models prove the parse, filter,
clean-up and report paths end to end with a real model (the texts are forced, not earned: they
say nothing about quality); the random model proves failures are counted, never raised.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import two_step_dpo_config

from dsforge.generate.evol_instruct import MUTATIONS, choose, clean_evolution, evolution_reason
from dsforge.generate.magpie import clean_instruction, template_parts
from dsforge.generate.self_instruct import Pool, parse_instructions, rouge_l, rouge_tokens
from dsforge.runner import build

REPO = Path(__file__).resolve().parents[1]
EOS = 98
SELF_INSTRUCT_TEXT = (
    " Explain how rainbows form after a storm.\n6. Draw a map of your neighborhood.\n7. Hi there.\n"
    "8. Brainstorm a list of possible New Year's resolutions for students.\n"
    "9. Suggest three ways to reduce plastic waste at home."
)
BASE_TEXT = (
    "The answer is <b>42</b> & more, explained at length for the reader here.\n```\nAnd it keeps going."
)
INSTRUCT_TEXT = "I'm sorry, but I cannot help with that."
LINES_TEXT = "Describe a sunny day at the beach.\n- What causes ocean tides?"
EVOL_TEXT = "#Rewritten Prompt#:\nExplain photosynthesis step by step, with two examples."
MAGPIE_TEXT = "Tell me a joke about cats.<|im_end|>\nmore"
ANSWER_TEXT = "Sunlight bends inside raindrops and splits into colors."


def _tiny_gpt2(dst: Path, tokenizer_from: Path, *, seed: int, forced: str, template: str | None = None):
    import torch
    from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=1000, n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)  # fmt: skip
    model = GPT2LMHeadModel(config)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    target = tok(forced, add_special_tokens=False)["input_ids"] + [EOS]
    bias = [[target[: k + 1], 100.0 * (k + 1)] for k in range(len(target))]
    model.generation_config = GenerationConfig(
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS, sequence_bias=bias
    )
    if template is not None:
        tok.chat_template = template
        tok.pad_token = tok.eos_token
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tiny = shared_data / "models" / "tiny-random-gpt2"
    chatml = (
        (shared_data / "chat_templates" / "chatml.jinja").read_text().replace("    ", "").replace("\n", "")
    )
    return {
        "tiny": tiny,
        "self_instruct": _tiny_gpt2(root / "si", tiny, seed=1, forced=SELF_INSTRUCT_TEXT),
        "lines": _tiny_gpt2(root / "lines", tiny, seed=2, forced=LINES_TEXT),
        "evol": _tiny_gpt2(root / "evol", tiny, seed=3, forced=EVOL_TEXT),
        "magpie": _tiny_gpt2(root / "magpie", tiny, seed=4, forced=MAGPIE_TEXT),
        "base": _tiny_gpt2(root / "base", tiny, seed=5, forced=BASE_TEXT),
        "instruct": _tiny_gpt2(root / "instruct", tiny, seed=6, forced=INSTRUCT_TEXT, template=chatml),
        "rating": _tiny_gpt2(root / "rating", tiny, seed=7, forced="Rating: 4\nRationale: fine."),
        "answer": _tiny_gpt2(root / "answer", tiny, seed=8, forced=ANSWER_TEXT, template=chatml),
    }  # fmt: skip


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "dsforge-cache"
    monkeypatch.setenv("DSFORGE_CACHE_DIR", str(folder))
    return folder


def _llm(model: Path, shared_data: Path | None = None, **extra) -> dict:
    llm = {"model": str(model), "temperature": 0, **extra}
    if shared_data is not None:
        llm |= {
            "chat_template": str(shared_data / "chat_templates" / "chatml.jinja"),
            "compact_template": True,
        }
    return llm


def _seeds(shared_data: Path, rows: int | None = None, name: str = "seed_tasks") -> dict:
    source = {"name": name, "path": str(shared_data / "sft" / "self_instruct_seed_tasks.jsonl")}
    return source | {"columns": ["id", "instruction"]} | ({"max_rows": rows} if rows else {})


def _output(result) -> pl.DataFrame:
    files = sorted(glob.glob(str(result.output / "**" / "*.parquet"), recursive=True))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()


def _step(result, index: int = 0) -> dict:
    return result.stats["steps"][index]


def _calls(result, index: int = 0) -> tuple[float, float]:
    metrics = _step(result, index)["metrics"]
    return metrics.get("llm_calls", 0), metrics.get("cache_hits", 0)


# --------------------------------------------------------------------------- parsers on realistic texts
def test_parsers_similarity_and_templates(shared_data):
    from transformers import AutoTokenizer

    # a chat model asked for "one per line", answering with a preamble and a numbered list anyway
    answer = (
        "Here are 3 queries:\n\n1. Summarize the plot of Hamlet.\n2) Translate 'hello'\n   into French.\n3. "
    )
    assert parse_instructions(answer) == [
        "Summarize the plot of Hamlet.",
        "Translate 'hello' into French.",
    ]
    assert parse_instructions('- Plan a trip to Rome.\n\n* "Name two planets."') == [
        "Plan a trip to Rome.",
        "Name two planets.",
    ]
    assert parse_instructions("\n\n") == []
    # ROUGE-L F1 as rouge-score computes it (LCS 5 of 6 and 6 tokens)
    assert rouge_l(
        rouge_tokens("The cat sat on the mat."), rouge_tokens("the cat LAY on the mat")
    ) == pytest.approx(5 / 6)
    pool = Pool()
    pool.add("Brainstorm a list of possible New Year's resolutions.")
    score, match = pool.most_similar(
        "Brainstorm a list of possible New Year's resolutions for students.", 0.7
    )
    assert match is not None and score == pytest.approx(18 / 20)
    assert pool.most_similar("Explain how rainbows form.", 0.7)[1] is None
    # evol-instruct clean-up and elimination
    assert (
        clean_evolution("#Rewritten Prompt#:\nList 3 uses of AI in medicine.")
        == "List 3 uses of AI in medicine."
    )
    assert evolution_reason("a", "Rewrite #The Given Prompt# harder") == "copied_template"
    assert evolution_reason("Name a fruit.", " name a  FRUIT. ") == "unchanged_instruction"
    picks = {choose(list(MUTATIONS), 5, "Name a fruit.", r) for r in range(20)}
    assert picks <= set(MUTATIONS) and len(picks) > 1
    assert choose(list(MUTATIONS), 5, "x", 0) == choose(list(MUTATIONS), 5, "x", 0)
    # magpie's pre-query text, cut from real chat templates (ChatML and Qwen2.5's own)
    tok = AutoTokenizer.from_pretrained(shared_data / "models" / "tiny-random-gpt2")
    chatml = (
        (shared_data / "chat_templates" / "chatml.jinja").read_text().replace("    ", "").replace("\n", "")
    )
    parts = template_parts(tok, chatml, None)
    assert parts.pre == "<|endoftext|><|im_start|>user\n"
    assert parts.post == "<|im_end|>\n<|im_start|>assistant\n" and parts.end_of_turn == "<|im_end|>"
    qwen = json.loads(
        (shared_data / "chat_templates/from_model_repos/qwen2.5.tokenizer_config.json").read_text()
    )
    parts = template_parts(tok, qwen["chat_template"], None)
    assert parts.pre.startswith("<|im_start|>system\nYou are Qwen") and parts.pre.endswith(
        "<|im_start|>user\n"
    )
    assert template_parts(tok, qwen["chat_template"], "Be brief.").pre.startswith(
        "<|im_start|>system\nBe brief."
    )
    assert clean_instruction(' User: "How do plants grow?" ') == "How do plants grow?"


# --------------------------------------------------------------------------- self_instruct
def test_self_instruct_forced_numbered_and_cache(write_recipe, shared_data, models, cache_dir):
    step = {
        "step": "self_instruct",
        "llm": _llm(models["self_instruct"], max_new_tokens=128),
        "prompt_style": "numbered",
        "k": 4,
        "k_generated": 1,
        "rounds": 2,
        "prompts_per_round": 2,
        "messages": True,
    }
    recipe = write_recipe({"sources": [_seeds(shared_data)], "steps": [step]})
    result = build(recipe)
    rows = _output(result)
    # the forced list: 2 new instructions; the drawing task, the greeting and the near-copy of a
    # seed task ("Brainstorm a list of possible New Year's resolutions.") are filtered each time
    assert sorted(rows["instruction"]) == [
        "Explain how rainbows form after a storm.",
        "Suggest three ways to reduce plastic waste at home.",
    ]
    assert _step(result)["dropped"] == {
        "unsupported_task": 4, "too_short": 4, "too_similar_to_pool": 4, "duplicate_instruction": 6,
    }  # fmt: skip
    assert _calls(result) == (4, 0)
    seed_ids = rows["seed_ids"].to_list()
    assert all(len(ids) == 4 and all(i.startswith("seed_task_") for i in ids) for ids in seed_ids)
    assert rows["messages"].to_list()[0] == [{"role": "user", "content": rows["instruction"][0]}]
    assert rows["model"].to_list() == ["si", "si"] and rows["round"].to_list() == [0, 0]

    again = build(recipe, force=True)
    assert _calls(again) == (0, 4)
    assert _output(again).equals(rows)


def test_self_instruct_distilabel_template_lines_and_random(write_recipe, shared_data, models, cache_dir):
    forced = {"step": "self_instruct", "llm": _llm(models["lines"], shared_data, max_new_tokens=32)}
    forced |= {"k": 2, "k_generated": 0, "prompts_per_round": 1}
    rows = _output(build(write_recipe({"sources": [_seeds(shared_data, 20)], "steps": [forced]})))
    assert rows["instruction"].to_list() == ["Describe a sunny day at the beach.", "What causes ocean tides?"]

    # random weights: gibberish parsed or refused; every prompt and candidate has a known reason
    random = {
        **forced,
        "llm": _llm(models["tiny"], shared_data, max_new_tokens=24),
        "prompt_style": "numbered",
    }
    noisy = build(
        write_recipe({"sources": [_seeds(shared_data, 20)], "steps": [{**random, "prompts_per_round": 3}]})
    )
    known = {"unparseable_instructions", "too_short", "too_long", "unsupported_task", "cut_off",
             "starts_with_punctuation", "non_ascii_start", "duplicate_instruction",
             "too_similar_to_pool", "empty_output", "prompt_too_long", "llm_error"}  # fmt: skip
    assert set(_step(noisy)["dropped"]) <= known
    assert _calls(noisy)[0] == 3
    assert _step(noisy)["rows_out"] + sum(_step(noisy)["dropped"].values()) >= 3


# --------------------------------------------------------------------------- evol_instruct
def test_evol_instruct_rounds_seeded_mutations_and_failures(write_recipe, shared_data, models, cache_dir):
    step = {"step": "evol_instruct", "llm": _llm(models["evol"], shared_data, max_new_tokens=48)}
    step |= {"mutations": ["deepening", "breadth"], "keep_history": True}
    one = build(write_recipe({"sources": [_seeds(shared_data, 4)], "steps": [step]}))
    rows = _output(one)
    assert rows["instruction"].to_list() == ["Explain photosynthesis step by step, with two examples."] * 4
    seeds = pl.read_ndjson(shared_data / "sft" / "self_instruct_seed_tasks.jsonl").head(4)
    assert rows["evolved_from"].to_list() == seeds["instruction"].to_list()
    expected = [[choose(["deepening", "breadth"], 0, text, 0)] for text in seeds["instruction"]]
    assert rows["evolutions"].to_list() == expected
    assert [len(h) for h in rows["evolution_history"]] == [2] * 4
    metrics = _step(one)["metrics"]
    assert metrics["mutation_deepening"] + metrics["mutation_breadth"] == 4 and metrics["llm_calls"] == 4

    # round 2 rewrites to the same forced text: WizardLM's "no change" elimination drops every row,
    # and round 1's calls come from the cache
    two = build(write_recipe({"sources": [_seeds(shared_data, 4)], "steps": [{**step, "rounds": 2}]}))
    assert _step(two)["dropped"] == {"unchanged_instruction": 4}
    assert _calls(two) == (4, 4)

    random = {**step, "llm": _llm(models["tiny"], shared_data, max_new_tokens=8), "rounds": 2}
    noisy = build(
        write_recipe({"sources": [_seeds(shared_data, 3)], "steps": [{**random, "on_failure": "flag"}]})
    )
    flagged = _output(noisy)["generation_error"].drop_nulls().to_list()
    assert set(flagged) <= {"truncated_output", "empty_output", "copied_template", "unchanged_instruction"}
    assert len(flagged) == 3  # 8 random tokens are always cut: round 1 fails for each row, counted


# --------------------------------------------------------------------------- magpie
def test_magpie_pre_query_draws_and_responses(write_recipe, shared_data, models, cache_dir):
    step = {"step": "magpie", "llm": _llm(models["magpie"], shared_data, max_new_tokens=32, temperature=0.8)}
    step |= {"n": 2, "response": True, "key_column": "id"}
    result = build(write_recipe({"sources": [_seeds(shared_data, 2)], "steps": [step]}))
    rows = _output(result)
    # sent: "<|endoftext|><|im_start|>user\n" only; the forced query stops at the template's <|im_end|>
    assert rows["instruction"].to_list() == ["Tell me a joke about cats."]
    assert _step(result)["dropped"] == {"duplicate_instruction": 3}  # the other 3 draws repeat it
    assert rows["response"].to_list() == ["Tell me a joke about cats."]  # the same forced text, answered
    assert rows["messages"].to_list()[0] == [
        {"role": "user", "content": "Tell me a joke about cats."},
        {"role": "assistant", "content": "Tell me a joke about cats."},
    ]
    assert rows["id"].to_list() == ["seed_task_0"]
    assert _calls(result) == (5, 0)  # 4 draws + 1 answer

    random = {**step, "llm": _llm(models["tiny"], shared_data, max_new_tokens=6, temperature=0.8)}
    noisy = build(write_recipe({"sources": [_seeds(shared_data, 2)], "steps": [random]}))
    dropped = _step(noisy)["dropped"]
    assert set(dropped) <= {"truncated_output", "empty_output", "too_short", "duplicate_instruction"} | {
        f"response_{r}" for r in ("truncated_output", "empty_output")
    }
    assert _step(noisy)["rows_out"] + sum(dropped.values()) == 4


# --------------------------------------------------------------------------- compare
def test_compare_report_from_two_models(write_recipe, shared_data, models, cache_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    texts = ["What does <b>bold</b> do & why?", "Name a primary color.", "Give one tip for sleep."]
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "instruction": t}) + "\n" for i, t in enumerate(texts))
    )
    base = {
        "step": "base_as_instruct",
        "apply_to": ["for_base"],
        "llm": _llm(models["base"], label="base", max_new_tokens=64),
    }
    base |= {"prompt_column": "instruction", "completion_column": "completion"}
    base |= {
        "preamble": "# Instruction\n\nAnswer the query.",
        "examples": [{"query": "Say hi.", "answer": "Hi!"}],
    }
    chat = _llm(models["instruct"], shared_data, label="instruct", max_new_tokens=40)
    gen = {"step": "generate", "apply_to": ["for_instruct"], "llm": chat}
    gen |= {"prompt_column": "instruction", "completion_column": "completion"}
    judge = {"step": "judge", "llm": _llm(models["rating"], shared_data, max_new_tokens=24)}
    judge |= {"response_column": "completion", "prompt_column": "instruction", "on_failure": "flag"}
    sources = [{"name": n, "path": str(prompts)} for n in ("for_base", "for_instruct")]
    result = build(write_recipe({"sources": sources, "steps": [base, gen, judge]}))
    assert _output(result).height == 6

    report = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "dsforge", "compare", str(result.output), "-o", str(report)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    md, page = (report / "compare.md").read_text(), (report / "compare.html").read_text()
    answer = "The answer is <b>42</b> & more, explained at length for the reader here."
    # per model: answers, mean and median chars, refusals, base flags, failures, judge mean
    table = md.split("## Per model")[1].split("## Answers")[0].strip().splitlines()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:]}
    header = [c.strip() for c in md.split("## Per model")[1].splitlines()[2].split("|")[1:-1]]
    assert header == ["model", "answers", "mean chars", "median chars", "refusals", "ran past answer",
                      "echoed format", "failed (flagged)", "judge score (mean)", "scored"]  # fmt: skip
    n = float(len(answer))
    assert rows["base"] == ["3", f"{n:.1f}", f"{n:.1f}", "0.0%", "100.0%", "0.0%", "0", "4.00", "3"]
    n = float(len(INSTRUCT_TEXT))
    assert rows["instruct"] == ["3", f"{n:.1f}", f"{n:.1f}", "100.0%", "-", "-", "0", "4.00", "3"]
    assert "3 of 3 prompts" in md and md.count("### ") == 3
    # text is escaped in both: the prompt's and the answer's tags never become markup
    assert "<b>" not in md and "&lt;b&gt;42&lt;/b&gt; &amp; more" in md
    assert "<b>" not in page and "What does &lt;b&gt;bold&lt;/b&gt; do &amp; why?" in page
    assert "http" not in page.replace("http-equiv", "")  # no external assets
    assert page.count('<td class="answer">') == 6


# --------------------------------------------------------------------------- recipes
def test_base_vs_instruct_recipe_trains_dpo(shared_data, models, cache_dir, tmp_path, monkeypatch):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    monkeypatch.setenv("DSFORGE_BASE_MODEL", str(models["base"]))
    monkeypatch.setenv("DSFORGE_INSTRUCT_MODEL", str(models["instruct"]))
    recipe = REPO / "recipes" / "base-vs-instruct.yaml"
    overrides = [
        f"steps.2.path={tmp_path / 'compare'}",
        "steps.0.llm.max_new_tokens=64",
        "steps.1.llm.max_new_tokens=32",
    ]
    result = build(recipe, overrides=overrides, output=str(tmp_path / "out"))
    assert _calls(result, 0) == (30, 0) and _calls(result, 1) == (30, 0)
    assert _step(result, 4)["rows_out"] == 30  # one pair per prompt: instruct chosen, base rejected
    md = (tmp_path / "compare" / "compare.md").read_text()
    assert "| base | 30 | 72.0 | 72.0 | 0.0% | 100.0% | 0.0% | 0 |" in md
    assert "| instruct | 30 | 39.0 | 39.0 | 100.0% | - | - | 0 |" in md

    data = datasets.load_dataset(str(result.output), cache_dir=str(tmp_path / "hf"))
    train = data["train"]
    assert set(train["chosen_model"]) == {"instruct"} and set(train["rejected_model"]) == {"base"}
    assert train[0]["chosen"] == [{"role": "assistant", "content": INSTRUCT_TEXT}]
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models["instruct"]),
        ref_model=None,
        args=two_step_dpo_config(tmp_path / "run"),
        train_dataset=train.select(range(8)),
        processing_class=AutoTokenizer.from_pretrained(models["instruct"]),
    )
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0

    again = build(recipe, overrides=overrides, output=str(tmp_path / "out"), force=True)
    assert _calls(again, 0) == (0, 30) and _calls(again, 1) == (0, 30)


def test_sft_generate_recipe_builds_from_cache(shared_data, models, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DSFORGE_INSTRUCTION_MODEL", str(models["self_instruct"]))
    monkeypatch.setenv("DSFORGE_RESPONSE_MODEL", str(models["answer"]))
    recipe = REPO / "recipes" / "sft-generate.yaml"
    overrides = [
        "steps.0.prompts_per_round=2",
        "steps.0.llm.max_new_tokens=128",
        "steps.1.llm.max_new_tokens=32",
    ]
    result = build(recipe, overrides=overrides, output=str(tmp_path / "out"))
    rows = _output(result)
    # 2 instructions accepted, answered, cleaned (nothing to drop), written as TRL messages
    assert _step(result, 0)["rows_out"] == 2 and _calls(result, 1) == (2, 0)
    assert rows.height == 2 and sum(s["rows_out"] for s in result.stats["steps"][-1:]) == 2
    for turns in rows["messages"].to_list():
        assert [t["role"] for t in turns] == ["system", "user", "assistant"]
        assert turns[2]["content"] == ANSWER_TEXT
    assert sorted(t[1]["content"] for t in rows["messages"].to_list()) == [
        "Explain how rainbows form after a storm.",
        "Suggest three ways to reduce plastic waste at home.",
    ]
    again = build(recipe, overrides=overrides, output=str(tmp_path / "out"), force=True)
    assert _calls(again, 0) == (0, 4) and _calls(again, 1) == (0, 2)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
