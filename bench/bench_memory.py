"""Peak memory of a whole build as the input grows 10x: streaming means it should stay flat.

Builds the same recipe over 1x and 10x copies of real text (Gutenberg books, C4, Wikipedia),
each in a fresh process, and prints peak RSS and rows/s for both. The shuffle's bucket size is
set small so the external (on-disk) shuffle is exercised rather than the in-memory one.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw"


def recipe(copies: int, folder: Path) -> Path:
    sources = []
    for copy in range(copies):
        sources += [
            {"name": f"books{copy}", "path": str(SHARED / "gutenberg_books.jsonl.zst"), "columns": ["text"]},
            {"name": f"c4_{copy}", "path": str(SHARED / "c4_demo.jsonl.zst")},
            {"name": f"wiki{copy}", "path": str(SHARED / "wiki_demo.txt.zst"), "format": "txt"},
        ]
    body = {
        "name": f"memory-{copies}x",
        "seed": 1,
        "sources": sources,
        "steps": [
            {"step": "drop_empty"},
            {"step": "length_filter", "unit": "words", "min": 20},
            {"step": "shuffle", "bucket_size": "16MB"},
            {"step": "split", "test_size": 0.1},
        ],
        "output": {"path": str(folder / f"out{copies}")},
        "runtime": {"batch_size": 200, "workers": 1},
    }
    path = folder / f"r{copies}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def peak_rss_mb(path: Path) -> tuple[float, float]:
    code = (
        "import resource, sys\n"
        "from dsforge.runner import build\n"
        "build(sys.argv[1], progress=False, force=True)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = {}
        for copies in (1, 10):
            mb, seconds = peak_rss_mb(recipe(copies, folder))
            stats = yaml.safe_load((folder / f"out{copies}" / "stats.json").read_text())
            rows[copies] = (mb, seconds, stats["steps"][0]["rows_in"])
        print(f"{'input':>6} {'rows':>8} {'peak RSS MB':>12} {'seconds':>8}")
        for copies, (mb, seconds, n) in rows.items():
            print(f"{copies:>5}x {n:>8,} {mb:>12.0f} {seconds:>8.1f}")
        print(f"peak memory ratio 10x/1x: {rows[10][0] / rows[1][0]:.2f} (input ratio 10.0)")


if __name__ == "__main__":
    main()
