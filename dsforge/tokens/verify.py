"""`dsforge verify`: prove token shards are what the trainer will think they are.

For Megatron datasets (``.bin`` + ``.idx``) it checks the index header and dtype, that the
byte pointers are the running sum of the lengths, that the document indices are sound, that
``.bin`` holds exactly the bytes the index describes (a truncated copy fails), and that every
document ends with EOS. For packed-Parquet folders it checks shard numbering, window lengths,
``doc_starts`` (and ``position_ids``), and that EOS precedes every document start. Both
compare against the build's ``stats.json`` when it is beside the shards, check ids against the
tokenizer's vocabulary and decode sample documents with it (``--tokenizer``). Everything is
read through memory maps or record batches: memory stays bounded whatever the shard size.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dsforge.errors import VerifyError
from dsforge.tokens.mmidx import read_index
from dsforge.tokens.tokenizer import TokenizerInfo, fits_uint16, load_tokenizer

_CHUNK = 1 << 24  # tokens per chunk when scanning a .bin for its largest id
_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
SAMPLE_CHARS = 160


@dataclass
class Report:
    """What was checked (``lines``) and what is wrong (``problems``)."""

    target: Path
    kind: str = ""
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    documents: int = 0
    tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise VerifyError(f"verify failed: {self.problems[0]}{more}")


@dataclass
class _Context:
    tokenizer: TokenizerInfo | None
    eos_id: int | None  # known EOS (tokenizer or stats.json); None = infer it
    require_eos: bool
    samples: int
    stats: dict[str, Any] | None


def verify_shards(
    target: Path, tokenizer: str | None = None, samples: int = 2, require_eos: bool = True
) -> Report:
    """Verify a Megatron prefix / folder of prefixes or a packed_parquet folder; never raises on findings."""
    target = Path(target)
    info = load_tokenizer(tokenizer, "--tokenizer", full=True) if tokenizer else None
    kind, items, folder = _resolve(target)
    stats = _read_stats(folder)
    eos_id = info.eos_id if info else (stats or {}).get("eos_id")
    context = _Context(info, eos_id, require_eos, samples, stats)
    report = Report(target, kind)
    if kind == "megatron":
        for prefix in items:
            _verify_megatron(prefix, context, report)
        if target.is_dir():
            _check_listed_shards(items, stats, report)
    else:
        _verify_packed(folder, items, context, report)
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    report.lines.append(f"total: {report.documents:,} documents, {report.tokens:,} tokens: {verdict}")
    report.lines.extend(f"problem: {p}" for p in report.problems)
    return report


# --------------------------------------------------------------------------- finding the shards


def _resolve(target: Path) -> tuple[str, list[Path], Path]:
    """(kind, megatron prefixes or parquet files, folder holding stats.json)."""
    if target.is_dir():
        parquet = sorted((target / "data").glob("*.parquet"))
        if parquet:
            return "packed_parquet", parquet, target
        prefixes = sorted(p.with_suffix("") for p in target.glob("*.idx"))
        prefixes += sorted(
            p.with_suffix("") for p in target.glob("*.bin") if not p.with_suffix(".idx").exists()
        )
        if prefixes:
            return "megatron", sorted(prefixes), target
        raise VerifyError(f"{target}: no Megatron .idx/.bin files and no data/*.parquet shards to verify")
    prefix = target.with_suffix("") if target.suffix in (".bin", ".idx") else target
    if prefix.with_name(prefix.name + ".idx").exists() or prefix.with_name(prefix.name + ".bin").exists():
        return "megatron", [prefix], prefix.parent
    raise VerifyError(
        f"{target}: not a Megatron prefix (no {prefix.name}.idx / .bin) nor a packed_parquet folder"
    )


def _read_stats(folder: Path) -> dict[str, Any] | None:
    """The build's output summary (stats.json "output"), when the shards sit in a dsforge output."""
    path = folder / "stats.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("output")
    except (OSError, ValueError):
        return None


def _decode_sample(context: _Context, ids: np.ndarray) -> str:
    text = context.tokenizer.decode(ids.tolist())
    return repr(text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else ""))


