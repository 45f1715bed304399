"""Tokenize to shards: dsforge (tokenize + megatron sink, whole build) vs raw `tokenizers` vs datatrove.

All three run as child processes on the same ~20 MB of real text (Gutenberg books cut into
~4k-character documents, C4, Wikipedia, WikiText-2, tiny Shakespeare) with the GPT-2
tokenizer, one process, ``TOKENIZERS_PARALLELISM=false`` (so CPU time measures the work,
not thread overhead). Per run: CPU time (user + system of the child and its children, from
``os.wait4``) and peak RSS. Medians of ``RUNS`` runs, interleaved to spread machine noise.

* raw: ``Tokenizer.from_file`` + ``encode_batch`` over batches of 2,000 texts (no writing).
* dsforge: ``dsforge build`` of recipe sources → tokenize → drop_columns → megatron sink,
  "cold" with an empty tokenizer cache (the process imports transformers to load GPT-2) and
  "warm" with the cache the cold run left (what every later build and every worker sees).
* datatrove: JsonlReader → DocumentTokenizer (no shuffle) with LocalPipelineExecutor.

Run: ``.venv/bin/python bench/bench_tokenize.py`` (a couple of minutes).
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml
import zstandard

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GPT2 = DATA / "tokenizers" / "gpt2"
PYTHON = sys.executable
RUNS = 3
BATCH = 2000
DOC_CHARS = 4000


def _zst(path: Path) -> str:
    with open(path, "rb") as raw:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read().decode("utf-8")


def _chunks(text: str, size: int = DOC_CHARS) -> list[str]:
    """Cut long text at paragraph breaks into documents of about ``size`` characters."""
    docs, current = [], []
    length = 0
    for paragraph in text.split("\n\n"):
        current.append(paragraph)
        length += len(paragraph)
        if length >= size:
            docs.append("\n\n".join(current))
            current, length = [], 0
    if current and "".join(current).strip():
        docs.append("\n\n".join(current))
    return docs


def write_corpus(path: Path) -> int:
    raw = DATA / "raw"
    docs: list[str] = []
    for line in _zst(raw / "gutenberg_books.jsonl.zst").splitlines():
        docs.extend(_chunks(orjson.loads(line)["text"]))
    docs.extend(orjson.loads(line)["text"] for line in _zst(raw / "c4_demo.jsonl.zst").splitlines())
    docs.extend(line for line in _zst(raw / "wiki_demo.txt.zst").split("\n") if line.strip())
    for name in ("wikitext2_test.txt.gz", "wikitext2_valid.txt.gz", "tinyshakespeare.txt.gz"):
        docs.extend(_chunks(gzip.decompress((raw / name).read_bytes()).decode("utf-8")))
    with open(path, "wb") as out:
        for doc in docs:
            out.write(orjson.dumps({"text": doc}) + b"\n")
    return len(docs)


# --------------------------------------------------------------------------- the three contenders

RAW = """
import sys, orjson
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
texts = [orjson.loads(line)["text"] for line in open(sys.argv[2], "rb")]
tokens = 0
for start in range(0, len(texts), {batch}):
    tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[start:start + {batch}]))
print(tokens + len(texts))
""".replace("{batch}", str(BATCH))

DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
corpus, out = sys.argv[2], sys.argv[3]
import os
LocalPipelineExecutor(
    pipeline=[
        JsonlReader(os.path.dirname(corpus), glob_pattern=os.path.basename(corpus)),
        DocumentTokenizer(out + "/tokens", tokenizer_name_or_path=sys.argv[1] + "/tokenizer.json",
                          eos_token="<|endoftext|>", shuffle_documents=False, batch_size={batch}),
    ],
    tasks=1, workers=1, logging_dir=out + "/logs", skip_completed=False,
).run()
""".replace("{batch}", str(BATCH))


# encode stage alone: CPU time around the encoding loop only, same texts, same batches
STAGE_RAW = """
import sys, time, orjson
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
texts = [orjson.loads(line)["text"] for line in open(sys.argv[2], "rb")]
start = time.process_time()
for first in range(0, len(texts), {batch}):
    ids = [e.ids for e in tokenizer.encode_batch(texts[first:first + {batch}])]
print(time.process_time() - start)
""".replace("{batch}", str(BATCH))

