"""End-to-end builds on real data: outputs load, funnels add up, builds are deterministic and crash-safe."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from dsforge.errors import InputError
from dsforge.runner import build

DSFORGE = [sys.executable, "-m", "dsforge"]


def _pretrain_recipe(shared: Path, **extra) -> dict:
    recipe = {
        "name": "mix",
        "seed": 11,
        "sources": [
            {"name": "c4", "path": str(shared / "raw" / "c4_demo.jsonl.zst")},
            {"name": "wiki", "path": str(shared / "raw" / "wiki_demo.txt.zst"), "format": "txt"},
            {
                "name": "dolma",
                "path": str(shared / "raw" / "commoncrawl" / "dolma_cc_en_head-*.jsonl.gz"),
                "columns": ["text"],
            },
            {"name": "c4_again", "path": str(shared / "raw" / "c4_demo.jsonl.zst"), "max_rows": 40},
        ],
        "steps": [
            {"step": "drop_empty", "columns": ["text"]},
            {"step": "length_filter", "unit": "words", "min": 40},
            {"step": "dedup_exact", "columns": ["text"], "lowercase": True},
            {"step": "shuffle"},
            {"step": "split", "test_size": 0.2},
        ],
        "output": {"card": {"license": "odc-by", "language": ["en"], "tags": ["pretraining"]}},
        "runtime": {"workers": 1, "batch_size": 64},
    }
    recipe.update(extra)
    return recipe


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "stats.json"
    }


def test_built_folder_loads_with_datasets(shared_data, write_recipe, tmp_path):
    result = build(write_recipe(_pretrain_recipe(shared_data)))
    out = result.output
    stats = json.loads((out / "stats.json").read_text())
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == {"train", "test"}
    for split, rows in stats["output"]["splits"].items():
        assert loaded[split].num_rows == rows
    assert loaded["train"].features["text"].dtype == "string"
    assert set(loaded["train"]["source"]) == {"c4", "wiki", "dolma"}  # c4_again: all duplicates
    # the funnel adds up: each step's rows out are the next step's rows in
    steps = stats["steps"]
    sources_out = sum(s["rows_emitted"] for s in stats["sources"])
    assert steps[0]["rows_in"] == sources_out == 300 + 30 + 20 + 40
    for before, after in itertools.pairwise(steps):
        assert before["rows_out"] == after["rows_in"]
    for step in steps:
        assert step["rows_in"] - step["rows_out"] == sum(step["dropped"].values())
    assert steps[-1]["rows_out"] == sum(stats["output"]["splits"].values())
    assert steps[2]["dropped"]["duplicate"] >= 30  # c4_again repeats 40 c4 documents
    # the card: Hub YAML front matter whose configs point at the shards
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "odc-by" and front["language"] == ["en"]
    assert front["size_categories"] == ["n<1K"]
    data_files = {d["split"]: d["path"] for d in front["configs"][0]["data_files"]}
    for split, pattern in data_files.items():
        assert sorted(p.name for p in out.glob(pattern)) == sorted(
            Path(f).name for f in stats["output"]["files"] if f.startswith(f"data/{split}-")
        )
    assert "| 2 | dedup_exact |" in card and "name: mix" in card


def test_same_seed_is_byte_identical_and_a_new_seed_only_reorders(shared_data, write_recipe, tmp_path):
    recipe = _pretrain_recipe(shared_data)
    recipe["steps"] = recipe["steps"][:-1]  # no split: the seed then only drives the shuffle
    first = build(write_recipe(recipe), output=str(tmp_path / "a")).output
    second = build(write_recipe(recipe), output=str(tmp_path / "b"), workers=2).output
    assert _digests(first) == _digests(second)
    third = build(write_recipe(recipe), output=str(tmp_path / "c"), overrides=["seed=12"]).output
    rows_a = pl.read_parquet(first / "data").get_column("text").to_list()
    rows_c = pl.read_parquet(third / "data").get_column("text").to_list()
    assert rows_a != rows_c and sorted(rows_a) == sorted(rows_c)


def test_unchanged_rebuild_is_reused_and_force_rebuilds(shared_data, write_recipe):
    path = write_recipe(_pretrain_recipe(shared_data))
    first = build(path)
    again = build(path)
    assert again.reused and again.stats["build_key"] == first.stats["build_key"]
    forced = build(path, force=True)
    assert not forced.reused
    changed = build(path, overrides=["steps.1.min=60"])
    assert not changed.reused and changed.stats["steps"][1]["rows_out"] < first.stats["steps"][1]["rows_out"]


def test_killed_build_leaves_no_finished_folder_and_resumes_identically(shared_data, write_recipe, tmp_path):
    recipe = _pretrain_recipe(shared_data, runtime={"workers": 1, "batch_size": 25})
    recipe["sources"].append(
        {"name": "shakespeare", "path": str(shared_data / "raw" / "tinyshakespeare.txt.gz"), "format": "txt"}
    )
    recipe["steps"][1] = {"step": "length_filter", "unit": "words", "min": 3}
    path = write_recipe(recipe)
    reference = build(path, output=str(tmp_path / "reference")).output
    out = tmp_path / "killed"
    work = tmp_path / ".killed.dsforge-work"
    proc = subprocess.Popen([*DSFORGE, "build", str(path), "-o", str(out), "-q"], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while (
        time.time() < deadline and proc.poll() is None and len(list(work.glob("stage0-*/part-*.json"))) < 200
    ):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts_before = len(list(work.glob("stage0-*/part-*.json")))
    assert 0 < parts_before < 1800, "the kill must land midway"
    assert not out.exists()
    resumed = build(path, output=str(out))
    assert _digests(resumed.output) == _digests(reference)
    assert (
        resumed.stats["steps"][0]["rows_in"]
        == json.loads((reference / "stats.json").read_text())["steps"][0]["rows_in"]
    )


def test_keep_dropped_writes_rows_with_their_reason(shared_data, write_recipe, tmp_path):
    recipe = _pretrain_recipe(shared_data)
    recipe["output"]["keep_dropped"] = True
    result = build(write_recipe(recipe))
    files = sorted(Path(f"{result.output}.dropped").glob("*.parquet"))
    dropped = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    counts = dict(dropped.group_by("drop_reason").len().iter_rows())
    stats = {reason: n for step in result.stats["steps"] for reason, n in step["dropped"].items()}
    assert counts == stats
    assert set(dropped.get_column("drop_step")) >= {"1.length_filter", "2.dedup_exact"}


def test_jsonl_output_and_limit(shared_data, write_recipe):
    recipe = _pretrain_recipe(shared_data)
    recipe["output"]["format"] = "jsonl"
    result = build(write_recipe(recipe), limit=50)
    assert all(s["rows_read"] <= 50 for s in result.stats["sources"])
    loaded = datasets.load_dataset(str(result.output))
    assert sum(d.num_rows for d in loaded.values()) == sum(result.stats["output"]["splits"].values())
    assert all(f.endswith(".jsonl") for f in result.stats["output"]["files"])


def test_hub_style_source_through_load_dataset(shared_data, write_recipe, tmp_path):
    first = build(write_recipe(_pretrain_recipe(shared_data)), output=str(tmp_path / "first")).output
    recipe = {"name": "again", "sources": [{"hf": str(first), "split": "test"}], "steps": []}
    result = build(write_recipe(recipe, "again.yaml"), output=str(tmp_path / "second"))
    assert (
        result.stats["sources"][0]["rows_read"]
        == json.loads((first / "stats.json").read_text())["output"]["splits"]["test"]
    )


def test_weights_and_caps_mix_sources(shared_data, write_recipe):
    recipe = _pretrain_recipe(shared_data, steps=[])
    recipe["sources"][0]["max_rows"] = 100
    recipe["sources"][1]["weight"] = 3
    recipe["sources"][2]["weight"] = 0.5
    stats = build(write_recipe(recipe)).stats
    emitted = {s["name"]: s["rows_emitted"] for s in stats["sources"]}
    assert emitted["c4"] == 100 and emitted["wiki"] == 90
    assert 3 <= emitted["dolma"] <= 17  # seeded Bernoulli(0.5) over 20 rows


def test_malformed_lines_skip_or_fail(shared_data, write_recipe, tmp_path):
    lines = (shared_data / "bench" / "gsm8k_test.jsonl").read_text().splitlines()[:40]
    lines[9] = lines[9][:30]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    recipe = {"name": "bad", "sources": [{"path": str(bad)}], "steps": []}
    stats = build(write_recipe(recipe)).stats
    assert stats["sources"][0]["malformed"] == 1
    assert stats["sources"][0]["malformed_examples"][0].startswith(f"{bad}:10: malformed JSON")
    recipe["sources"][0]["on_error"] = "fail"
    recipe["output"] = {"path": str(tmp_path / "failed")}
    with pytest.raises(InputError, match=f"{bad}:10: malformed JSON"):
        build(write_recipe(recipe, "fail.yaml"))
    assert not (tmp_path / "failed").exists()


def test_empty_input_is_an_error_and_writes_nothing(write_recipe, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match=r"sources\.0: empty input: no records in"):
        build(write_recipe({"name": "e", "sources": [{"path": str(empty)}]}))
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_folder_it_did_not_build(shared_data, write_recipe, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(Exception, match="exists and is not a dsforge dataset"):
        build(write_recipe(_pretrain_recipe(shared_data)))
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_scratch_compression_changes_nothing_in_the_output(shared_data, write_recipe, tmp_path):
    recipe = _pretrain_recipe(shared_data)
    plain = build(write_recipe(recipe), output=str(tmp_path / "plain")).output
    recipe["runtime"] = {**recipe["runtime"], "scratch_compression": "zstd", "keep_cache": True}
    packed = build(write_recipe(recipe, "zstd.yaml"), output=str(tmp_path / "packed")).output
    data = {k: v for k, v in _digests(plain).items() if k.startswith("data/")}
    assert data and data == {k: v for k, v in _digests(packed).items() if k.startswith("data/")}
    parts = sorted((tmp_path / ".packed.dsforge-work").glob("stage0-*/part-*.parquet"))
    assert parts and all(
        pq.ParquetFile(p).metadata.row_group(0).column(0).compression == "ZSTD"
        for p in parts
        if pq.ParquetFile(p).metadata.num_rows
    )