def _check_eos(ends: np.ndarray, context: _Context, label: str, report: Report) -> None:
    """Every token in ``ends`` (the token before each document boundary) must be EOS."""
    if not context.require_eos or not len(ends):
        return
    eos = context.eos_id
    source = "tokenizer" if context.tokenizer else "stats.json"
    if eos is None:
        eos, _ = Counter(ends.tolist()).most_common(1)[0]
        source = "inferred"
    wrong = np.flatnonzero(ends != eos)
    if len(wrong):
        report.problems.append(
            f"{label}: {len(wrong):,} of {len(ends):,} document boundaries lack EOS {eos} ({source}); "
            f"first at document {int(wrong[0])} (token {int(ends[wrong[0]])})"
        )
    else:
        report.lines.append(f"  EOS {eos} ({source}) at all {len(ends):,} document boundaries")


def _check_vocab(max_id: int, dtype: np.dtype, context: _Context, label: str, report: Report) -> None:
    if context.tokenizer is None:
        return
    vocab = context.tokenizer.vocab_size
    if max_id >= vocab:
        report.problems.append(
            f"{label}: token id {max_id} is outside the tokenizer's vocabulary ({vocab:,})"
        )
    if dtype == np.uint16 and not fits_uint16(vocab):
        report.problems.append(f"{label}: dtype uint16 cannot hold this tokenizer's {vocab:,} ids")


# --------------------------------------------------------------------------- megatron


def _verify_megatron(prefix: Path, context: _Context, report: Report) -> None:
    label = prefix.name
    idx_path, bin_path = (prefix.with_name(prefix.name + ext) for ext in (".idx", ".bin"))
    for path in (idx_path, bin_path):
        if not path.exists():
            report.problems.append(f"{label}: missing {path.name}")
            return
    try:
        index = read_index(idx_path)
    except ValueError as exc:
        report.problems.append(str(exc))
        return
    itemsize = index.dtype.itemsize
    lengths = np.asarray(index.lengths, dtype=np.int64)
    problems_before = len(report.problems)
    if index.file_bytes != index.expected_bytes:
        extra = index.file_bytes - index.expected_bytes
        kind = (
            "a multimodal index (modes per sequence)" if extra == len(lengths) else f"{extra:,} stray bytes"
        )
        report.problems.append(
            f"{idx_path.name}: {kind} after the document indices; dsforge checks text indices"
        )
    if len(lengths) and lengths.min() < 0:
        report.problems.append(f"{idx_path.name}: negative sequence length at {int(np.argmin(lengths))}")
    expected_pointers = np.cumsum(lengths * itemsize) - lengths * itemsize
    mismatch = np.flatnonzero(np.asarray(index.pointers) != expected_pointers)
    if len(mismatch):
        first = int(mismatch[0])
        report.problems.append(
            f"{idx_path.name}: {len(mismatch):,} byte pointers do not follow the lengths; first at sequence "
            f"{first} (pointer {int(index.pointers[first])}, expected {int(expected_pointers[first])})"
        )
    documents = np.asarray(index.document_indices, dtype=np.int64)
    if (
        not len(documents)
        or documents[0] != 0
        or documents[-1] != len(lengths)
        or np.any(np.diff(documents) < 0)
    ):
        report.problems.append(
            f"{idx_path.name}: document indices must rise from 0 to the sequence count {len(lengths):,}"
        )
    total = int(lengths.sum())
    bin_bytes = bin_path.stat().st_size
    if bin_bytes != total * itemsize:
        cause = "truncated" if bin_bytes < total * itemsize else "has extra bytes"
        report.problems.append(
            f"{bin_path.name}: {bin_bytes:,} bytes but the index describes {total * itemsize:,} "
            f"({total:,} {index.dtype.name} tokens): {cause}"
        )
    report.lines.append(
        f"megatron {label}: {index.documents:,} documents, {total:,} tokens, dtype {index.dtype.name}"
    )
    _compare_with_stats(label, index.documents, total, context.stats, report)
    if len(report.problems) > problems_before:
        return  # the layout is broken: reading tokens through it would mislead
    tokens = np.memmap(bin_path, dtype=index.dtype, mode="r") if total else np.zeros(0, index.dtype)
    last_sequences = documents[1:] - 1
    nonempty_docs = np.diff(documents) > 0
    ends = (expected_pointers // itemsize + lengths)[last_sequences[nonempty_docs]] - 1
    empty_last = lengths[last_sequences[nonempty_docs]] == 0
    if context.require_eos and (empty_last.any() or not nonempty_docs.all()):
        report.problems.append(
            f"{label}: {int(empty_last.sum() + (~nonempty_docs).sum()):,} empty documents (no EOS)"
        )
    _check_eos(np.asarray(tokens[ends[~empty_last]]), context, label, report)
    chunks = [tokens[i : i + _CHUNK] for i in range(0, total, _CHUNK)]
    min_id = min((int(chunk.min()) for chunk in chunks), default=0)
    if min_id < 0:
        report.problems.append(f"{label}: negative token id {min_id}")
    _check_vocab(max((int(chunk.max()) for chunk in chunks), default=-1), index.dtype, context, label, report)
    report.documents += index.documents
    report.tokens += total
    if context.tokenizer is not None:
        for doc in _sample_documents(index.documents, context.samples):
            first, last = int(documents[doc]), int(documents[doc + 1])
            start = int(expected_pointers[first]) // itemsize if first < len(lengths) else 0
            stop = start + int(lengths[first:last].sum())
            report.lines.append(
                f"  document {doc}: {_decode_sample(context, np.asarray(tokens[start:stop]))}"
            )


def _sample_documents(count: int, samples: int) -> list[int]:
    if not count or not samples:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, num=min(samples, count))})


