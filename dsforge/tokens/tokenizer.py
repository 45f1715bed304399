"""Loading a Hugging Face tokenizer once, and the facts the token steps and sinks need from it.

transformers decides how a tokenizer really encodes (for Llama-style tokenizers it rebuilds
the normalizer and pre-tokenizer, so the raw ``tokenizer.json`` alone gives different ids), but
importing it costs ~2 s of CPU and ~250 MB per process. So a local tokenizer is loaded through
transformers once; the Rust tokenizer it configured (serialized) and its special-token facts are
cached under ``$DSFORGE_CACHE_DIR`` (default ``~/.cache/dsforge``), keyed by the files' contents
and the library versions. Later processes (every worker of a build, every rebuild) load that
with ``tokenizers`` alone. Hub ids always go through transformers (their files can change).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

#: The widest vocabulary whose ids (0 … vocab-1) all fit an unsigned 16-bit integer.
UINT16_VOCAB = 2**16
CACHE_FORMAT = 1


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


def check_tokenizer_location(value: str, base_dir: str | Path | None = None) -> str:
    """Pydantic-friendly check: a path-looking value must exist (a Hub id is checked when loaded).

    ``org/name`` whose ``org`` is a folder beside the recipe is taken for a mistyped local path.
    """
    path = Path(value).expanduser()
    if path.exists():
        return value
    local_head = base_dir is not None and "/" in value and (Path(base_dir) / value.split("/")[0]).is_dir()
    if looks_like_path(value) or local_head:
        shown = path if path.is_absolute() or base_dir is None else Path(base_dir) / path
        raise ValueError(f"no tokenizer folder at {shown} (give a local folder or a Hub id like 'gpt2')")
    return value


@dataclass(frozen=True)
class TokenizerInfo:
    """A ready Rust tokenizer plus its special-token conventions."""

    backend: Any  # tokenizers.Tokenizer, configured exactly as transformers configures it
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    adds_bos: bool  # does tokenizer(text) put BOS first by itself?
    tokenizer: Any = None  # the transformers tokenizer, when it was loaded (not from the cache)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        return self.backend.decode(ids, skip_special_tokens=False)


def load_tokenizer(name_or_path: str, where: str, *, full: bool = False) -> TokenizerInfo:
    """The tokenizer for a folder or Hub id (from the cache unless ``full``); failures are one line."""
    from dsforge.errors import DsforgeError

    try:
        check_tokenizer_location(name_or_path)
    except ValueError as exc:
        raise DsforgeError(f"{where}: {exc}") from None
    cache_file = _cache_file(name_or_path)
    if cache_file is not None and not full:
        cached = _read_cache(cache_file)
        if cached is not None:
            return cached
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # OSError, ValueError, JSON errors…: all mean "cannot load it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DsforgeError(f"{where}: cannot load tokenizer {name_or_path!r} ({first})") from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DsforgeError(
            f"{where}: tokenizer {name_or_path!r} has no fast (Rust) version (needs tokenizer.json)"
        )
    bos_id = tokenizer.bos_token_id
    with_special = backend.encode("a", add_special_tokens=True).ids
    plain = backend.encode("a", add_special_tokens=False).ids
    adds_bos = bos_id is not None and with_special[:1] == [bos_id] and plain[:1] != [bos_id]
    info = TokenizerInfo(backend, len(tokenizer), bos_id, tokenizer.eos_token_id, adds_bos, tokenizer)
    if cache_file is not None:
        _write_cache(cache_file, info)
    return info


def cache_dir() -> Path:
    return Path(os.environ.get("DSFORGE_CACHE_DIR") or Path.home() / ".cache" / "dsforge") / "tokenizers"


def _cache_file(name_or_path: str) -> Path | None:
    """Where a local tokenizer's cache entry lives: a hash of every file's bytes and the versions."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return None
    digest = hashlib.sha256(f"{CACHE_FORMAT}:{version('transformers')}:{version('tokenizers')}".encode())
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return cache_dir() / f"{digest.hexdigest()[:32]}.json"


def _read_cache(path: Path) -> TokenizerInfo | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(entry["backend"])
        return TokenizerInfo(
            backend, entry["vocab_size"], entry["bos_id"], entry["eos_id"], entry["adds_bos"]
        )
    except Exception:  # a missing or damaged entry is only a cache miss
        return None


def _write_cache(path: Path, info: TokenizerInfo) -> None:
    entry = {
        "backend": info.backend.to_str(),
        "vocab_size": info.vocab_size,
        "bos_id": info.bos_id,
        "eos_id": info.eos_id,
        "adds_bos": info.adds_bos,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
        ) as tmp:
            json.dump(entry, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only home only costs the next process the transformers import


def tokenizer_fingerprint(name_or_path: str) -> str:
    """Name, size and mtime of a local tokenizer's files, so editing them invalidates cached work."""
    path = Path(name_or_path)
    if not path.exists():
        return name_or_path
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
