"""Loading a Hugging Face tokenizer once, and the facts the token steps and sinks need from it.

Kept apart from the step so the sinks and ``dsforge verify`` share one loader (and one error
message) without importing transformers at module level: the import costs ~2 s and 250 MB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The widest vocabulary whose ids (0 … vocab-1) all fit an unsigned 16-bit integer.
UINT16_VOCAB = 2**16


def fits_uint16(vocab_size: int) -> bool:
    return vocab_size <= UINT16_VOCAB


def looks_like_path(value: str) -> bool:
    """A Hub id is ``name`` or ``org/name``; anything else (absolute, ./, ~, deeper) is a local path."""
    return (
        os.path.isabs(value)
        or value.startswith((".", "~"))
        or value.count("/") > 1
        or (os.sep != "/" and os.sep in value)
    )


def check_tokenizer_location(value: str) -> str:
    """Pydantic-friendly check: a path-looking value must exist (a Hub id is checked when loaded)."""
    if looks_like_path(value) and not Path(value).expanduser().exists():
        raise ValueError(f"no tokenizer folder at {value} (give a local folder or a Hub id like 'gpt2')")
    return value


@dataclass(frozen=True)
class TokenizerInfo:
    """A loaded tokenizer plus its special-token conventions."""

    tokenizer: Any  # transformers PreTrainedTokenizerBase (fast)
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    adds_bos: bool  # does tokenizer(text) put BOS first by itself?

    @property
    def backend(self) -> Any:
        return self.tokenizer.backend_tokenizer


def load_tokenizer(name_or_path: str, where: str) -> TokenizerInfo:
    """AutoTokenizer (fast) for a folder or Hub id; any failure becomes one DsforgeError line."""
    from dsforge.errors import DsforgeError

    try:
        check_tokenizer_location(name_or_path)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # OSError, ValueError, JSON errors…: all mean "cannot load it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DsforgeError(f"{where}: cannot load tokenizer {name_or_path!r} ({first})") from None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise DsforgeError(
            f"{where}: tokenizer {name_or_path!r} has no fast (Rust) version (needs tokenizer.json)"
        )
    bos_id = tokenizer.bos_token_id
    with_special = tokenizer.backend_tokenizer.encode("a", add_special_tokens=True).ids
    plain = tokenizer.backend_tokenizer.encode("a", add_special_tokens=False).ids
    adds_bos = bos_id is not None and with_special[:1] == [bos_id] and plain[:1] != [bos_id]
    return TokenizerInfo(tokenizer, len(tokenizer), bos_id, tokenizer.eos_token_id, adds_bos)


def tokenizer_fingerprint(name_or_path: str) -> str:
    """Name, size and mtime of a local tokenizer's files, so editing them invalidates cached work."""
    path = Path(name_or_path)
    if not path.exists():
        return name_or_path
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