def _compare_with_stats(label: str, documents: int, tokens: int, stats: dict | None, report: Report) -> None:
    if not stats or stats.get("format") != "megatron":
        return
    listed = {s["prefix"]: s for s in stats.get("shards", [])}
    if label not in listed:
        return
    want = listed[label]
    if (want["documents"], want["tokens"]) != (documents, tokens):
        report.problems.append(
            f"{label}: holds {documents:,} documents / {tokens:,} tokens, stats.json says "
            f"{want['documents']:,} / {want['tokens']:,}"
        )


def _check_listed_shards(prefixes: list[Path], stats: dict | None, report: Report) -> None:
    """When a whole output folder is verified, every shard stats.json lists must be there."""
    if not stats or stats.get("format") != "megatron":
        return
    present = {p.name for p in prefixes}
    for shard in stats.get("shards", []):
        if shard["prefix"] not in present:
            report.problems.append(f"{shard['prefix']}: listed in stats.json but missing")


# --------------------------------------------------------------------------- packed parquet


def _verify_packed(folder: Path, files: list[Path], context: _Context, report: Report) -> None:
    by_split: dict[str, list[tuple[int, int, Path]]] = {}
    for path in files:
        match = _SHARD_NAME.match(path.name)
        if not match:
            report.problems.append(f"data/{path.name}: not named {{split}}-NNNNN-of-NNNNN.parquet")
            continue
        by_split.setdefault(match["split"], []).append((int(match["index"]), int(match["count"]), path))
    seq_len = (
        (context.stats or {}).get("seq_len")
        if (context.stats or {}).get("format") == "packed_parquet"
        else None
    )
    for split, shards in sorted(by_split.items()):
        shards.sort()
        counts = {count for _, count, _ in shards}
        if len(counts) != 1 or [i for i, _, _ in shards] != list(range(next(iter(counts)))):
            report.problems.append(f"split {split}: shard files are not a complete 00000…-of-N run")
        _verify_packed_split(split, [p for _, _, p in shards], seq_len, context, report)


@dataclass
class _SplitScan:
    windows: int = 0
    tokens: int = 0
    documents: int = 0
    max_id: int = -1
    short_windows: list[int] = field(default_factory=list)
    previous_last: int | None = None  # last token of the previous window (for starts at offset 0)
    ends: list[np.ndarray] = field(default_factory=list)
    sample: np.ndarray | None = None


