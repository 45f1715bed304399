"""Megatron's MMIDIDX indexed-dataset format: a flat ``.bin`` of token ids plus an ``.idx``.

Layout of ``.idx`` (little-endian), as megatron-core's ``IndexedDataset`` reads it:
``b"MMIDIDX\\x00\\x00"``, version ``<Q`` = 1, dtype code ``<B``, sequence count ``<Q``,
document-index count ``<Q`` (= documents + 1), then ``int32`` sequence lengths, ``int64`` byte
pointers into ``.bin``, and ``int64`` document indices (0, then the end sequence of each
document). dsforge writes one sequence per document, so document indices are 0 … N.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
#: megatron.core.datasets.indexed_dataset.DType codes (there is no uint32 code).
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}  # fmt: skip
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}
#: header bytes before the arrays: 9 magic + 8 version + 1 dtype + 8 sequences + 8 documents.
HEADER_BYTES = 34
_CHUNK = 1 << 20


def write_index(path: Path, lengths: np.ndarray, dtype: np.dtype) -> None:
    """Write the ``.idx`` for sequences of ``lengths`` tokens (one document each), in chunks."""
    dtype = np.dtype(dtype)
    count = len(lengths)
    with open(path, "wb") as out:
        out.write(INDEX_HEADER)
        out.write(struct.pack("<Q", INDEX_VERSION))
        out.write(struct.pack("<B", CODE_OF[dtype]))
        out.write(struct.pack("<Q", count))
        out.write(struct.pack("<Q", count + 1))
        out.write(np.ascontiguousarray(lengths, dtype="<i4").tobytes())
        _write_pointers(out, lengths, dtype.itemsize)
        for start in range(0, count + 1, _CHUNK):
            out.write(np.arange(start, min(start + _CHUNK, count + 1), dtype="<i8").tobytes())


def _write_pointers(out: BinaryIO, lengths: np.ndarray, itemsize: int) -> None:
    position = 0
    for start in range(0, len(lengths), _CHUNK):
        chunk = lengths[start : start + _CHUNK].astype(np.int64) * itemsize
        ends = np.cumsum(chunk) + position
        out.write((ends - chunk).astype("<i8").tobytes())
        position = int(ends[-1])


@dataclass
class MegatronIndex:
    """The parsed ``.idx`` (arrays are views on a memory map)."""

    dtype: np.dtype
    lengths: np.ndarray
    pointers: np.ndarray
    document_indices: np.ndarray
    file_bytes: int

    @property
    def documents(self) -> int:
        return max(len(self.document_indices) - 1, 0)

    @property
    def expected_bytes(self) -> int:
        return HEADER_BYTES + 4 * len(self.lengths) + 8 * len(self.pointers) + 8 * len(self.document_indices)


def read_index(path: Path) -> MegatronIndex:
    """Parse an ``.idx`` file; raises ValueError naming what is wrong with it."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ValueError(f"{path.name}: {size} bytes, shorter than the {HEADER_BYTES}-byte MMIDIDX header")
    with open(path, "rb") as stream:
        header = stream.read(HEADER_BYTES)
    if header[:9] != INDEX_HEADER:
        raise ValueError(f"{path.name}: not a Megatron index (header {header[:9]!r})")
    (version,) = struct.unpack_from("<Q", header, 9)
    if version != INDEX_VERSION:
        raise ValueError(f"{path.name}: index version {version}, expected {INDEX_VERSION}")
    code = header[17]
    if code not in DTYPE_CODES:
        raise ValueError(f"{path.name}: unknown dtype code {code}")
    sequences, doc_entries = struct.unpack_from("<QQ", header, 18)
    needed = HEADER_BYTES + 12 * sequences + 8 * doc_entries
    if size < needed:
        raise ValueError(
            f"{path.name}: {size} bytes, but {sequences:,} sequences and {doc_entries:,} document entries "
            f"need {needed:,} (truncated index)"
        )
    data = np.memmap(path, mode="r", dtype=np.uint8)
    lengths = data[HEADER_BYTES : HEADER_BYTES + 4 * sequences].view("<i4")
    start = HEADER_BYTES + 4 * sequences
    pointers = data[start : start + 8 * sequences].view("<i8")
    start += 8 * sequences
    document_indices = data[start : start + 8 * doc_entries].view("<i8")
    return MegatronIndex(np.dtype(DTYPE_CODES[code]), lengths, pointers, document_indices, size)


class BinWriter:
    """Appends token arrays to ``<prefix>.bin``; keeps only the lengths (4 bytes per document)."""

    def __init__(self, prefix: Path, dtype: np.dtype) -> None:
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.handle = open(prefix.with_name(prefix.name + ".bin"), "wb")  # noqa: SIM115 - closed in close()
        self.lengths: list[np.ndarray] = []
        self.tokens = 0
        self.documents = 0

    def append(self, lengths: np.ndarray, values: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(values, dtype=self.dtype.newbyteorder("<")).data)
        self.lengths.append(lengths.astype(np.int32))
        self.tokens += len(values)
        self.documents += len(lengths)

    def close(self) -> None:
        self.handle.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int32)
        write_index(self.prefix.with_name(self.prefix.name + ".idx"), lengths, self.dtype)
        self.lengths = []
