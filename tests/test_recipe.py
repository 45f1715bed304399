"""Recipe loading: interpolation, overrides, relative paths and all-at-once validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsforge.errors import DsforgeError, RecipeError
from dsforge.recipe import apply_override, load_recipe


def _recipe(shared: Path, **extra) -> dict:
    return {
        "name": "t",
        "sources": [{"path": str(shared / "raw" / "c4_demo.jsonl.zst")}],
        "steps": [{"step": "length_filter", "min": 10}],
        **extra,
    }


def test_env_interpolation_and_overrides(shared_data, write_recipe, monkeypatch):
    monkeypatch.setenv("DSF_MIN", "25")
    path = write_recipe(
        _recipe(shared_data, steps=[{"step": "length_filter", "min": "${DSF_MIN}", "max": "${DSF_MAX:-900}"}])
    )
    loaded = load_recipe(path, ["steps.0.max=5000", "output.path=elsewhere", "seed=7"])
    step = loaded.steps[0]
    assert (step.min, step.max) == (25, 5000)
    assert loaded.recipe.seed == 7
    assert loaded.output_path == (path.parent / "elsewhere").resolve()


def test_unset_variable_names_its_field(shared_data, write_recipe, monkeypatch):
    monkeypatch.delenv("DSF_NOPE", raising=False)
    path = write_recipe(_recipe(shared_data, description="${DSF_NOPE}"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "description: environment variable DSF_NOPE is not set" in str(info.value)


def test_relative_source_paths_are_taken_from_the_recipe_folder(shared_data, tmp_path):
    (tmp_path / "sub").mkdir()
    data = tmp_path / "sub" / "docs.jsonl"
    data.write_text('{"text": "hello world"}\n')
    recipe = tmp_path / "sub" / "r.yaml"
    recipe.write_text("name: r\nsources: [{path: docs.jsonl}]\noutput: {path: out}\n")
    loaded = load_recipe(recipe)
    assert loaded.source_files == [[data]]
    assert loaded.output_path == tmp_path / "sub" / "out"


def test_every_problem_is_reported_at_once(shared_data, write_recipe):
    path = write_recipe(
        {
            "name": "t",
            "sources": [{"path": "missing.jsonl"}, {"path": str(shared_data / "raw" / "c4_demo.jsonl.zst")}],
            "steps": [
                {"step": "lenght_filter", "min": 3},
                {"step": "length_filter", "min": "abc"},
                {"step": "dedup_exact", "colums": ["text"]},
                "not a mapping",
            ],
            "output": {"path": "out", "format": "parket"},
        }
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert "steps.0.step: unknown step 'lenght_filter' (did you mean length_filter" in text
    assert "steps.1.min: Input should be a valid integer" in text and "(got 'abc')" in text
    assert "steps.2.colums: unknown field (allowed:" in text
    assert "steps.3: expected a mapping with 'step: NAME'" in text
    assert "sources.0.path: file not found:" in text
    assert "output.format: unknown output format 'parket' (did you mean parquet" in text
    assert len(problems) == 6


def test_top_level_type_errors_name_the_field(write_recipe):
    path = write_recipe({"name": "t", "seed": "x", "sources": [], "steps": []})
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert "seed: Input should be a valid integer" in text
    assert "sources: List should have at least 1 item" in text


def test_override_errors_are_one_line():
    raw = {"steps": [{"step": "x"}]}
    with pytest.raises(DsforgeError, match=r"steps\.5 is not an index of a list of 1"):
        apply_override(raw, "steps.5.min=3")
    with pytest.raises(DsforgeError, match="expected KEY=VALUE"):
        apply_override(raw, "steps.0.min")
    apply_override(raw, "steps.1.step=shuffle")
    assert raw["steps"][1] == {"step": "shuffle"}


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsources:\n  - path: [unclosed\n")
    with pytest.raises(DsforgeError, match=r"bad.yaml:\d+: invalid YAML"):
        load_recipe(path)
