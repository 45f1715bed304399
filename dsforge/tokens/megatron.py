"""The `megatron` sink: token ids → Megatron indexed datasets (``<prefix>.bin`` + ``<prefix>.idx``).

Streams the store part by part: ids are appended to ``.bin`` as they come, and only the
per-document lengths (4 bytes per document) are kept in memory for the ``.idx``, written at
the end. Each split gets its own dataset, ``{prefix}_{split}``; with ``shard_tokens`` a split is
cut into ``{prefix}_{split}_NNNNN`` shards of at most that many tokens (never splitting a
document; a document longer than a shard gets a shard of its own). Documents keep the store
order: put a ``shuffle`` step before the sink for a seeded global shuffle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from pydantic import Field, ValidationInfo, field_validator, model_validator

from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.io.sinks import DEFAULT_SPLIT, Sink
from dsforge.registry import register_sink
from dsforge.tokens.mmidx import BinWriter
from dsforge.tokens.stream import column_dtype, iter_token_batches
from dsforge.tokens.tokenizer import check_tokenizer_location, fits_uint16, load_tokenizer
from dsforge.types import PathOrHubId

WHERE = "output (megatron)"
_SMALL_INTS = (pl.UInt8, pl.UInt16, pl.Int8, pl.Int16)


def parse_count(value: int | str) -> int:
    """'500M' → 500_000_000, '2B' → 2_000_000_000 (decimal, tokens not bytes)."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgbt]?)\s*", str(value).lower())
    if not match:
        raise ValueError(f"not a token count: {value!r} (e.g. 100000000, 500M, 2B)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}[match.group(2)]
    return int(float(match.group(1)) * scale)


def split_order(splits: list[str]) -> list[str]:
    return sorted(splits, key=lambda s: (s != "train", s != "validation", s))


class _SplitShards:
    """The shards of one split: rolls to a new ``.bin``/``.idx`` pair every ``shard_tokens`` tokens."""

    def __init__(
        self, dest: Path, prefix: str, split: str, dtype: np.dtype, shard_tokens: int | None
    ) -> None:
        self.dest, self.prefix, self.split = dest, prefix, split
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.writer: BinWriter | None = None
        self.done: list[dict[str, Any]] = []

    def _name(self) -> str:
        if self.shard_tokens is None:
            return f"{self.prefix}_{self.split}"
        return f"{self.prefix}_{self.split}_{len(self.done):05d}"

    def _current(self) -> BinWriter:
        if self.writer is None:
            self.writer = BinWriter(self.dest / self._name(), self.dtype)
        return self.writer

    def _roll(self) -> None:
        writer = self.writer
        if writer is None:
            return
        writer.close()
        self.done.append(
            {
                "prefix": writer.prefix.name,
                "split": self.split,
                "documents": writer.documents,
                "tokens": writer.tokens,
            }
        )
        self.writer = None

    def add(self, lengths: np.ndarray, values: np.ndarray) -> None:
        if self.shard_tokens is None:
            self._current().append(lengths, values)
            return
        ends = np.cumsum(lengths)
        first = 0
        while first < len(lengths):
            writer = self._current()
            base = int(ends[first - 1]) if first else 0
            fit = int(np.searchsorted(ends[first:] - base, self.shard_tokens - writer.tokens, side="right"))
            if fit == 0 and writer.tokens:
                self._roll()
                continue
            stop = first + max(fit, 1)
            writer.append(lengths[first:stop], values[base : int(ends[stop - 1])])
            first = stop
            if writer.tokens >= self.shard_tokens:
                self._roll()

    def close(self) -> list[dict[str, Any]]:
        if self.writer is None and not self.done:
            self._current()  # an empty split still gets a (valid, empty) dataset
        self._roll()
        return self.done


@register_sink("megatron")
class MegatronSink(Sink):
    """Megatron-LM / megatron-core indexed datasets, one per split (optionally sharded by tokens)."""

    tabular: ClassVar[bool] = False

    prefix: str = Field("tokens", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="file name prefix")
    column: str = Field("input_ids", description="the token-id list column")
    vocab_size: int | None = Field(None, ge=1, description="vocabulary size: picks uint16 (fits) or int32")
    tokenizer: PathOrHubId | None = Field(None, description="read vocab_size (and EOS) from this tokenizer")
    shard_tokens: int | str | None = Field(None, description="at most this many tokens per shard, e.g. 1B")

    @field_validator("shard_tokens")
    @classmethod
    def _count(cls, value: int | str | None) -> int | str | None:
        if value is not None and parse_count(value) < 1:
            raise ValueError("shard_tokens must be at least 1")
        return value

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return (
            None if value is None else check_tokenizer_location(value, (info.context or {}).get("base_dir"))
        )

    @model_validator(mode="after")
    def _one_vocab_source(self) -> MegatronSink:
        if self.vocab_size is not None and self.tokenizer is not None:
            raise ValueError("give vocab_size or tokenizer, not both")
        return self

    def _vocab(self) -> tuple[int | None, int | None]:
        """(vocab size, EOS id) from the parameters, when they say."""
        if self.tokenizer is not None:
            info = load_tokenizer(self.tokenizer, WHERE)
            return info.vocab_size, info.eos_id
        return self.vocab_size, None

    def _dtype(self, store: PartStore, vocab_size: int | None) -> np.dtype:
        """uint16 when every id fits, else int32 (Megatron has no uint32 code)."""
        if vocab_size is not None:
            if vocab_size > 2**31:
                raise DsforgeError(f"{WHERE}: vocab_size {vocab_size:,} does not fit Megatron's int32 ids")
            return np.dtype(np.uint16 if fits_uint16(vocab_size) else np.int32)
        inner = column_dtype(store, self.column, WHERE)
        return np.dtype(np.uint16 if inner is None or inner in _SMALL_INTS else np.int32)

    def write(self, store: PartStore, dest: Path) -> dict[str, Any]:
        vocab_size, eos_id = self._vocab()
        dtype = self._dtype(store, vocab_size)
        limit = int(np.iinfo(dtype).max) if vocab_size is None else vocab_size - 1
        shard_tokens = None if self.shard_tokens is None else parse_count(self.shard_tokens)
        splits: dict[str, _SplitShards] = {}
        for batch in iter_token_batches(store, self.column, WHERE):
            if batch.tokens:
                low, high = int(batch.values.min()), int(batch.values.max())
                if low < 0 or high > limit:
                    bad = low if low < 0 else high
                    raise DsforgeError(
                        f"{WHERE}: token id {bad} is outside 0..{limit} ({dtype.name}); set vocab_size or "
                        "tokenizer to the real vocabulary"
                    )
            if batch.split not in splits:
                splits[batch.split] = _SplitShards(dest, self.prefix, batch.split, dtype, shard_tokens)
            splits[batch.split].add(batch.lengths, batch.values)
        if not splits:
            splits[DEFAULT_SPLIT] = _SplitShards(dest, self.prefix, DEFAULT_SPLIT, dtype, shard_tokens)
        shards = [shard for split in split_order(list(splits)) for shard in splits[split].close()]
        order = split_order(list(splits))
        info: dict[str, Any] = {
            "format": self.name,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "splits": {s: sum(x["documents"] for x in shards if x["split"] == s) for s in order},
            "documents": {s: sum(x["documents"] for x in shards if x["split"] == s) for s in order},
            "tokens": {s: sum(x["tokens"] for x in shards if x["split"] == s) for s in order},
            "prefixes": {s: [x["prefix"] for x in shards if x["split"] == s] for s in order},
            "shards": shards,
            "files": sorted(f"{x['prefix']}{ext}" for x in shards for ext in (".bin", ".idx")),
        }
        if eos_id is not None:
            info["eos_id"] = eos_id
        return info
