"""generate / base_as_instruct / judge on real local models, the call cache, and the OpenAI backend.

Models: tiny-random-gpt2 (random weights: gibberish, real plumbing), and tiny GPT-2s built here:
one with another seed (a second "model"), and *forced* judges whose saved generation config
carries a ``sequence_bias`` so greedy decoding always writes one fixed text ("Rating: 4 ...",
"[[A]]", "[[B]]"). The forced judges prove the parse-success path end to end with a real model
(the verdict is forced, not earned); the random judge proves failures are counted, not raised.
The OpenAI backend talks to a real ``transformers serve`` process on 127.0.0.1.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import polars as pl
import pytest

from dsforge.errors import DsforgeError
from dsforge.generate.judge import combine_verdicts, parse_rating, parse_verdict
from dsforge.generate.urial import clean_answer, urial_prompt
from dsforge.runner import build

REPO = Path(__file__).resolve().parents[1]
EOS = 98  # tiny-random-gpt2's generation EOS
SHORT_URIAL = {
    "preamble": "# Instruction\n\nAnswer the query.",
    "examples": [{"query": "Say hi.", "answer": "Hi!"}],
}


# --------------------------------------------------------------------------- models built here
def _tiny_gpt2(
    dst: Path, tokenizer_from: Path, *, seed: int, positions: int = 512, forced: str | None = None
):
    import torch
    from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=1000, n_positions=positions, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    generation = {"bos_token_id": EOS, "eos_token_id": EOS, "pad_token_id": EOS}
    if forced is not None:  # each prefix of the target gets a growing bias: greedy writes exactly it
        target = tok(forced, add_special_tokens=False)["input_ids"] + [EOS]
        generation["sequence_bias"] = [[target[: k + 1], 100.0 * (k + 1)] for k in range(len(target))]
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tiny = shared_data / "models" / "tiny-random-gpt2"
    served = root / "served"
    shutil.copytree(tiny, served)
    for f in served.iterdir():
        f.chmod(0o644)
    chatml = (shared_data / "chat_templates" / "chatml.jinja").read_text()
    (served / "chat_template.jinja").write_text(chatml.replace("    ", "").replace("\n", ""))
    return {
        "tiny": tiny,
        "served": served,
        "second": _tiny_gpt2(root / "second", tiny, seed=7),
        "rating": _tiny_gpt2(
            root / "rating", tiny, seed=1, positions=4096, forced="Rating: 4\nRationale: fine."
        ),
        "verdict_a": _tiny_gpt2(root / "verdict_a", tiny, seed=2, positions=4096, forced="Verdict: [[A]]"),
        "verdict_b": _tiny_gpt2(root / "verdict_b", tiny, seed=3, positions=4096, forced="Verdict: [[B]]"),
    }


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "dsforge-cache"
    monkeypatch.setenv("DSFORGE_CACHE_DIR", str(folder))
    return folder / "generations"


def _chat_llm(model: Path, shared_data: Path, **extra) -> dict:
    template = str(shared_data / "chat_templates" / "chatml.jinja")
    return {"model": str(model), "chat_template": template, "compact_template": True, **extra}


def _instructions(shared_data: Path, rows: int) -> dict:
    path = shared_data / "sft" / "self_instruct_seed_tasks.jsonl"
    return {"path": str(path), "columns": ["instruction"], "max_rows": rows}


def _output(result) -> pl.DataFrame:
    files = sorted(glob.glob(str(result.output / "**" / "*.parquet"), recursive=True))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def _step(result, index: int = 0) -> dict:
    return result.stats["steps"][index]


def _metric(result, name: str, index: int = 0) -> float:
    return _step(result, index)["metrics"].get(name, 0)


# --------------------------------------------------------------------------- generate + cache
def test_generate_two_models_n_completions_and_cache(write_recipe, shared_data, models, cache_dir):
    step = {
        "step": "generate",
        "models": [
            _chat_llm(models["tiny"], shared_data, max_new_tokens=8, temperature=0.8),
            _chat_llm(models["second"], shared_data, max_new_tokens=8, temperature=0.8, label="second"),
        ],
        "n": 2,
        "prompt_column": "instruction",
        "system_prompt": "You are terse.",
        "on_failure": "flag",
    }
    first = build(write_recipe({"sources": [_instructions(shared_data, 3)], "steps": [step]}), progress=False)
    rows = _output(first)
    assert rows.height == 3 * 2 * 2
    assert sorted(set(rows["model"])) == ["second", "tiny-random-gpt2"]
    assert rows.group_by("instruction", "model").len()["len"].to_list() == [2] * 6
    for turns in rows["messages"].to_list():
        assert [t["role"] for t in turns] == ["system", "user", "assistant"]
        assert turns[0]["content"] == "You are terse."
    # 8 tokens of a random model: almost always cut by max_new_tokens → flagged, counted, kept
    flagged = {k: v for k, v in _step(first)["metrics"].items() if k.startswith("flagged_")}
    assert sum(flagged.values()) == rows["generation_error"].is_not_null().sum()
    assert set(rows["generation_error"].drop_nulls()) <= {"truncated_output", "empty_output"}
    assert (_metric(first, "llm_calls"), _metric(first, "cache_hits")) == (12, 0)
    assert (cache_dir / "generations.sqlite").exists()

    again = build(write_recipe({"sources": [_instructions(shared_data, 3)], "steps": [step]}), force=True)
    assert (_metric(again, "llm_calls"), _metric(again, "cache_hits")) == (0, 12)
    assert _output(again)["messages"].to_list() == rows["messages"].to_list()

    # two more prompts and dropping failures: only the new rows cost calls
    dropping = {**step, "on_failure": "drop"}
    more = build(write_recipe({"sources": [_instructions(shared_data, 5)], "steps": [dropping]}), force=True)
    assert (_metric(more, "llm_calls"), _metric(more, "cache_hits")) == (8, 12)
    kept, dropped = _step(more)["rows_out"], sum(_step(more)["dropped"].values())
    assert kept + dropped == 20 and set(_step(more)["dropped"]) <= {"truncated_output", "empty_output"}


def test_generate_rejects_conversations_not_ending_on_user(write_recipe, shared_data, models, cache_dir):
    source = {"path": str(shared_data / "prefs" / "llamafactory_kto_en_demo.json.zst"), "max_rows": 3}
    step = {"step": "generate", "llm": _chat_llm(models["tiny"], shared_data, max_new_tokens=4)}
    result = build(write_recipe({"sources": [{**source, "columns": ["messages"]}], "steps": [step]}))
    # kto rows end on the assistant's answer: nothing to answer, no call made
    assert _step(result)["dropped"] == {"prompt_not_ending_on_user": 3}
    assert _metric(result, "llm_calls") == 0


# --------------------------------------------------------------------------- base_as_instruct
def test_urial_prompt_and_cleanup():
    turns = [{"role": "user", "content": "What is 2+2?"}]
    prompt = urial_prompt("# Instruction\n\nBe helpful.", [], turns)
    assert prompt.endswith("# Query:\n```\nWhat is 2+2?\n```\n\n# Answer:\n```\n")
    assert clean_answer("It is 4.\n```\n\n") == ("It is 4.", False, False)
    assert clean_answer("# Answer:\n```\nIt is 4.\n```\n") == ("It is 4.", False, True)
    assert clean_answer("It is 4.\n```\nAnother thing\n") == ("It is 4.", True, False)
    assert clean_answer("It is 4.\n# Query:\nmore") == ("It is 4.", True, False)


def test_base_as_instruct_raw_completion(write_recipe, shared_data, models, cache_dir):
    llm = {"model": str(models["tiny"]), "max_new_tokens": 16, "temperature": 0}
    step = {"step": "base_as_instruct", "llm": llm, "prompt_column": "instruction", "on_failure": "flag"}
    step |= {**SHORT_URIAL, "truncated_is_failure": False}
    result = build(write_recipe({"sources": [_instructions(shared_data, 3)], "steps": [step]}))
    rows = _output(result)
    assert rows.height == 3 and _metric(result, "llm_calls") == 3
    assert rows["ran_past_answer"].dtype == pl.Boolean and rows["echoed_format"].dtype == pl.Boolean
    for turns, error in zip(rows["messages"].to_list(), rows["generation_error"], strict=True):
        assert turns[-1]["role"] == ("user" if error else "assistant")
        if not error:
            assert "# Query" not in turns[-1]["content"]

    # the shipped preamble and examples do not fit tiny-random-gpt2's 512 positions: refused, no call
    default = {"step": "base_as_instruct", "llm": llm, "prompt_column": "instruction"}
    refused = build(write_recipe({"sources": [_instructions(shared_data, 2)], "steps": [default]}))
    assert _step(refused)["dropped"] == {"prompt_too_long": 2}
    assert _metric(refused, "llm_calls") == 0


# --------------------------------------------------------------------------- judge
def test_parsers_on_judge_prompt_formats(shared_data):
    prompts = [json.loads(line) for line in (shared_data / "bench" / "judge_prompts.jsonl").open()]
    assert {p["output_format"] for p in prompts} == {"[[rating]]", "[[A]]"}
    # outputs written the way the MT-Bench judge prompts ask for them
    assert parse_rating("The answer is accurate.\n\nRating: [[8]]", "brackets", 10) == 8
    assert parse_rating("Good but short. Rating: [[6.5]]", "brackets", 10) == 6.5
    assert parse_rating("Rating: [[8]] ... on reflection Rating: [[3]]", "brackets", 10) is None
    assert parse_rating("Rating: [[11]]", "brackets", 10) is None
    assert parse_rating("I would give it an 8.", "brackets", 10) is None
    assert parse_verdict("Assistant A is more detailed.\n\n[[A]]") == "A"
    assert parse_verdict("Both are equally good. [[C]]") == "C"
    assert parse_verdict("[[A]] or maybe [[B]]") is None and parse_verdict("A is better") is None
    # UltraFeedback's "#### Output for Text 1 / Rating: / Rationale:" layout
    uf = "#### Output for Text 1\nRating: 4\nRationale: Accurate, minor omissions."
    assert parse_rating(uf, "rating_line", 5) == 4
    assert parse_rating("Rating: 7\nRationale: x", "rating_line", 5) is None
    assert parse_rating("It deserves Rating: 4 overall", "rating_line", 5) is None
    assert combine_verdicts("A", "B") == ("a", None)
    assert combine_verdicts("B", "A") == ("b", None)
    assert combine_verdicts("A", "A") == (None, "judge_inconsistent")
    assert combine_verdicts("C", "C") == (None, "judge_tie")
    assert combine_verdicts("A", None) == (None, "unparseable_judgment")
    assert combine_verdicts("B", swapped=False) == ("b", None)


def test_judge_absolute_forced_and_random(write_recipe, shared_data, models, cache_dir):
    source = {"path": str(shared_data / "prefs" / "llamafactory_kto_en_demo.json.zst"), "max_rows": 4}
    source["columns"] = ["messages"]
    forced = _chat_llm(models["rating"], shared_data, max_new_tokens=24, temperature=0)
    step = {"step": "judge", "llm": forced, "scale": 5, "keep_judgment": True}
    result = build(write_recipe({"sources": [source], "steps": [step]}))
    rows = _output(result)
    # the real UltraFeedback prompt went in; the forced "Rating: 4" came out and was parsed
    assert rows["judgment"].to_list() == ["Rating: 4\nRationale: fine."] * 4
    assert rows["score"].to_list() == [4.0] * 4
    assert _metric(result, "llm_calls") == 4

    # a random judge: its output rarely parses; every failure is a counted reason, never a crash
    template = "Q: {question}\nA: {answer}\nScore 1-10 as [[N]]:"
    random_llm = {"model": str(models["tiny"]), "chat": False, "max_new_tokens": 6, "temperature": 0}
    random_step = {"step": "judge", "llm": random_llm, "scale": 10, "template": template}
    noisy = build(write_recipe({"sources": [source], "steps": [random_step]}))
    dropped = _step(noisy)["dropped"]
    assert _step(noisy)["rows_out"] + sum(dropped.values()) == 4
    assert set(dropped) <= {"unparseable_judgment", "truncated_output", "empty_output", "prompt_too_long"}
    # answers too long for 512 positions are refused before any call; the rest were sent
    assert _metric(noisy, "llm_calls") == 4 - dropped.get("prompt_too_long", 0) >= 1
    assert all(1 <= s <= 10 for s in _output(noisy).get_column("score", default=pl.Series([])).to_list())


def _pairs_file(shared_data: Path, path: Path, rows: int) -> Path:
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(
        (shared_data / "prefs" / "llamafactory_dpo_en_demo.json.zst").read_bytes(), max_output_size=1 << 26
    )
    items = json.loads(raw)[:rows]
    with path.open("w") as out:
        for item in items:
            prompt = item["conversations"][-1]["value"]
            record = {
                "prompt": prompt,
                "chosen": item["chosen"]["value"],
                "rejected": item["rejected"]["value"],
            }
            out.write(json.dumps(record) + "\n")
    return path


def test_judge_pairwise_position_swap(write_recipe, shared_data, models, cache_dir, tmp_path):
    pairs = _pairs_file(shared_data, tmp_path / "pairs.jsonl", 3)
    source = {"path": str(pairs)}

    def judge(model: str, **extra) -> dict:
        llm = _chat_llm(models[model], shared_data, max_new_tokens=16, temperature=0)
        return {"step": "judge", "mode": "pairwise", "llm": llm, **extra}

    # always "[[A]]": A-vs-B says a, B-vs-A says b → the two orders disagree on every pair
    swapped = build(write_recipe({"sources": [source], "steps": [judge("verdict_a")]}))
    assert _step(swapped)["dropped"] == {"judge_inconsistent": 3}
    assert _metric(swapped, "llm_calls") == 6

    # one order only: the A-vs-B calls are all in the cache already
    single = build(write_recipe({"sources": [source], "steps": [judge("verdict_a", swap=False)]}))
    assert (_metric(single, "llm_calls"), _metric(single, "cache_hits")) == (0, 3)
    assert _output(single)["judge_winner"].to_list() == ["a"] * 3

    # "[[B]]" in one order: b wins and the pair is reordered so chosen is the judge's pick
    flipped = _output(build(write_recipe({"sources": [source], "steps": [judge("verdict_b", swap=False)]})))
    original = pl.read_ndjson(pairs)
    assert flipped["chosen"].to_list() == original["rejected"].to_list()
    assert flipped["rejected"].to_list() == original["chosen"].to_list()


# --------------------------------------------------------------------------- interrupted run
def test_interrupted_build_resumes_without_repeating_calls(write_recipe, shared_data, models, cache_dir):
    total = 16
    llm = _chat_llm(models["tiny"], shared_data, max_new_tokens=24, temperature=0.7)
    step = {"step": "generate", "llm": llm, "prompt_column": "instruction", "truncated_is_failure": False}
    recipe = write_recipe({"sources": [_instructions(shared_data, total)], "steps": [step]})
    script = "import sys; from dsforge.runner import build; build(sys.argv[1], progress=False)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(recipe)], env=env, cwd=REPO)
    db = cache_dir / "generations.sqlite"

    def stored() -> int:
        if not db.exists():
            return 0
        with sqlite3.connect(db, timeout=30) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                return 0

    deadline = time.monotonic() + 120
    while stored() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = stored()
    assert 0 < done < total, f"kill came at {done}/{total} finished calls"

    resumed = build(recipe, progress=False)
    assert (_metric(resumed, "llm_calls"), _metric(resumed, "cache_hits")) == (total - done, done)
    assert _output(resumed).height == total and stored() == total


# --------------------------------------------------------------------------- offline
def test_offline_build_makes_no_network_calls(write_recipe, shared_data, models, cache_dir, monkeypatch):
    attempts: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def blocked(address) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            return True
        return False

    def connect(self, address):
        if blocked(address):
            raise OSError("network disabled by test")
        return real_connect(self, address)

    def connect_ex(self, address):
        return 111 if blocked(address) else real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    step = {"step": "generate", "llm": _chat_llm(models["second"], shared_data, max_new_tokens=4)}
    step |= {"prompt_column": "instruction", "truncated_is_failure": False}
    result = build(write_recipe({"sources": [_instructions(shared_data, 2)], "steps": [step]}))
    assert _metric(result, "llm_calls") == 2  # the model really loaded and ran
    assert attempts == []


# --------------------------------------------------------------------------- OpenAI-compatible server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """`transformers serve` on 127.0.0.1 serving the tiny model (with a chat template), offline."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(cli), "serve", str(models["served"]), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen([*command, "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    body = json.dumps({"model": str(models["served"]), "prompt": "hi", "max_tokens": 1}).encode()
    deadline = time.monotonic() + 150
    while True:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {log.read_text()[-2000:]}")
        try:
            request = urllib.request.Request(
                f"{base}/completions", body, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=30).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"transformers serve did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield {"base_url": base, "model": str(models["served"]), "log": log}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_openai_backend_chat_and_raw_completions(
    write_recipe, shared_data, server, cache_dir, monkeypatch, tmp_path
):
    secret = f"sk-dsforge-{uuid.uuid4().hex}"
    monkeypatch.setenv("DSFORGE_TEST_KEY", secret)
    llm = {"backend": "openai", "model": server["model"], "base_url": server["base_url"]}
    llm |= {"api_key_env": "DSFORGE_TEST_KEY", "max_new_tokens": 8, "temperature": 0, "retries": 1}
    common = {"on_failure": "flag", "truncated_is_failure": False}
    steps = [
        {
            "step": "generate",
            "llm": llm,
            "prompt_column": "instruction",
            "completion_column": "completion",
            **common,
        },
        {
            "step": "base_as_instruct",
            "llm": llm,
            "completion_column": "base_completion",
            **SHORT_URIAL,
            **common,
        },
    ]
    recipe = write_recipe({"sources": [_instructions(shared_data, 3)], "steps": steps})
    result = build(recipe)
    rows = _output(result)
    assert rows.height == 3
    assert _metric(result, "llm_calls", 0) == 3 and _metric(result, "llm_calls", 1) == 3
    assert rows["completion"].is_not_null().sum() + rows["generation_error"].is_not_null().sum() >= 3
    log = server["log"].read_text()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log  # generate: chat template on the server
    assert '"POST /v1/completions HTTP/1.1" 200' in log  # base_as_instruct: raw prompt

    again = build(recipe, force=True)
    assert _metric(again, "llm_calls", 0) == 0 and _metric(again, "llm_calls", 1) == 0
    assert _output(again)["completion"].to_list() == rows["completion"].to_list()

    # the key is never written anywhere: outputs, card, stats, cache, work folders
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    # a key pasted where the variable name goes is refused without echoing it
    pasted = {**steps[0], "llm": {**llm, "api_key_env": secret}}
    with pytest.raises(DsforgeError) as error:
        build(write_recipe({"sources": [_instructions(shared_data, 1)], "steps": [pasted]}, name="bad.yaml"))
    assert secret not in str(error.value) and "api_key_env" in str(error.value)

    monkeypatch.delenv("DSFORGE_TEST_KEY")
    missing = {**steps[0], "n": 2}  # a new call key: the backend must load, and finds no key
    with pytest.raises(DsforgeError, match="DSFORGE_TEST_KEY is not set"):
        build(
            write_recipe({"sources": [_instructions(shared_data, 1)], "steps": [missing]}, name="nokey.yaml")
        )
