"""The token ledger: with `count_tokens` early, every step reports the tokens it kept, per source."""

from __future__ import annotations

import polars as pl
from transformers import AutoTokenizer

from dsforge.io.readers import read_file
from dsforge.runner import build


def _texts(path, fmt="auto", limit=None) -> list[str]:
    batches = read_file(path, fmt, 1000, text_mode="line", text_field="text", split="train")
    texts = pl.concat([b.frame.select("text") for b in batches]).get_column("text").to_list()
    return texts[:limit] if limit else texts


def test_funnel_counts_tokens_per_step_and_source(shared_data, write_recipe):
    tokenizer_path = str(shared_data / "tokenizers" / "gpt2")
    c4, wiki = shared_data / "raw" / "c4_demo.jsonl.zst", shared_data / "raw" / "wiki_demo.txt.zst"
    recipe = {
        "sources": [
            {"name": "c4", "path": str(c4), "max_rows": 120},
            {"name": "wiki", "path": str(wiki), "format": "txt"},
        ],
        "steps": [
            {"step": "count_tokens", "tokenizer": tokenizer_path},
            {"step": "length_filter", "unit": "words", "min": 120},
            {"step": "dedup_exact"},
            {"step": "tokenize", "tokenizer": tokenizer_path},
            {"step": "drop_columns", "columns": ["num_tokens"]},
        ],
    }
    result = build(write_recipe(recipe))
    counted, length, dedup, tokenize, _ = result.stats["steps"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def tokens(texts: list[str]) -> int:
        return sum(len(ids) + 1 for ids in tokenizer(texts)["input_ids"])  # + EOS

    assert counted["tokens_by_source"] == {
        "c4": tokens(_texts(c4, limit=120)),
        "wiki": tokens(_texts(wiki, "txt")),
    }
    assert counted["tokens_in"] == counted["tokens_out"] == sum(counted["tokens_by_source"].values())
    assert length["tokens_in"] == counted["tokens_out"] > length["tokens_out"] > 0
    assert dedup["tokens_in"] == length["tokens_out"]
    assert tokenize["tokens_out"] == tokenize["metrics"]["tokens"] == dedup["tokens_out"]
    assert sum(tokenize["tokens_by_source"].values()) == tokenize["tokens_out"]
    assert f"| {tokenize['tokens_out']:,} |" in (result.output / "README.md").read_text()
