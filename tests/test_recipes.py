"""The shipped recipes validate, and the pretraining recipe builds shards that verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsforge.recipe import load_recipe
from dsforge.runner import build

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_validate(recipe, shared_data):
    loaded = load_recipe(recipe)
    assert loaded.steps, f"{recipe.name} has no steps"


def test_pretrain_recipe_builds_verified_megatron_shards(shared_data, tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "pretrain.yaml"
    result = build(recipe, output=str(tmp_path / "pretrain"), limit=40, workers=2)
    stats = result.stats
    assert stats["output"]["format"] == "megatron"
    assert stats["output"]["tokens"]["train"] == stats["steps"][-1]["tokens_out"] > 10_000
    names = {s["step"] for s in stats["steps"]}
    assert {"extract_html", "language", "gopher_quality", "c4_quality", "dedup_minhash", "tokenize"} <= names
    verify = subprocess.run(
        [sys.executable, "-m", "dsforge", "verify", str(tmp_path / "pretrain"),
         "--tokenizer", str(shared_data / "tokenizers" / "gpt2")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
