"""dedup_exact's whitespace folding equals the plain regex on real multilingual text."""

from __future__ import annotations

import polars as pl

from dsforge.io.readers import read_file
from dsforge.steps.global_ops import collapse_whitespace


def test_fast_whitespace_folding_equals_the_regex(shared_data):
    texts = []
    for name in (
        "raw/udhr_multilingual.jsonl.zst",
        "raw/c4_demo.jsonl.zst",
        "sft/llamafactory_alpaca_zh_demo.json.zst",
    ):
        for raw in read_file(
            shared_data / name, "auto", 1000, text_mode="line", text_field="text", split="train"
        ):
            column = "text" if "text" in raw.frame.columns else "output"
            texts.append(raw.frame.get_column(column).alias("text"))
    series = pl.concat(texts)
    unusual = series.str.contains(r"[\s--[ \t\n\r\x0b\x0c]]").sum()
    assert unusual >= 5  # the sample really holds non-ASCII spaces (UDHR, Chinese text)
    expected = series.str.replace_all(r"\s+", " ").str.strip_chars()
    assert collapse_whitespace(series).to_list() == expected.to_list()
