"""`apply_to`: a step runs on some sources' rows; the other rows pass unchanged, in place."""

from __future__ import annotations

import polars as pl

from dsforge.runner import build


def _sources(shared_data) -> list[dict]:
    return [
        {"name": "c4", "path": str(shared_data / "raw" / "c4_demo.jsonl.zst"), "max_rows": 60},
        {"name": "wiki", "path": str(shared_data / "raw" / "wiki_demo.txt.zst"), "format": "txt"},
        {"name": "c4_again", "path": str(shared_data / "raw" / "c4_demo.jsonl.zst"), "max_rows": 30},
    ]


def test_row_step_only_touches_named_sources(shared_data, write_recipe):
    recipe = {
        "sources": _sources(shared_data),
        "steps": [{"step": "length_filter", "unit": "words", "min": 100000, "apply_to": ["wiki"]}],
        "runtime": {"workers": 1, "batch_size": 7},
    }
    result = build(write_recipe(recipe))
    frame = pl.read_parquet(result.output / "data")
    # every wiki article is shorter than 100k words: all dropped; c4 rows untouched, in order
    assert set(frame.get_column("source")) == {"c4", "c4_again"}
    assert result.stats["steps"][0]["dropped"] == {"shorter than 100000 words": 30}
    assert frame.height == 90


def test_global_step_only_sees_named_sources(shared_data, write_recipe):
    steps = [{"step": "dedup_exact", "apply_to": ["c4", "wiki"]}]
    result = build(write_recipe({"sources": _sources(shared_data), "steps": steps}))
    frame = pl.read_parquet(result.output / "data")
    # c4_again repeats c4's first 30 documents but is not deduplicated: it is not in apply_to
    assert frame.filter(pl.col("source") == "c4_again").height == 30
    assert result.stats["steps"][0]["rows_in"] == 120
    both = build(
        write_recipe({"sources": _sources(shared_data), "steps": [{"step": "dedup_exact"}]}, "all.yaml"),
        force=True,
        output=str(result.output) + "-all",
    )
    assert both.stats["steps"][0]["dropped"]["duplicate"] >= 30


def test_apply_to_needs_the_source_column(shared_data, write_recipe):
    import pytest

    from dsforge.errors import DsforgeError

    steps = [
        {"step": "select_columns", "columns": ["text"]},
        {"step": "drop_empty", "apply_to": ["c4"]},
    ]
    with pytest.raises(DsforgeError, match=r"apply_to needs the 'source' column"):
        build(write_recipe({"sources": _sources(shared_data), "steps": steps}))


def test_mixed_batches_keep_row_order(shared_data, write_recipe, tmp_path):
    shuffled = {"sources": _sources(shared_data), "steps": [{"step": "shuffle", "batch_rows": 16}]}
    base = pl.read_parquet(
        build(write_recipe(shuffled, "a.yaml"), output=str(tmp_path / "a")).output / "data"
    )
    only_wiki = [
        {"step": "drop_empty", "apply_to": ["wiki"]},
        {"step": "length_filter", "min": 1_000_000, "apply_to": ["wiki"]},
    ]
    filtered = dict(shuffled, steps=[*shuffled["steps"], *only_wiki])
    out = pl.read_parquet(build(write_recipe(filtered, "b.yaml"), output=str(tmp_path / "b")).output / "data")
    assert (
        out.get_column("text").to_list()
        == base.filter(pl.col("source") != "wiki").get_column("text").to_list()
    )
