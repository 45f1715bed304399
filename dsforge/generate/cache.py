"""A persistent cache of model calls, so reruns and resumed builds never pay for a call twice.

Each finished call is written at once (one sqlite transaction), so a build killed midway
resumes without repeating the calls that completed. The key is a hash of everything that
decides the answer: the step and its call-shaping parameters, the model identity (backend,
model files or served name, generation parameters, seed) and the exact prompt sent, plus the
completion index. Failed calls (errors) are not stored: a rerun tries them again.

sqlite in WAL mode lets several worker processes read and write one file; each process opens
its own connection lazily (connections are not picklable, steps are).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

FILE_NAME = "generations.sqlite"


def default_cache_dir() -> Path:
    return Path(os.environ.get("DSFORGE_CACHE_DIR") or Path.home() / ".cache" / "dsforge") / "generations"


def cache_key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class GenerationCache:
    """key → stored reply (text and finish reason)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else default_cache_dir()
        self._db: sqlite3.Connection | None = None

    @property
    def path(self) -> Path:
        return self.folder / FILE_NAME

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db = db
        return self._db

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        db = self._connect()
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)",
            (key, json.dumps(value, ensure_ascii=False)),
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