STAGE_DSFORGE = """
import sys, time, orjson, polars as pl
from dsforge.registry import get_step
step = get_step("tokenize").model_validate({"tokenizer": sys.argv[1]})
step.setup()
texts = [orjson.loads(line)["text"] for line in open(sys.argv[2], "rb")]
frames = [pl.DataFrame({"text": texts[first:first + {batch}]}) for first in range(0, len(texts), {batch})]
start = time.process_time()
for frame in frames:
    step.process(frame)
print(time.process_time() - start)
""".replace("{batch}", str(BATCH))


def dsforge_recipe(corpus: Path, folder: Path) -> Path:
    recipe = {
        "name": "bench-tokenize",
        "sources": [{"path": str(corpus)}],
        "steps": [
            {"step": "tokenize", "tokenizer": str(GPT2)},
            {"step": "drop_columns", "columns": ["text"]},
        ],
        "output": {"path": str(folder / "out"), "format": "megatron"},
        "runtime": {"workers": 1, "batch_size": BATCH},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def measure(command: list[str], cache: Path) -> tuple[float, float, float, str]:
    """(CPU seconds, wall seconds, peak RSS MB, stdout) of one child process and its children."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "DSFORGE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode()
    if status != 0:
        raise SystemExit(f"benchmark child failed ({status}): {' '.join(command)}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, text


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
        folder = Path(tmp)
        corpus = folder / "corpus.jsonl"
        documents = write_corpus(corpus)
        recipe = dsforge_recipe(corpus, folder)
        dsforge_cli = str(Path(PYTHON).with_name("dsforge"))
        commands = {
            "raw tokenizers encode_batch": [PYTHON, "-c", RAW, str(GPT2), str(corpus)],
            "dsforge (cold tokenizer cache)": [dsforge_cli, "build", str(recipe), "--force", "-q"],
            "dsforge (warm tokenizer cache)": [dsforge_cli, "build", str(recipe), "--force", "-q"],
            "datatrove DocumentTokenizer": [
                PYTHON,
                "-c",
                DATATROVE,
                str(GPT2),
                str(corpus),
                str(folder / "dt"),
            ],
        }
        stages = {
            "raw encode_batch": [PYTHON, "-c", STAGE_RAW, str(GPT2), str(corpus)],
            "dsforge tokenize step": [PYTHON, "-c", STAGE_DSFORGE, str(GPT2), str(corpus)],
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        stage_cpu: dict[str, list[float]] = {name: [] for name in stages}
        tokens = 0
        for run in range(RUNS):
            cache = folder / f"cache{run}"  # empty for the cold run, filled by it for the warm one
            for name, command in commands.items():
                cpu, wall, rss, out = measure(command, cache)
                results[name].append((cpu, wall, rss))
                if name.startswith("raw"):
                    tokens = int(out.strip().splitlines()[-1])
                if name.startswith("dsforge (warm"):
                    stats = json.loads((folder / "out" / "stats.json").read_text())
                    assert stats["output"]["tokens"]["train"] == tokens or not tokens, "token counts differ"
            for name, command in stages.items():
                stage_cpu[name].append(float(measure(command, cache)[3].strip().splitlines()[-1]))
        report(results, tokens, documents, corpus.stat().st_size, stage_cpu)


def report(results: dict, tokens: int, documents: int, corpus_bytes: int, stage_cpu: dict) -> None:
    print(
        f"corpus: {documents:,} documents, {corpus_bytes / 1e6:.1f} MB JSONL, {tokens:,} GPT-2 tokens (+EOS)"
    )
    print(f"medians of {RUNS} runs, one process each, TOKENIZERS_PARALLELISM=false\n")
    header = f"{'tool':32} {'CPU s':>7} {'wall s':>7} {'Mtok/CPU-s':>11} {'peak RSS MB':>12} {'vs raw':>7}"
    print(header)
    print("-" * len(header))
    raw_rate = None
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        rss = statistics.median(r[2] for r in runs)
        rate = tokens / cpu
        raw_rate = raw_rate or rate
        print(f"{name:32} {cpu:7.2f} {wall:7.2f} {rate / 1e6:11.3f} {rss:12.0f} {rate / raw_rate:6.2f}x")
    raw_stage = statistics.median(stage_cpu["raw encode_batch"])
    print(f"\nencode stage only (CPU around the encoding loop, batches of {BATCH:,} texts):")
    for name, runs in stage_cpu.items():
        cpu = statistics.median(runs)
        print(f"{name:32} {cpu:7.2f} s  {tokens / cpu / 1e6:.3f} Mtok/CPU-s  {raw_stage / cpu:5.2f}x")


if __name__ == "__main__":
    main()
