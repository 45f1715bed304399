"""Dedup benchmark: dsforge dedup_minhash / dedup_exact vs datatrove, text-dedup, datasketch, a hash set.

Corpus: real documents (C4, Wikipedia, Dolma CC, DCLM, news article bodies, AlpacaEval model outputs)
turned by the shared build_bench_corpus.py into a corpus with planted near copies (1-20 % word
edits, boilerplate) and exact copies; every method reads the same JSONL shards and its removed ids
are scored by the shared eval_dedup.py ("all" view and "J>=0.7" view).

Each run is a fresh process. Speed is docs per CPU-second of the dedup call (user+sys of the
process and of any children it forks, imports excluded), the median of ``--runs`` runs; the
whole-process CPU time (imports included) is shown too. Peers run single-process with their
defaults: datatrove's MinhashConfig (14 bands x 8 rows, 5-grams), text-dedup 0.4 (num_perm 250,
threshold 0.7, sha1, num_proc 1), datasketch MinHashLSH(threshold 0.7, num_perm 128).

Run: .venv/bin/python bench/bench_dedup.py [--runs 3] [--base-docs 4000] [--scale 1000000]
"""

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOOLS = SHARED / "tools"
RAW = SHARED / "data" / "raw"
# build_bench_corpus.py (and datatrove 0.10) hash str with xxhash, which xxhash>=4 refuses: encode first.
RUN_TOOL = """
import runpy, sys, xxhash
def encoded(f):
    return lambda s, *a, **k: f(s.encode("utf-8") if isinstance(s, str) else s, *a, **k)
xxhash.xxh32_intdigest = encoded(xxhash.xxh32_intdigest)
xxhash.xxh3_64_intdigest = encoded(xxhash.xxh3_64_intdigest)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# --------------------------------------------------------------------------- corpus


def prepare_corpus(work: Path, base_docs: int) -> Path:
    """Planted corpus in work/corpus-<base_docs> (reused when already built)."""
    out = work / f"corpus-{base_docs}"
    if (out / "stats.json").exists():
        return out
    import polars as pl
    import zstandard

    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    wiki = zstandard.ZstdDecompressor().decompress(
        (RAW / "wiki_demo.txt.zst").read_bytes(), max_output_size=1 << 30
    )
    _write_texts(inputs / "wiki.jsonl", [line for line in wiki.decode().splitlines() if line.strip()])
    articles = pl.read_parquet(
        RAW / "web_html" / "article_extraction_benchmark.parquet", columns=["article_body"]
    )
    _write_texts(inputs / "articles.jsonl", articles["article_body"].to_list())
    outputs = SHARED / "data" / "prefs" / "alpaca_eval_model_outputs.jsonl.zst"
    rows = zstandard.ZstdDecompressor().decompress(outputs.read_bytes(), max_output_size=1 << 31).decode()
    _write_texts(inputs / "alpaca_outputs.jsonl", [json.loads(line)["output"] for line in rows.splitlines()])
    sources = [
        RAW / "c4_demo.jsonl.zst",
        inputs / "wiki.jsonl",
        *sorted((RAW / "commoncrawl").glob("dolma_*.jsonl.gz")),
        RAW / "quality_labels" / "dclm_majority_data.jsonl.zst",
        RAW / "quality_labels" / "dclm_agreement_data.jsonl.zst",
        inputs / "articles.jsonl",
        inputs / "alpaca_outputs.jsonl",
    ]
    args = ["--out", str(out), "--max-docs", str(base_docs), "--near-frac", "0.2", "--exact-frac", "0.05"]
    args += ["--shards", "4", "--seed", "1234"]
    subprocess.run(
        [sys.executable, "-c", RUN_TOOL, str(TOOLS / "build_bench_corpus.py"), *map(str, sources), *args],
        check=True,
        capture_output=True,
    )
    return out


def _write_texts(path: Path, texts: list) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            if text:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def all_ids(corpus: Path) -> list[str]:
    ids = []
    for shard in sorted(glob.glob(str(corpus / "jsonl" / "*.jsonl"))):
        with open(shard, encoding="utf-8") as handle:
            ids.extend(json.loads(line)["id"] for line in handle)
    return ids


# --------------------------------------------------------------------------- methods (run in a child)
# Each method: prepare() imports what it needs (not timed), run(corpus, scratch) -> removed ids (timed).


def _dsforge(corpus: Path, scratch: Path, step: dict) -> set[str]:
    import polars as pl
    import yaml

    from dsforge.runner import build

    recipe = {
        "name": "bench",
        "sources": [{"path": str(corpus / "jsonl" / "*.jsonl")}],
        "steps": [step],
        "output": {"path": str(scratch / "out")},
        "runtime": {"workers": 1, "batch_size": 2000},
    }
    path = scratch / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = build(path, progress=False)
    kept = pl.read_parquet(result.output / "**" / "*.parquet", columns=["id"])["id"]
    return set(all_ids(corpus)) - set(kept)


def prepare_dsforge(*_) -> None:
    import dsforge.runner  # noqa: F401
    from dsforge.registry import step_names

    step_names()  # the registry imports every step module once: an import, not dedup work


def run_dsforge_minhash(corpus: Path, scratch: Path) -> set[str]:
    return _dsforge(corpus, scratch, {"step": "dedup_minhash"})


def run_dsforge_exact(corpus: Path, scratch: Path) -> set[str]:
    return _dsforge(corpus, scratch, {"step": "dedup_exact"})


def _step_only(corpus: Path, scratch: Path, name: str) -> tuple:
    """A store of the corpus as parts (made before timing) and a runner for the step alone on it."""
    import polars as pl

    from dsforge.io.parts import PartStore
    from dsforge.registry import get_step
    from dsforge.steps.base import DROP_COLUMN, StepContext

    store = PartStore(scratch / "store").create()
    for index, shard in enumerate(sorted(glob.glob(str(corpus / "jsonl" / "*.jsonl")))):
        store.write(index, pl.read_ndjson(shard).select("id", "text"))
    step = get_step(name)().bind(StepContext(work_dir=str(scratch)))

    def run() -> set[str]:
        removed = set()
        for frame in step.run(store):
            removed.update(frame.filter(pl.col(DROP_COLUMN).is_not_null())["id"].to_list())
        return removed

    return run


def prepare_minhash_step(corpus: Path, scratch: Path):
    prepare_dsforge()
    return _step_only(corpus, scratch, "dedup_minhash")


def prepare_exact_step(corpus: Path, scratch: Path):
    prepare_dsforge()
    return _step_only(corpus, scratch, "dedup_exact")


def prepare_datatrove(*_) -> None:
    import datatrove.utils.hashes.xxhash as hashes
    import xxhash

    hashes.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)
    hashes.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)
    import datatrove.executor
    import datatrove.pipeline.dedup
    import datatrove.pipeline.readers
    import datatrove.pipeline.writers  # noqa: F401


def _datatrove_stage(pipeline: list, scratch: Path, tasks: int = 1) -> None:
    from datatrove.executor import LocalPipelineExecutor

    logs = (
        scratch / "logs" / str(len(list((scratch / "logs").glob("*"))) if (scratch / "logs").exists() else 0)
    )
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(logs)).run()


def _removed_jsonl(folder: Path) -> set[str]:
    import gzip

    removed = set()
    for file in glob.glob(str(folder / "*")):
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            removed.update(json.loads(line)["id"] for line in handle)
    return removed


def run_datatrove_minhash(corpus: Path, scratch: Path) -> set[str]:
    from datatrove.pipeline.dedup import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig()
    data = str(corpus / "jsonl")
    _datatrove_stage(
        [JsonlReader(data), MinhashDedupSignature(str(scratch / "sigs"), config=config)], scratch
    )
    _datatrove_stage(
        [MinhashDedupBuckets(str(scratch / "sigs"), str(scratch / "buckets"), config=config)],
        scratch,
        tasks=config.num_buckets,
    )
    _datatrove_stage(
        [MinhashDedupCluster(str(scratch / "buckets"), str(scratch / "remove"), config=config)], scratch
    )
    excluded = JsonlWriter(str(scratch / "removed"))
    _datatrove_stage(
        [
            JsonlReader(data),
            MinhashDedupFilter(str(scratch / "remove"), exclusion_writer=excluded),
            JsonlWriter(str(scratch / "out")),
        ],
        scratch,
    )
    return _removed_jsonl(scratch / "removed")


def collapsed_text(doc) -> str:
    """datatrove's content getter: the same normalization as dsforge's dedup_exact defaults."""
    return " ".join(doc.text.split())


def run_datatrove_exact(corpus: Path, scratch: Path) -> set[str]:
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = ExactDedupConfig(content_getter=collapsed_text)
    data = str(corpus / "jsonl")
    _datatrove_stage([JsonlReader(data), ExactDedupSignature(str(scratch / "sigs"), config=config)], scratch)
    _datatrove_stage([ExactFindDedups(str(scratch / "sigs"), str(scratch / "dups"), config=config)], scratch)
    excluded = JsonlWriter(str(scratch / "removed"))
    _datatrove_stage(
        [
            JsonlReader(data),
            ExactDedupFilter(str(scratch / "dups"), config=config, exclusion_writer=excluded),
            JsonlWriter(str(scratch / "out")),
        ],
        scratch,
    )
    return _removed_jsonl(scratch / "removed")


def prepare_text_dedup(*_) -> None:
    import datasets  # noqa: F401
    import text_dedup.minhash  # noqa: F401


def run_text_dedup_minhash(corpus: Path, scratch: Path) -> set[str]:
    import datasets
    from text_dedup.minhash import main

    args = ["--path", "json", "--data_files", str(corpus / "jsonl" / "*.jsonl"), "--split", "train"]
    args += ["--column", "text", "--output", str(scratch / "out"), "--cache_dir", str(scratch / "cache")]
    args += ["--num_proc", "1", "--threshold", "0.7"]
    main.main(args, standalone_mode=False)
    kept = datasets.load_from_disk(str(scratch / "out"))["id"]
    return set(all_ids(corpus)) - set(kept)


def prepare_datasketch(*_) -> None:
    import datasketch  # noqa: F401


def run_datasketch_minhash(corpus: Path, scratch: Path) -> set[str]:
    """The textbook loop: Python shingling, MinHash.bulk, MinHashLSH insert + query, union-find."""
    import re

    from datasketch import MinHash, MinHashLSH

    word = re.compile(r"\w+")
    ids, shingle_sets = [], []
    for shard in sorted(glob.glob(str(corpus / "jsonl" / "*.jsonl"))):
        with open(shard, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                tokens = word.findall(" ".join(record["text"].lower().split()))
                grams = {" ".join(tokens[i : i + 5]).encode() for i in range(max(len(tokens) - 4, 1))}
                ids.append(record["id"])
                shingle_sets.append(grams)
    signatures = MinHash.bulk(shingle_sets, num_perm=128)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    for i, signature in enumerate(signatures):
        lsh.insert(i, signature, check_duplication=False)
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, signature in enumerate(signatures):
        for j in lsh.query(signature):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {ids[i] for i in range(len(ids)) if find(i) != i}


def prepare_nothing(*_) -> None:
    pass


def run_python_set_exact(corpus: Path, scratch: Path) -> set[str]:
    """A plain hash set over whitespace-collapsed texts, first occurrence kept."""
    import orjson

    seen, removed = set(), set()
    for shard in sorted(glob.glob(str(corpus / "jsonl" / "*.jsonl"))):
        with open(shard, "rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                key = hash(" ".join(record["text"].split()))
                if key in seen:
                    removed.add(record["id"])
                else:
                    seen.add(key)
    return removed


METHODS = {
    # name: (kind, prepare, run, label)
    "dsforge_minhash": ("minhash", prepare_dsforge, run_dsforge_minhash, "dsforge dedup_minhash (build)"),
    "dsforge_minhash_step": ("minhash", prepare_minhash_step, None, "dsforge dedup_minhash (step)"),
    "text_dedup_minhash": ("minhash", prepare_text_dedup, run_text_dedup_minhash, "text-dedup 0.4 minhash"),
    "datatrove_minhash": (
        "minhash",
        prepare_datatrove,
        run_datatrove_minhash,
        "datatrove minhash (4 stages)",
    ),
    "datasketch_minhash": ("minhash", prepare_datasketch, run_datasketch_minhash, "datasketch bulk+LSH"),
    "dsforge_exact": ("exact", prepare_dsforge, run_dsforge_exact, "dsforge dedup_exact (build)"),
    "dsforge_exact_step": ("exact", prepare_exact_step, None, "dsforge dedup_exact (step)"),
    "datatrove_exact": ("exact", prepare_datatrove, run_datatrove_exact, "datatrove exact (3 stages)"),
    "python_set_exact": ("exact", prepare_nothing, run_python_set_exact, "python hash set"),
}


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _status_kb(field: str) -> int:
    """VmRSS / VmHWM of this process (ru_maxrss would include the high-water mark of the parent's fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peak_kb() -> int:
    return max(_status_kb("VmHWM"), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def child(method: str, corpus: Path, scratch: Path, report: Path) -> None:
    _, prepare, run, _ = METHODS[method]
    ready = prepare(corpus, scratch)
    cpu, wall = _cpu(), time.perf_counter()
    removed = ready() if run is None else run(corpus, scratch)
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    report.write_text(
        json.dumps({"cpu": cpu, "wall": wall, "peak_mb": _peak_kb() / 1024, "removed": sorted(removed)})
    )


# --------------------------------------------------------------------------- scale (optional)


def make_scale_store(folder: Path, docs: int, words: int = 80, part_rows: int = 50_000) -> None:
    """Synthetic documents (Zipf words) with 5 % near copies, written as store parts."""
    import numpy as np
    import polars as pl

    from dsforge.io.parts import PartStore

    rng = np.random.default_rng(0)
    vocabulary = np.array([f"w{i}" for i in range(50_000)])
    store = PartStore(folder).create()
    for index, start in enumerate(range(0, docs, part_rows)):
        count = min(part_rows, docs - start)
        tokens = vocabulary[np.minimum(rng.zipf(1.2, size=(count, words)) - 1, vocabulary.size - 1)]
        copies = rng.random(count) < 0.05
        tokens[copies] = tokens[np.flatnonzero(copies) - 1]  # copy the previous document ...
        edits = copies[:, None] & (rng.random((count, words)) < 0.02)
        tokens[edits] = "edited"  # ... with 2 % of its words replaced
        texts = pl.Series("text", tokens.tolist()).list.join(" ")
        store.write(index, pl.DataFrame({"id": np.arange(start, start + count), "text": texts}))


def scale_child(folder: Path, report: Path) -> None:
    """Run dedup_minhash alone on the store; report CPU and anonymous memory growth (sampled)."""
    import threading

    import polars as pl

    from dsforge.io.parts import PartStore
    from dsforge.registry import get_step
    from dsforge.steps.base import DROP_COLUMN, StepContext

    prepare_dsforge()
    store = PartStore(folder)
    step = get_step("dedup_minhash")().bind(StepContext(work_dir=str(folder.parent)))
    baseline, peak, done = _status_kb("RssAnon"), [0], threading.Event()

    def sample() -> None:  # anonymous memory only: mapped scratch files are reclaimable page cache
        while not done.wait(0.005):
            peak[0] = max(peak[0], _status_kb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = _cpu()
    removed = sum(f.filter(pl.col(DROP_COLUMN).is_not_null()).height for f in step.run(store))
    cpu = _cpu() - cpu
    done.set()
    sampler.join()
    report.write_text(
        json.dumps(
            {
                "cpu": cpu,
                "removed": removed,
                "anon_kb": peak[0],
                "growth_kb": peak[0] - baseline,
                "hwm_kb": _status_kb("VmHWM"),
            }
        )
    )


def scale(work: Path, docs: int) -> None:
    folder = work / f"scale-{docs}" / "store"
    if not folder.exists():
        make_scale_store(folder, docs)
    report = work / f"scale-{docs}" / "report.json"
    command = [sys.executable, __file__, "--scale-child", str(folder), "--report", str(report)]
    subprocess.run(command, check=True)
    result = json.loads(report.read_text())
    print(
        f"dedup_minhash alone on {docs:,} synthetic docs (80 words): {result['cpu']:.1f} CPU-s "
        f"({docs / result['cpu']:,.0f} docs/CPU-s), {result['removed']:,} removed; peak anonymous memory "
        f"{result['anon_kb'] / 1024:.0f} MB (+{result['growth_kb'] / 1024:.0f} MB during the step), "
        f"peak RSS with mapped scratch pages {result['hwm_kb'] / 1024:.0f} MB"
    )


# --------------------------------------------------------------------------- parent


def measure(method: str, corpus: Path, work: Path, runs: int) -> dict:
    results = []
    for number in range(runs):
        scratch = work / f"run-{method}-{number}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        report = scratch / "report.json"
        command = [
            sys.executable,
            __file__,
            "--child",
            method,
            "--corpus",
            str(corpus),
            "--scratch",
            str(scratch),
        ]
        with open(scratch / "log.txt", "wb") as log:
            process = subprocess.Popen(
                [*command, "--report", str(report)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=scratch,
                env={**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1"},
            )
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"{method} failed:\n{(scratch / 'log.txt').read_text()[-3000:]}")
        result = json.loads(report.read_text())
        result["process_cpu"] = usage.ru_utime + usage.ru_stime  # the whole process and its children
        results.append(result)
        removed = result["removed"]
        shutil.rmtree(scratch, ignore_errors=True)
    ids = work / f"removed-{method}.txt"
    ids.write_text("\n".join(removed))
    return {
        "cpu": statistics.median(r["cpu"] for r in results),
        "process_cpu": statistics.median(r["process_cpu"] for r in results),
        "peak_mb": max(r["peak_mb"] for r in results),
        "removed_file": ids,
        "identical_runs": all(r["removed"] == results[0]["removed"] for r in results),
    }


def _load_eval():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_dedup", TOOLS / "eval_dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-docs", type=int, default=4000, help="base documents of the MinHash corpus")
    parser.add_argument(
        "--exact-base-docs", type=int, default=20000, help="... of the exact corpus (all there are)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "dsforge-bench-dedup"))
    parser.add_argument("--child")
    parser.add_argument("--corpus")
    parser.add_argument("--scratch")
    parser.add_argument("--report")
    parser.add_argument(
        "--scale", type=int, default=0, help="also time dedup_minhash alone on N synthetic docs"
    )
    parser.add_argument("--scale-child")
    args = parser.parse_args()
    if args.scale_child:
        scale_child(Path(args.scale_child), Path(args.report))
        return
    if args.child:
        child(args.child, Path(args.corpus), Path(args.scratch), Path(args.report))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    evaluate = _load_eval().evaluate
    methods = args.methods.split(",")
    for kind, base_docs in (("minhash", args.base_docs), ("exact", args.exact_base_docs)):
        chosen = [m for m in methods if METHODS[m][0] == kind]
        if not chosen:
            continue
        corpus = prepare_corpus(work, base_docs)
        stats = json.loads((corpus / "stats.json").read_text())
        print(
            f"\n{kind} corpus: {stats['total_docs']} docs ({stats['base_docs']} base, "
            f"{stats['near_copies']} near copies, {stats['exact_copies']} exact copies, "
            f"{stats['text_bytes'] / 1e6:.1f} MB); "
            f"median of {args.runs} runs",
            flush=True,
        )
        rows = {}
        for method in chosen:
            measured = measure(method, corpus, work, args.runs)
            scores = evaluate(str(corpus / "ground_truth.jsonl"), str(measured["removed_file"]))
            rows[method] = {**measured, "scores": scores}
        print_table(rows, stats["total_docs"])
    if args.scale:
        scale(work, args.scale)
    print(
        "\ndsforge dedup_minhash state per document (defaults: 128 perms, 21 bands x 6 rows, verify): "
        "RAM 1 B held + ~36 B while one band is sorted + ~40 B per document with a duplicate; "
        "scratch disk 168 B band keys + 256 B fingerprints"
    )


def print_table(rows: dict, docs: int) -> None:
    print(
        f"{'method':<32} {'docs/CPU-s':>10} {'proc CPU-s':>10} {'F1 all':>7} {'F1 J>=.7':>8} "
        f"{'P J>=.7':>7} {'R J>=.7':>7} {'exact R':>7} {'peak MB':>7} {'same':>5}"
    )
    for method, row in rows.items():
        scores, view = row["scores"], row["scores"]["j>=0.7"]
        exact_caught, exact_total = scores["recall_by_tier"]["exact"].split("/")
        print(
            f"{METHODS[method][3]:<32} {docs / row['cpu']:>10.0f} {row['process_cpu']:>10.2f} "
            f"{scores['all']['f1']:>7.4f} {view['f1']:>8.4f} "
            f"{view['precision']:>7.4f} {view['recall']:>7.4f} "
            f"{int(exact_caught) / int(exact_total):>7.3f} {row['peak_mb']:>7.0f} "
            f"{'yes' if row['identical_runs'] else 'NO':>5}"
        )
    ours = [m for m in rows if m.startswith("dsforge")]
    for mine in ours:
        for method, row in rows.items():
            if method not in ours:
                print(
                    f"  speed ratio {METHODS[mine][3]} / {METHODS[method][3]}: "
                    f"{row['cpu'] / rows[mine]['cpu']:.1f}x"
                )


if __name__ == "__main__":
    main()
