"""`count_tokens`: the token ledger without the token ids.

Writes ``num_tokens`` per row (as `tokenize` would count them, EOS/BOS included). Put it early
in a recipe and the funnel reports, for every later step, how many tokens it kept and dropped,
in total and per source; put it again after steps that rewrite text to re-count.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dsforge.execute import TOKEN_COUNT_COLUMN
from dsforge.registry import register_step
from dsforge.steps.columns import require_columns
from dsforge.tokens.tokenize import ENCODE_BYTES, Tokenize, _chunks_by_bytes


@register_step("count_tokens")
class CountTokens(Tokenize):
    """Count each row's tokens into `num_tokens`, so the funnel becomes a token ledger."""

    example = {"tokenizer": "gpt2", "column": "text"}

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        info = self.info
        text = batch.get_column(self.column).cast(pl.String).fill_null("")
        lengths = [
            np.fromiter(
                (len(e.ids) for e in info.backend.encode_batch_fast(texts, add_special_tokens=False)),
                dtype=np.int64,
            )
            for texts in _chunks_by_bytes(text, ENCODE_BYTES)
        ]
        counts = np.concatenate([np.zeros(0, dtype=np.int64), *lengths])
        add_bos = info.adds_bos if self.add_bos is None else self.add_bos
        counts += int(bool(add_bos) and info.bos_id is not None) + int(
            self.add_eos and info.eos_id is not None
        )
        return batch.with_columns(pl.Series(TOKEN_COUNT_COLUMN, counts, dtype=pl.UInt32))
