"""The `tokenize` step: text → `input_ids` with a fast Hugging Face tokenizer, EOS per document.

Encoding goes straight to the Rust tokenizer's ``encode_batch_fast`` (no character offsets,
no post-processor template); the step adds BOS/EOS itself, so the ids are exactly what
``tokenizer(text)`` gives plus EOS, whatever template the tokenizer carries. Ids are stored as
UInt16 when the vocabulary fits (half the bytes of UInt32 in every part and shard), else UInt32.
Each row also reports ``__metric__tokens``, so the build funnel is a token ledger.

The tokenizer is loaded once per process in ``setup()`` (through dsforge's tokenizer cache, so
workers skip the transformers import). Inside dsforge worker processes the Rust thread pool is
turned off: the process pool already uses the cores. In the main process (``workers: 1``) the
``TOKENIZERS_PARALLELISM`` setting stands (dsforge defaults it to false; export true to use it).
"""

from __future__ import annotations

import multiprocessing
import os
from itertools import chain, pairwise

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Transform
from dsforge.steps.columns import require_columns
from dsforge.tokens.tokenizer import (
    TokenizerInfo,
    check_tokenizer_location,
    fits_uint16,
    load_tokenizer,
    tokenizer_fingerprint,
)
from dsforge.types import PathOrHubId

OUTPUT_COLUMN = "input_ids"
TOKENS_METRIC = f"{METRIC_PREFIX}tokens"
#: UTF-8 bytes of text per encode call: the Rust Encoding objects cost ~100 bytes per token while
#: they live, so whatever the batch size, one call holds ~250k tokens (~25 MB), not the whole batch.
ENCODE_BYTES = 1_000_000


def _chunks_by_bytes(text: pl.Series, limit: int) -> list[list[str]]:
    """Consecutive slices of ``text`` holding about ``limit`` bytes each (at least one row)."""
    ends = text.str.len_bytes().cum_sum().to_numpy()
    group = ends // limit
    cuts = np.flatnonzero(np.diff(group)) + 1
    bounds = [0, *cuts.tolist(), len(text)]
    return [text.slice(a, b - a).to_list() for a, b in pairwise(bounds) if b > a]


def with_specials(
    lengths: np.ndarray, body: np.ndarray, bos: int | None, eos: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Put ``bos`` before and ``eos`` after every document of a flat token array, in one pass.

    Returns the new per-document lengths and the new flat values (same dtype as ``body``).
    """
    extra = (bos is not None) + (eos is not None)
    if not extra:
        return lengths, body
    new_lengths = lengths + extra
    ends = np.cumsum(new_lengths)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=body.dtype)
    is_body = np.ones(len(out), dtype=bool)
    if bos is not None:
        starts = ends - new_lengths
        out[starts] = bos
        is_body[starts] = False
    if eos is not None:
        out[ends - 1] = eos
        is_body[ends - 1] = False
    out[is_body] = body
    return new_lengths, out


def list_series(name: str, lengths: np.ndarray, values: np.ndarray) -> pl.Series:
    """A polars List column from per-row lengths and flat values (no Python lists involved)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pl.Series(name, array)


@register_step("tokenize")
class Tokenize(Transform):
    """Encode a text column to token ids (`input_ids`), appending EOS to every document."""

    tokenizer: PathOrHubId = Field(description="tokenizer folder or Hub id (AutoTokenizer.from_pretrained)")
    column: str = "text"
    add_eos: bool = Field(True, description="append the EOS token to every document")
    add_bos: bool | None = Field(None, description="prepend BOS; null = do what the tokenizer does by itself")
    example = {"tokenizer": "gpt2", "column": "text"}

    _info: TokenizerInfo | None = PrivateAttr(default=None)

    @field_validator("tokenizer")
    @classmethod
    def _exists_if_path(cls, value: str, info: ValidationInfo) -> str:
        return check_tokenizer_location(value, (info.context or {}).get("base_dir"))

    def fingerprint_extra(self) -> str:
        return tokenizer_fingerprint(self.tokenizer)

    @property
    def _where(self) -> str:
        return f"steps.{self.context.step_index} ({self.name})"

    def setup(self) -> None:
        if multiprocessing.parent_process() is not None:
            # In a dsforge worker the process pool is the parallelism: Rust threads on top
            # would oversubscribe the cores. In the main process the user's setting stands.
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        if self._info is None:
            self._info = load_tokenizer(self.tokenizer, self._where)
            self._check_specials(self._info)

    def _check_specials(self, info: TokenizerInfo) -> None:
        for wanted, token_id, kind in (
            (self.add_eos, info.eos_id, "eos"),
            (self.add_bos, info.bos_id, "bos"),
        ):
            if wanted and token_id is None:
                problem = f"tokenizer {self.tokenizer!r} has no {kind.upper()} token"
                raise DsforgeError(f"{self._where}: {problem}; set add_{kind}: false")

    @property
    def info(self) -> TokenizerInfo:
        self.setup()
        return self._info

    @property
    def id_dtype(self) -> type[pl.DataType]:
        return pl.UInt16 if fits_uint16(self.info.vocab_size) else pl.UInt32

    def _encode(self, texts: list[str], dtype: type[np.integer]) -> tuple[np.ndarray, np.ndarray]:
        """Per-text token counts and the flat ids, without special tokens (no offsets computed)."""
        encodings = self.info.backend.encode_batch_fast(texts, add_special_tokens=False)
        ids = [encoding.ids for encoding in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return lengths, np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        info = self.info
        text = batch.get_column(self.column).cast(pl.String).fill_null("")
        numpy_dtype = np.uint16 if self.id_dtype == pl.UInt16 else np.uint32
        parts = [self._encode(texts, numpy_dtype) for texts in _chunks_by_bytes(text, ENCODE_BYTES)]
        lengths = np.concatenate([np.zeros(0, dtype=np.int64), *(part[0] for part in parts)])
        body = np.concatenate([np.zeros(0, dtype=numpy_dtype), *(part[1] for part in parts)])
        add_bos = info.adds_bos if self.add_bos is None else self.add_bos
        lengths, values = with_specials(
            lengths, body, info.bos_id if add_bos else None, info.eos_id if self.add_eos else None
        )
        return batch.with_columns(
            list_series(OUTPUT_COLUMN, lengths, values).cast(pl.List(self.id_dtype)),
            pl.Series(TOKENS_METRIC, lengths, dtype=pl.Int64),
        )
