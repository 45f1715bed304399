"""Every CLI command end to end, as a user runs it: one clear line and exit 2 for every mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

DSFORGE = [sys.executable, "-m", "dsforge"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*DSFORGE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def _recipe(tmp_path: Path, shared: Path, **changes) -> Path:
    recipe = {
        "name": "cli",
        "sources": [{"path": str(shared / "raw" / "c4_demo.jsonl.zst")}],
        "steps": [{"step": "length_filter", "unit": "words", "min": 30}, {"step": "split", "test_size": 0.1}],
        "output": {"path": str(tmp_path / "out")},
        "runtime": {"workers": 1},
        **changes,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_help_does_not_import_the_data_stack():
    heavy = "('polars', 'pyarrow', 'transformers', 'datasets')"
    code = f"import sys, dsforge.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert run("--help").returncode == 0


def test_build_prints_funnel_and_where_output_is(tmp_path, shared_data):
    result = run("build", str(_recipe(tmp_path, shared_data)), "-q", "--set", "seed=3")
    assert result.returncode == 0, result.stderr
    assert "funnel" in result.stdout and "length_filter" in result.stdout
    assert f"wrote {tmp_path / 'out'}" in result.stdout
    again = run("build", str(_recipe(tmp_path, shared_data)), "-q", "--set", "seed=3")
    assert "up to date" in again.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["seed"] == 3


def test_build_errors_are_one_line(tmp_path, shared_data):
    recipe = _recipe(tmp_path, shared_data, steps=[{"step": "dedup_exactt"}])
    assert_one_line_error(
        run("build", str(recipe)), "steps.0.step: unknown step 'dedup_exactt'", "dedup_exact"
    )
    assert not (tmp_path / "out").exists()
    missing = _recipe(tmp_path, shared_data, sources=[{"path": "nowhere/data.jsonl"}])
    assert_one_line_error(run("build", str(missing)), "sources.0.path: file not found")
    assert_one_line_error(run("build", str(tmp_path / "absent.yaml")), "recipe not found")
    column = _recipe(tmp_path, shared_data, steps=[{"step": "select_columns", "columns": ["body"]}])
    assert_one_line_error(run("build", str(column)), "steps.0 (select_columns): no column 'body'")
    assert not (tmp_path / "out").exists()


def test_validate_reports_all_problems(tmp_path, shared_data):
    good = run("validate", str(_recipe(tmp_path, shared_data)))
    assert good.returncode == 0 and good.stdout.startswith("ok: cli")
    bad = _recipe(tmp_path, shared_data, steps=[{"step": "length_filter", "min": "many"}, {"step": "shufle"}])
    result = run("validate", str(bad))
    assert_one_line_error(
        result,
        "2 problems in recipe",
        "steps.0.min: Input should be a valid integer",
        "(got 'many')",
        "steps.1.step: unknown step 'shufle' (did you mean shuffle",
    )


def test_steps_lists_and_describes():
    listing = run("steps")
    assert listing.returncode == 0
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert {"length_filter", "dedup_exact", "shuffle", "split"} <= set(names)
    detail = run("steps", "length_filter")
    assert "parameters:" in detail.stdout and "unit: str (default 'chars')" in detail.stdout
    example = yaml.safe_load(detail.stdout.split("example:\n", 1)[1])
    assert example[0]["step"] == "length_filter"
    assert_one_line_error(run("steps", "lenght_filter"), "did you mean length_filter")


def test_inspect_folder_and_file(tmp_path, shared_data):
    assert run("build", str(_recipe(tmp_path, shared_data)), "-q").returncode == 0
    folder = run("inspect", str(tmp_path / "out"))
    assert folder.returncode == 0, folder.stderr
    assert "splits: train" in folder.stdout and "columns: text: String" in folder.stdout
    data_file = run("inspect", str(shared_data / "bench" / "gsm8k_test.jsonl"), "--rows", "2")
    assert "1,319 rows" in data_file.stdout and "question" in data_file.stdout
    assert_one_line_error(run("inspect", str(tmp_path / "nothing")), "not found")


def test_new_writes_a_recipe_that_builds(tmp_path, shared_data):
    for kind in ("pretrain", "sft", "dpo"):
        path = tmp_path / f"{kind}.yaml"
        assert run("new", kind, str(path)).returncode == 0
        recipe = yaml.safe_load(path.read_text())
        assert recipe["name"] == kind and recipe["steps"]
        # placeholders point at a file the user has not made yet: validate says so, and only that
        result = run("validate", str(path))
        assert_one_line_error(result, "sources.0.path: file not found")
    alpaca = tmp_path / "alpaca.jsonl"
    rows = json.loads(
        subprocess.run(
            ["zstd", "-dc", str(shared_data / "sft" / "llamafactory_alpaca_en_demo.json.zst")],
            capture_output=True,
            check=True,
        ).stdout
    )
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in rows[:300]))
    sft = tmp_path / "mine" / "sft.yaml"
    assert run("new", "sft", str(sft), "--source", str(alpaca)).returncode == 0
    assert run("validate", str(sft)).returncode == 0
    built = run("build", str(sft), "-q")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "mine" / "out" / "sft" / "stats.json").exists()
    assert_one_line_error(run("new", "sft", str(sft)), "already exists")
    assert_one_line_error(run("new", "kto", str(tmp_path / "k.yaml")), "unknown recipe kind 'kto'")


def test_pretrain_and_dpo_starters_build_on_real_data(tmp_path, shared_data):
    starters = {
        "pretrain": shared_data / "raw" / "c4_demo.jsonl.zst",
        "dpo": shared_data / "prefs" / "llamafactory_dpo_en_demo.json.zst",
    }
    for kind, source in starters.items():
        path = tmp_path / kind / f"{kind}.yaml"
        assert run("new", kind, str(path), "--source", str(source)).returncode == 0
        built = run("build", str(path), "-q")
        assert built.returncode == 0, built.stderr
        stats = json.loads((tmp_path / kind / "out" / kind / "stats.json").read_text())
        assert sum(stats["output"]["splits"].values()) > 100