def _verify_packed_split(
    split: str, files: list[Path], seq_len: int | None, context: _Context, report: Report
) -> None:
    scan = _SplitScan()
    problems_before = len(report.problems)
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            if "input_ids" not in names or "doc_starts" not in names:
                report.problems.append(
                    f"data/{path.name}: needs input_ids and doc_starts columns (has {names})"
                )
                return
            for batch in parquet.iter_batches(batch_size=1024):
                seq_len = _scan_batch(batch, path.name, seq_len, scan, context, report)
        except (OSError, pa.ArrowException) as exc:
            report.problems.append(f"data/{path.name}: unreadable ({str(exc).splitlines()[0]})")
            return
    if scan.short_windows and (len(scan.short_windows) > 1 or scan.short_windows[0] != scan.windows - 1):
        report.problems.append(
            f"split {split}: {len(scan.short_windows):,} windows shorter than seq_len {seq_len} "
            f"(only the last may be); first is window {scan.short_windows[0]}"
        )
    report.lines.append(
        f"packed_parquet {split}: {scan.windows:,} windows of {seq_len} tokens, {scan.tokens:,} tokens, "
        f"{scan.documents:,} document starts"
    )
    label = f"split {split}"
    stats = context.stats or {}
    if stats.get("format") == "packed_parquet" and split in stats.get("splits", {}):
        found = (scan.windows, scan.tokens, scan.documents)
        want = (stats["splits"][split], stats["tokens"].get(split), stats["documents"].get(split))
        if found != want:
            report.problems.append(
                f"{label}: holds {found[0]:,} windows / {found[1]:,} tokens / {found[2]:,} documents, "
                f"stats.json says {want[0]:,} / {want[1]:,} / {want[2]:,}"
            )
    if len(report.problems) == problems_before:
        ends = np.concatenate(scan.ends) if scan.ends else np.zeros(0, dtype=np.int64)
        _check_eos(ends, context, label, report)
        _check_vocab(scan.max_id, np.dtype(np.int32), context, label, report)
        if context.tokenizer is not None and context.samples and scan.sample is not None:
            report.lines.append(f"  first document: {_decode_sample(context, scan.sample)}")
    report.documents += scan.documents
    report.tokens += scan.tokens


def _scan_batch(
    batch: pa.RecordBatch, name: str, seq_len: int | None, scan: _SplitScan, context: _Context, report: Report
) -> int | None:
    """Check one record batch of windows; returns seq_len (learned from the first window if unknown)."""
    ids = batch.column("input_ids")
    starts = batch.column("doc_starts")
    if ids.null_count or starts.null_count:
        report.problems.append(f"data/{name}: null windows")
        return seq_len
    lengths = ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = ids.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    if seq_len is None and len(lengths):
        seq_len = int(lengths[0])
    window_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=window_offsets[1:])
    start_counts = starts.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    in_window = starts.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    window_of_start = np.repeat(np.arange(len(lengths)), start_counts)
    bad = (in_window < 0) | (in_window >= lengths[window_of_start])
    order_bad = np.diff(in_window) <= 0
    order_bad &= window_of_start[1:] == window_of_start[:-1]
    if bad.any() or order_bad.any():
        report.problems.append(f"data/{name}: doc_starts outside their window or not increasing")
    short = np.flatnonzero(lengths != seq_len) + scan.windows
    scan.short_windows.extend(int(i) for i in short[:10])
    # the token before each document start: same window, or the previous window's last token
    flat = np.concatenate([[scan.previous_last if scan.previous_last is not None else -1], values])
    # flat[p] is the token before window position p (one token was prepended)
    before = flat[np.clip(window_offsets[window_of_start] + in_window, 0, len(flat) - 1)]
    is_stream_start = (scan.windows == 0) & (window_of_start == 0) & (in_window == 0)
    scan.ends.append(before[~is_stream_start & ~bad])
    if "position_ids" in batch.schema.names:
        _check_positions(
            batch.column("position_ids"), window_offsets, window_of_start, in_window, name, report
        )
    if scan.sample is None and len(in_window):
        first = int(window_offsets[window_of_start[0]] + in_window[0])
        following = window_offsets[window_of_start[1:]] + in_window[1:]
        stop = int(following[0]) if len(following) else len(values)
        scan.sample = values[first:stop]
    scan.windows += len(lengths)
    scan.tokens += len(values)
    scan.documents += len(in_window)
    scan.max_id = max(scan.max_id, int(values.max()) if len(values) else -1)
    scan.previous_last = int(values[-1]) if len(values) else scan.previous_last
    return seq_len


def _check_positions(
    positions: pa.Array,
    window_offsets: np.ndarray,
    window_of_start: np.ndarray,
    in_window: np.ndarray,
    name: str,
    report: Report,
) -> None:
    found = positions.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    total = int(window_offsets[-1])
    if len(found) != total:
        report.problems.append(f"data/{name}: position_ids and input_ids lengths differ")
        return
    reset = np.zeros(total, dtype=bool)
    reset[window_offsets[:-1][window_offsets[:-1] < total]] = True
    reset[window_offsets[window_of_start] + in_window] = True
    index = np.arange(total, dtype=np.int64)
    expected = index - np.maximum.accumulate(np.where(reset, index, 0))
    if not np.array_equal(found, expected):
        report.problems.append(f"data/{name}: position_ids do not restart at the document starts")
