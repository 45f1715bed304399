"""Starter recipes written by `dsforge new KIND PATH`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dsforge.errors import DsforgeError
from dsforge.io.atomic import write_text_atomic

KINDS = ("pretrain", "sft", "dpo")


def write_template(kind: str, path: Path, source: str | None = None) -> None:
    if kind not in KINDS:
        raise DsforgeError(f"unknown recipe kind {kind!r} (choose: {', '.join(KINDS)})")
    if path.exists():
        raise DsforgeError(f"{path} already exists; choose another path")
    text = resources.files(__package__).joinpath(f"{kind}.yaml").read_text(encoding="utf-8")
    text = text.replace("__SOURCE__", source or f"data/my-{kind}-data.jsonl")
    text = text.replace("__NAME__", path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
