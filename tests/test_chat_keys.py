"""Keys over conversations: dedup and split on the prompt turns, and text columns from turns."""

from __future__ import annotations

import json
import subprocess

import polars as pl

from dsforge.runner import build


def _kto_messages(shared_data, tmp_path, copies_of_prompt: int = 0):
    raw = subprocess.run(
        ["zstd", "-dc", str(shared_data / "prefs" / "llamafactory_kto_en_demo.json.zst")],
        capture_output=True,
        check=True,
    ).stdout
    rows = [{"messages": r["messages"]} for r in json.loads(raw)]
    for i in range(copies_of_prompt):  # same prompt, a different answer
        messages = [dict(m) for m in rows[i]["messages"]]
        messages[-1]["content"] = "A different answer."
        rows.append({"messages": messages})
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, len(rows)


def test_dedup_on_prompt_turns_only(shared_data, write_recipe, tmp_path):
    path, total = _kto_messages(shared_data, tmp_path, copies_of_prompt=25)
    whole = {"step": "dedup_exact", "columns": ["messages"]}
    prompt_only = {"step": "dedup_exact", "columns": ["messages"], "roles": ["user"]}
    stats = build(write_recipe({"sources": [{"path": str(path)}], "steps": [whole]})).stats
    natural = stats["steps"][0]["dropped"].get("duplicate", 0)  # the demo repeats some conversations
    stats = build(write_recipe({"sources": [{"path": str(path)}], "steps": [prompt_only]}), force=True).stats
    assert stats["steps"][0]["rows_in"] == total
    assert stats["steps"][0]["dropped"]["duplicate"] >= natural + 25


def test_split_keeps_a_prompt_in_one_split(shared_data, write_recipe, tmp_path):
    path, _ = _kto_messages(shared_data, tmp_path, copies_of_prompt=60)
    recipe = {
        "sources": [{"path": str(path)}],
        "steps": [
            {"step": "split", "test_size": 0.3, "by": ["messages"], "roles": ["user"]},
            {"step": "extract_turns", "roles": ["user"], "which": "first", "to": "prompt_key"},
        ],
    }
    out = build(write_recipe(recipe)).output
    frames = {s: pl.read_parquet(out / "data" / f"{s}-*.parquet") for s in ("train", "test")}
    assert all(f.height > 50 for f in frames.values())
    shared = set(frames["train"]["prompt_key"]) & set(frames["test"]["prompt_key"])
    assert shared == set()


def test_extract_turns_reads_roles(shared_data, write_recipe, tmp_path):
    path, total = _kto_messages(shared_data, tmp_path)
    recipe = {
        "sources": [{"path": str(path)}],
        "steps": [{"step": "extract_turns", "roles": ["assistant"], "which": "last", "to": "answer"}],
    }
    frame = pl.read_parquet(build(write_recipe(recipe)).output / "data")
    assert frame.height == total
    last = [m[-1]["content"] for m in frame["messages"].to_list()]
    assert frame["answer"].to_list() == last
