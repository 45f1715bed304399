"""Helpers shared by tests: reading the shared data independently of dsforge's own readers."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import zstandard


def read_records(path: Path) -> list[dict]:
    """A JSON / JSON Lines file's records (plain, .gz or .zst), parsed with orjson alone."""
    if path.name.endswith(".zst"):
        with path.open("rb") as raw:
            data = zstandard.ZstdDecompressor().stream_reader(raw).read()
    elif path.name.endswith(".gz"):
        data = gzip.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    if data.lstrip()[:1] == b"[":
        return orjson.loads(data)
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def two_step_dpo_config(output_dir: Path):
    """TRL DPOConfig for a 2-step CPU run on a tiny model: proves the trainer takes the data."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=128,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
