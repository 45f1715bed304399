"""``dedup_embedding``: near-duplicate removal by cosine similarity of sentence embeddings.

MinHash sees shared word n-grams; it misses paraphrases ("Give the weather in Paris" / "What is
the weather like in Paris?") that an SFT set built from generated prompts is full of. This step
embeds each row's text with a local sentence-embedding model (e.g. all-MiniLM-L6-v2, loaded with
transformers: mean pooling over tokens, L2 normalisation, as the model card prescribes) and
treats rows whose cosine similarity is at least ``threshold`` as duplicates.

1. **Embeddings** (one pass): texts are encoded part by part (sorted by length inside a part so
   batches pad little) into a float32/float16 matrix memory-mapped in the build's work folder:
   4 B x dim per row (1.5 KB at 384 dims; half with ``precision: float16``). Null or blank texts
   get a zero vector and never match. The file is named by a digest of the texts, model and
   encoding settings, so a build kept with ``runtime.keep_cache`` and re-run with another
   ``threshold`` reuses it instead of encoding again.
2. **Pairs**: the matrix is multiplied with itself in tiles of ``block_rows`` x ``block_rows``
   (upper triangle only), keeping pairs at or above ``threshold``; pairs are folded into
   row → cluster edges whenever many pile up, so memory follows the rows that *have* a duplicate.
   Compute is O(N^2 x dim): 30k rows took 14 s on 2 busy cores (~25 GFLOP/s), so 100k rows take
   ~2.5 min and 300k ~25 min; encoding (60-150 short texts/s with MiniLM on 2 cores) costs more.
   The step suits SFT sets up to a few hundred thousand rows; use ``dedup_minhash`` beyond that.
3. **Marking** (second pass): as ``dedup_minhash`` (its clusters and keep policies), with the drop
   reason ``near_duplicate_embedding``.

RAM held through the step: nothing per row (4 B with ``keep: longest``), ~40 B per row that has
a duplicate, the model (~90 MB for MiniLM) and one tile pair (2 x block_rows x dim floats and a
block_rows^2 float32 score tile: ~100 MB at 4096 rows). Deterministic: encoding batches are formed
the same way every run, and the tiling does not change which pairs are found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, PrivateAttr

from dsforge.dedup.clusters import Clusters, check_text_column, mark_clusters
from dsforge.dedup.unionfind import connected_components
from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.registry import register_step
from dsforge.steps.base import GlobalStep
from dsforge.steps.hashing import stable_hash
from dsforge.types import PathOrHubId

REASON = "near_duplicate_embedding"
#: Pairs buffered before they are folded into row → cluster edges (16 B each: ~64 MB).
FOLD_PAIRS = 4_000_000


@register_step("dedup_embedding")
class DedupEmbedding(GlobalStep):
    """Remove rows whose sentence embedding is within cosine ``threshold`` of another row's.

    Default threshold 0.9, measured with all-MiniLM-L6-v2 (tests/test_dedup_embedding.py,
    bench/bench_sft_dedup.py): light edits of Alpaca prompts (lowercasing, "Please ..." / "What's",
    one typo) sit at cosine >= 0.9 for 92 % of copies (75 % at 0.95: typos cost most), while the
    same template with another entity ("weather in Paris" / "in Berlin", "root of 144" / "of 169")
    stays at 0.70-0.84 and the 999 distinct Alpaca demo prompts have no pair above 0.85 besides
    their exact repeats. Between 0.9 and 0.95 on GPTeacher toolformer prompts are re-phrasings of
    one request; below ~0.88 pairs start to share only a topic. Clusters are connected
    components, so a low threshold also chains rows together.
    """

    model: PathOrHubId = Field(description="local sentence-embedding model folder (transformers format)")
    column: str = "text"
    threshold: float = Field(0.9, gt=0.0, le=1.0, description="cosine similarity that makes a duplicate")
    batch_size: int = Field(64, ge=1, description="texts encoded at once")
    max_length: int = Field(256, ge=8, description="tokens per text (longer texts are truncated)")
    block_rows: int = Field(4096, ge=64, description="rows per tile of the similarity search")
    precision: Literal["float32", "float16"] = Field("float32", description="embedding storage on disk")
    threads: int | None = Field(None, ge=1, description="torch threads; the cores this process may use")
    keep: Literal["first", "longest"] = Field("first", description="which row of a cluster survives")
    mode: Literal["drop", "annotate"] = Field(
        "drop", description="annotate: add cluster_id, cluster_size, cluster_keep and drop nothing"
    )
    example = {"model": "models/all-MiniLM-L6-v2", "column": "prompt_text", "threshold": 0.9}

    _encoder: object = PrivateAttr(default=None)

    def _fail(self, message: str) -> DsforgeError:
        return DsforgeError(f"steps.{self.context.step_index} ({self.name}): {message}")

    def fingerprint_extra(self) -> str:
        """A changed model folder (other weights under the same path) must invalidate the cache."""
        folder = Path(self.model)
        if not folder.is_dir():
            return ""
        return ";".join(f"{p.name}:{p.stat().st_size}" for p in sorted(folder.iterdir()) if p.is_file())

    def setup(self) -> None:
        if self._encoder is None:
            self._encoder = _Encoder(self.model, self.max_length, self._threads(), self._fail)

    def _threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    # ------------------------------------------------------------------ run
    def run(self, store: PartStore) -> Iterator[pl.DataFrame]:
        if not store.files():
            return
        check_text_column(self, store, self.column)
        content_key, lengths = self._scan(store)
        scratch = None
        if self.context.work_dir:
            folder = Path(self.context.work_dir)
        else:
            folder = scratch = Path(tempfile.mkdtemp(prefix=f"embedding-{self.context.step_index}-"))
        try:
            matrix = self._embeddings(store, folder / f"embeddings-{content_key}.{self.precision}")
            left, right, found = self._pairs(matrix)
            del matrix
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if self.keep == "longest":
            clusters = Clusters.build(left, right, lambda rows: -lengths[rows].astype(np.int64))
        else:
            clusters = Clusters.build(left, right, lambda rows: rows)
        metrics = {"embedding_pairs": found, "embedding_clusters": clusters.count}
        yield from self._mark(store, clusters, metrics)

    # ------------------------------------------------------------------ pass 1
    def _scan(self, store: PartStore) -> tuple[str, np.ndarray | None]:
        """A digest of the texts, model and encoding settings (names the embedding file), and text
        lengths for ``keep: longest``: 8 B per row hashed, nothing else kept."""
        digest = hashlib.blake2b(digest_size=12)
        digest.update(
            repr(
                [self.fingerprint_extra(), self.model, self.max_length, self.batch_size, self.precision]
            ).encode()
        )
        lengths = []
        for batch in store.iter_batches(columns=[self.column]):
            texts = batch.get_column(self.column)
            digest.update(batch.select(stable_hash(pl.col(self.column))).to_series().to_numpy().tobytes())
            digest.update(texts.is_null().to_numpy().tobytes())
            if self.keep == "longest":
                lengths.append(texts.str.len_chars().fill_null(0).to_numpy().astype(np.uint32))
        return digest.hexdigest(), (np.concatenate(lengths) if lengths else None)

    def _embeddings(self, store: PartStore, path: Path) -> np.ndarray:
        """The embedding matrix, encoded into ``path`` unless a finished one is already there (a
        build kept with ``runtime.keep_cache`` re-run with another threshold skips the encoding)."""
        total = store.num_rows()
        dtype = np.dtype(self.precision)
        if total == 0:
            return np.zeros((0, 1), dtype=dtype)
        if path.exists():
            dim = path.stat().st_size // (total * dtype.itemsize)
            return np.memmap(path, dtype=dtype, mode="r", shape=(total, dim))
        self.setup()
        encoder: _Encoder = self._encoder  # type: ignore[assignment]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        matrix = np.memmap(partial, dtype=dtype, mode="w+", shape=(total, encoder.dim))
        offset = 0
        for batch in store.iter_batches(columns=[self.column]):
            texts = batch.get_column(self.column)
            matrix[offset : offset + texts.len()] = encoder.encode(texts, self.batch_size).astype(dtype)
            offset += texts.len()
        matrix.flush()
        del matrix
        partial.rename(path)
        return np.memmap(path, dtype=dtype, mode="r", shape=(total, encoder.dim))

    # ------------------------------------------------------------------ pairs
    def _pairs(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """All pairs (i < j) with cosine ≥ threshold, folded to row → cluster edges as they pile up."""
        import torch

        total, block = matrix.shape[0], self.block_rows
        lefts: list[np.ndarray] = []
        rights: list[np.ndarray] = []
        buffered = found = 0
        with _torch_threads(self._threads()), torch.inference_mode():
            for start in range(0, total, block):
                rows = torch.from_numpy(np.array(matrix[start : start + block], dtype=np.float32))
                for other in range(start, total, block):
                    cols = rows if other == start else _tile(matrix, other, block)
                    scores = rows @ cols.T
                    if other == start:
                        scores = torch.triu(scores, diagonal=1)
                    i, j = torch.nonzero(scores >= self.threshold, as_tuple=True)
                    if i.numel():
                        lefts.append(i.numpy().astype(np.int64) + start)
                        rights.append(j.numpy().astype(np.int64) + other)
                        buffered += i.numel()
                        found += i.numel()
                    if buffered > FOLD_PAIRS:
                        lefts, rights = _fold(lefts, rights)
                        buffered = lefts[0].size
        if not lefts:
            return np.empty(0, np.int64), np.empty(0, np.int64), 0
        left, right = np.concatenate(lefts), np.concatenate(rights)
        return left, right, found

    # ------------------------------------------------------------------ pass 2
    def _mark(self, store: PartStore, clusters: Clusters, metrics: dict[str, int]) -> Iterator[pl.DataFrame]:
        return mark_clusters(store, clusters, self.mode, REASON, metrics)


def _tile(matrix: np.ndarray, start: int, block: int):
    import torch

    return torch.from_numpy(np.array(matrix[start : start + block], dtype=np.float32))


def _fold(lefts: list[np.ndarray], rights: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Replace a pair list by one edge per row to its component's smallest row (same components)."""
    nodes, roots = connected_components(np.concatenate(lefts), np.concatenate(rights))
    moved = nodes != roots
    return [roots[moved]], [nodes[moved]]


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch with ``count`` threads (the cores this build may use), then restore the setting."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class _Encoder:
    """A transformers encoder + mean pooling + L2 normalisation (sentence-transformers' recipe)."""

    def __init__(self, model: str, max_length: int, threads: int, fail) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.threads, self.max_length = threads, max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise fail(f"cannot load embedding model {model!r}: {first}") from None
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: pl.Series, batch_size: int) -> np.ndarray:
        """Unit-norm embeddings of ``texts`` (zero rows for null or blank texts)."""
        import torch

        out = np.zeros((texts.len(), self.dim), dtype=np.float32)
        present = (texts.str.strip_chars().str.len_chars().fill_null(0) > 0).to_numpy()
        rows = np.flatnonzero(present)
        if not rows.size:
            return out
        values = texts.to_list()
        lengths = texts.str.len_chars().fill_null(0).to_numpy()[rows]
        rows = rows[np.argsort(-lengths, kind="stable")]  # similar lengths share a batch: little padding
        with _torch_threads(self.threads), torch.inference_mode():
            for start in range(0, rows.size, batch_size):
                chunk = rows[start : start + batch_size]
                encoded = self.tokenizer(
                    [values[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[chunk] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out
