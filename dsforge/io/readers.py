"""Readers: files of every common format → polars batches, with malformed records located.

Each reader yields :class:`RawBatch` objects: a frame plus the ``file:line`` of every record
that could not be parsed, so the runner can count them (``on_error: skip``) or stop with one
clear line (``on_error: fail``). Formats are chosen by file extension (never by guessing
from content that varies run to run); ``format:`` in the recipe overrides it.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
import polars as pl

from dsforge.errors import InputError

MAX_ERROR_EXAMPLES = 20


@dataclass
class RawBatch:
    """A batch of records, the ``file:line`` of records that could not be read (``errors``), and
    counts of records deliberately passed over by kind (``skipped``: e.g. non-HTML WARC records),
    which are not mistakes and never stop a build."""

    frame: pl.DataFrame
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- opening files


class _ZstdReader(io.RawIOBase):
    """Decompress zstd frames one after another, raising EOFError when the file ends mid-frame
    (zstandard's own stream reader returns a silently shortened stream there)."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._zstd = zstandard
        self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._offset = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._offset >= len(self._pending) and not self._done:
            self._pending, self._offset = b"", 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if not self._frame.eof and self._started:
                    raise EOFError("zstd stream ends in the middle of a frame")
                self._done = True
                break
            self._started = True
            pieces = []
            while chunk:
                try:
                    pieces.append(self._frame.decompress(chunk))
                except self._zstd.ZstdError as exc:  # corrupt data: an I/O error like a cut gzip
                    raise OSError(f"corrupt zstd data: {exc}") from None
                chunk = self._frame.unused_data if self._frame.eof else b""
                if self._frame.eof:
                    self._frame = self._zstd.ZstdDecompressor().decompressobj()
                    self._started = bool(chunk)
            self._pending = b"".join(pieces)
        size = min(len(buffer), len(self._pending) - self._offset)
        buffer[:size] = self._pending[self._offset : self._offset + size]
        self._offset += size
        return size

    _started = False

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(path: Path) -> IO[bytes]:
    """Open plain, gzip or zstd files as one decompressed byte stream (truncation raises EOFError)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst") or name.endswith(".zstd"):
        return io.BufferedReader(_ZstdReader(path), buffer_size=1 << 20)
    return open(path, "rb")


def _strip_compression(name: str) -> str:
    for ext in (".gz", ".zst", ".zstd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def detect_format(path: Path) -> str:
    """Map a file (or folder) to a reader name by its extension."""
    reader_names()  # registered readers (e.g. WARC) live in step packages
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf_disk"
        raise InputError(f"{path}: a folder is read as a saved HF dataset only (no dataset_info.json here)")
    name = _strip_compression(path.name.lower())
    suffix = Path(name).suffix
    mapping = {
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "json",
        ".parquet": "parquet",
        ".csv": "csv",
        ".tsv": "csv",
        ".txt": "txt",
        ".text": "txt",
        ".md": "txt",
    }
    if suffix in mapping:
        return mapping[suffix]
    for fmt, (extensions, _) in _EXTRA_READERS.items():
        if any(name.endswith(ext) or path.name.lower().endswith(ext) for ext in extensions):
            return fmt
    raise InputError(f"{path}: cannot tell the format from the extension {suffix or '(none)'}; set 'format:'")


def _read_failed(path: Path, exc: Exception) -> InputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{path}: cannot read file ({first})")


# --------------------------------------------------------------------------- record → frame


def frame_from_json_lines(lines: list[bytes]) -> pl.DataFrame:
    """Build a frame from JSON-object lines already known to parse."""
    payload = b"\n".join(lines)
    try:
        return pl.read_ndjson(io.BytesIO(payload), infer_schema_length=None)
    except Exception:
        records = [orjson.loads(line) for line in lines]
        return pl.from_dicts(records, infer_schema_length=None)


def _parse_jsonl_chunk(lines: list[bytes], numbers: list[int], label: str) -> RawBatch:
    try:
        return RawBatch(pl.read_ndjson(io.BytesIO(b"\n".join(lines)), infer_schema_length=None))
    except Exception:
        pass
    good, errors = [], []
    for line, number in zip(lines, numbers, strict=True):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(f"{label}:{number}: malformed JSON ({str(exc).split(':')[0]})")
            continue
        if not isinstance(value, dict):
            errors.append(f"{label}:{number}: expected a JSON object, got {type(value).__name__}")
            continue
        good.append(line)
    if not good:
        return RawBatch(pl.DataFrame(), errors)
    try:
        return RawBatch(frame_from_json_lines(good), errors)
    except Exception as exc:
        raise InputError(
            f"{label}:{numbers[0]}-{numbers[-1]}: records have incompatible field types ({exc})"
        ) from None


#: Decompressed bytes parsed at once by polars; lines are only split in Python for a block that
#: holds a malformed record, to name its line.
JSONL_BLOCK_BYTES = 8 << 20


def _parse_jsonl_block(block: bytes, first_line: int, label: str) -> RawBatch:
    try:
        return RawBatch(pl.read_ndjson(io.BytesIO(block), infer_schema_length=None))
    except Exception:
        pass
    numbered = [(n, line.strip()) for n, line in enumerate(block.split(b"\n"), start=first_line)]
    numbered = [(n, line) for n, line in numbered if line]
    if not numbered:
        return RawBatch(pl.DataFrame())
    numbers, lines = zip(*numbered, strict=True)
    return _parse_jsonl_chunk(list(lines), list(numbers), label)


def _salvage_lines(path: Path, first_line: int) -> tuple[list[int], list[bytes], int]:
    """Complete non-blank lines from ``first_line`` on, read until the stream breaks."""
    numbers: list[int] = []
    lines: list[bytes] = []
    number = first_line - 1
    try:
        with open_binary(path) as stream:
            for number, raw in enumerate(io.BufferedReader(stream), start=1):  # type: ignore[arg-type]
                if number >= first_line and raw.endswith(b"\n") and raw.strip():
                    numbers.append(number)
                    lines.append(raw.strip())
    except (OSError, EOFError):
        pass
    return numbers, lines, number + 1


def _rebatch(frames: list[pl.DataFrame], batch_size: int, final: bool) -> tuple[list[pl.DataFrame], list]:
    """Cut the parsed rows into batches of exactly ``batch_size`` (the last may be shorter)."""
    frames = [f for f in frames if f.height]
    if not frames:
        return [], []
    rows = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    whole = rows.height if final else rows.height - rows.height % batch_size
    batches = [rows.slice(start, batch_size) for start in range(0, whole, batch_size)]
    return batches, [rows.slice(whole)] if whole < rows.height else []


def read_jsonl(path: Path, batch_size: int, label: str) -> Iterator[RawBatch]:
    """JSON Lines in blocks parsed by polars, re-cut into batches of ``batch_size`` rows."""
    pending = b""
    line = 1  # number of the first line in ``pending``
    carry: list[pl.DataFrame] = []
    errors: list[str] = []

    def flush(final: bool) -> Iterator[RawBatch]:
        nonlocal carry, errors
        batches, carry = _rebatch(carry, batch_size, final)
        for batch in batches:
            yield RawBatch(batch, errors)
            errors = []
        if final and errors:
            yield RawBatch(pl.DataFrame(), errors)
            errors = []

    try:
        with open_binary(path) as stream:
            while True:
                chunk = stream.read(JSONL_BLOCK_BYTES)
                if not chunk:
                    break
                pending += chunk
                cut = pending.rfind(b"\n")
                if cut < 0:
                    continue
                block, pending = pending[: cut + 1], pending[cut + 1 :]
                parsed = _parse_jsonl_block(block, line, label)
                line += block.count(b"\n")
                carry.append(parsed.frame)
                errors += parsed.errors
                yield from flush(final=False)
    except (OSError, EOFError) as exc:
        # a cut stream loses the block being read: salvage its complete lines one by one
        numbers, lines, end = _salvage_lines(path, line)
        if lines:
            parsed = _parse_jsonl_chunk(lines, numbers, label)
            carry.append(parsed.frame)
            errors += parsed.errors
        errors.append(f"{label}:{end}: truncated or corrupt file ({exc})")
        yield from flush(final=True)
        return
    if pending.strip():
        parsed = _parse_jsonl_block(pending, line, label)
        carry.append(parsed.frame)
        errors += parsed.errors
    yield from flush(final=True)


def read_json_array(path: Path, batch_size: int, label: str) -> Iterator[RawBatch]:
    """A file holding one JSON array of objects (loaded whole: JSON arrays do not stream)."""
    try:
        with open_binary(path) as stream:
            data = stream.read()
    except Exception as exc:
        raise _read_failed(path, exc) from None
    if data.lstrip()[:1] == b"{":  # JSON Lines saved with a .json name
        yield from read_jsonl(path, batch_size, label)
        return
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{label}: malformed JSON ({exc})") from None
    if not isinstance(items, list):
        raise InputError(f"{label}: expected a JSON array of objects at the top level")
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        good, errors = [], []
        for offset, item in enumerate(chunk):
            if isinstance(item, dict):
                good.append(orjson.dumps(item))
            else:
                errors.append(
                    f"{label}:[{start + offset}]: expected a JSON object, got {type(item).__name__}"
                )
        frame = frame_from_json_lines(good) if good else pl.DataFrame()
        yield RawBatch(frame, errors)


def read_parquet(path: Path, batch_size: int, label: str) -> Iterator[RawBatch]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for record_batch in parquet.iter_batches(batch_size=batch_size):
            yield RawBatch(pl.from_arrow(record_batch))  # type: ignore[arg-type]
    except Exception as exc:
        raise _read_failed(path, exc) from None


def read_csv(path: Path, batch_size: int, label: str) -> Iterator[RawBatch]:
    """CSV/TSV; plain files stream in batches, compressed ones are decompressed in memory first."""
    separator = "\t" if _strip_compression(path.name.lower()).endswith(".tsv") else ","
    try:
        if _strip_compression(path.name.lower()) == path.name.lower():
            scan = pl.scan_csv(path, separator=separator, infer_schema_length=10000)
            for frame in scan.collect_batches(chunk_size=batch_size):
                yield RawBatch(frame)
            return
        with open_binary(path) as stream:
            frame = pl.read_csv(stream.read(), separator=separator, infer_schema_length=10000)
    except Exception as exc:
        raise _read_failed(path, exc) from None
    for start in range(0, frame.height, batch_size):
        yield RawBatch(frame.slice(start, batch_size))


def read_text(path: Path, batch_size: int, label: str, mode: str, column: str) -> Iterator[RawBatch]:
    """Plain text: a document per line, per blank-line paragraph, or per file."""
    try:
        with open_binary(path) as stream:
            text = stream.read().decode("utf-8", errors="replace").replace("\r\n", "\n")
    except Exception as exc:
        raise _read_failed(path, exc) from None
    if mode == "file":
        docs = [text] if text.strip() else []
    elif mode == "paragraph":
        docs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    else:
        docs = [line for line in text.split("\n") if line.strip()]
    for start in range(0, len(docs), batch_size):
        yield RawBatch(pl.DataFrame({column: docs[start : start + batch_size]}, schema={column: pl.String}))


def read_hf_disk(path: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise _read_failed(path, exc) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"{path}: no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    for table in loaded.with_format("arrow").iter(batch_size=batch_size):
        yield RawBatch(pl.from_arrow(table))  # type: ignore[arg-type]


def read_hf_hub(
    dataset_id: str, config: str | None, split: str, revision: str | None, batch_size: int
) -> Iterator[RawBatch]:
    """A Hub dataset id (or any path ``datasets.load_dataset`` accepts), streamed."""
    import datasets

    try:
        stream = datasets.load_dataset(dataset_id, config, split=split, revision=revision, streaming=True)
        for batch in stream.iter(batch_size=batch_size):
            yield RawBatch(pl.from_dict(batch))
    except InputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{dataset_id}: cannot load dataset ({first})") from None


#: Extra file readers registered by other modules (e.g. WARC): name → (extensions, function).
_EXTRA_READERS: dict[str, tuple[tuple[str, ...], Callable[[Path, int, str], Iterator[RawBatch]]]] = {}


def register_reader(name: str, extensions: tuple[str, ...]):
    """Decorator: add a reader ``fn(path, batch_size, label)`` for ``format: name`` and extensions."""

    def wrap(fn: Callable[[Path, int, str], Iterator[RawBatch]]):
        _EXTRA_READERS[name] = (extensions, fn)
        return fn

    return wrap


def reader_names() -> list[str]:
    from dsforge.registry import import_all

    import_all("reader")  # readers registered by other modules (e.g. WARC)

    return ["auto", "jsonl", "json", "parquet", "csv", "txt", "hf_disk", "hf", *sorted(_EXTRA_READERS)]


def read_file(
    path: Path, fmt: str, batch_size: int, *, text_mode: str, text_field: str, split: str
) -> Iterator[RawBatch]:
    """Dispatch one file to its reader."""
    label = str(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return read_jsonl(path, batch_size, label)
    if fmt == "json":
        return read_json_array(path, batch_size, label)
    if fmt == "parquet":
        return read_parquet(path, batch_size, label)
    if fmt == "csv":
        return read_csv(path, batch_size, label)
    if fmt == "txt":
        return read_text(path, batch_size, label, text_mode, text_field)
    if fmt == "hf_disk":
        return read_hf_disk(path, batch_size, split)
    if fmt in _EXTRA_READERS:
        return _EXTRA_READERS[fmt][1](path, batch_size, label)
    raise InputError(f"{path}: unknown format {fmt!r}")
