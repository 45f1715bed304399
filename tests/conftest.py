"""Shared fixtures: where the real data lives, and a helper to write recipes for a test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# A private Hugging Face datasets cache per test session: `load_dataset(folder)` caches by path,
# and a reused temporary path must never be answered with another run's cached data.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="dsforge-test-hf-datasets-")
# Likewise dsforge's own caches (tokenizers, LLM generations): every test session starts empty.
os.environ["DSFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="dsforge-test-cache-")

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"real test data missing: {SHARED_DATA} (the shared/ folder must sit beside the repo)")
    return SHARED_DATA


@pytest.fixture
def write_recipe(tmp_path: Path):
    """Write a recipe dict as YAML in tmp_path and return its path (output defaults to tmp_path/out)."""

    def write(recipe: dict, name: str = "recipe.yaml") -> Path:
        recipe = dict(recipe)
        recipe.setdefault("name", "test")
        recipe["output"] = {"path": str(tmp_path / "out"), **(recipe.get("output") or {})}
        recipe.setdefault("runtime", {"workers": 1, "batch_size": 500})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        return path

    return write
