"""Web-text quality filters: dsforge's chain vs datatrove's, on the same real documents.

Chain (FineWeb's order): gopher_repetition → gopher_quality → c4_quality → fineweb_quality, with
datatrove 0.10's defaults on both sides. Corpus: real documents from shared/data — C4, Common
Crawl (Dolma), DCLM-labelled web pages, Wikipedia articles — topped up with Gutenberg paragraph
groups to ``--docs`` documents.

datatrove runs its filters' ``filter(doc)`` as a generator chain over Document objects (its spaCy
word splitting included; ``BaseFilter.run``'s stats bookkeeping adds under 1 %); dsforge runs the
steps over polars batches of ``--batch-size`` rows, as its runner does.
Both are warmed up first (spaCy and the tokenizer tables loaded), then timed ``--runs`` times in this
process: CPU seconds of the process (all threads) and wall seconds; medians are reported.
Agreement: the documents each chain keeps and, per dropped document, the filter and reason.

Run: .venv/bin/python bench/bench_filters.py [--docs 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import time
from pathlib import Path

import polars as pl
import zstandard

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "data" / "raw"
sys.path.insert(0, str(REPO))

from dsforge.execute import apply_steps  # noqa: E402
from dsforge.text.c4 import C4Quality  # noqa: E402
from dsforge.text.fineweb import FineWebQuality  # noqa: E402
from dsforge.text.gopher import GopherQuality, GopherRepetition  # noqa: E402
from dsforge.text.words import special_cases  # noqa: E402

PREFIXES = ("gopher_", "", "c4_", "fineweb_")


def zstd_lines(path: Path):
    with path.open("rb") as handle:
        yield from io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8")


def load_corpus(target: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in zstd_lines(RAW / "c4_demo.jsonl.zst")]
    for path in sorted((RAW / "commoncrawl").glob("dolma_*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle]
    for path in sorted((RAW / "quality_labels").glob("dclm_*.jsonl.zst")):
        texts += [json.loads(line)["text"] for line in zstd_lines(path)]
    texts += [line.rstrip("\n") for line in zstd_lines(RAW / "wiki_demo.txt.zst") if line.strip()]
    for line in zstd_lines(RAW / "gutenberg_books.jsonl.zst"):
        book = json.loads(line)
        if book["language"] != "en" or len(texts) >= target:
            continue
        paragraphs = [p for p in book["text"].split("\n\n") if p.strip()]
        for i in range(0, len(paragraphs), 4):
            if len(texts) >= target:
                break
            texts.append("\n\n".join(paragraphs[i : i + 4]))
    while len(texts) < target:  # only if the data folder shrank: repeat
        texts += texts[: target - len(texts)]
    return texts[:target]


def run_datatrove(texts: list[str]) -> dict[int, str | None]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    outcome: dict[int, str | None] = {}

    def stage(docs, reference, prefix):
        for doc in docs:
            result = reference.filter(doc)
            if result is True:
                yield doc
            else:
                outcome[int(doc.id)] = prefix + result[1]

    docs = (Document(text=text, id=str(i)) for i, text in enumerate(texts))
    for reference, prefix in zip(filters, PREFIXES, strict=True):
        docs = stage(docs, reference, prefix)
    for doc in docs:
        outcome[int(doc.id)] = None
    return outcome


def run_dsforge(texts: list[str], batch_size: int) -> dict[int, str | None]:
    steps = list(enumerate([GopherRepetition(), GopherQuality(), C4Quality(), FineWebQuality()]))
    outcome: dict[int, str | None] = {}
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        batch = pl.DataFrame({"text": chunk, "id": range(start, start + len(chunk))})
        kept, dropped, _ = apply_steps(steps, batch)
        for frame in dropped:
            ids, reasons = frame.get_column("id").to_list(), frame.get_column("drop_reason").to_list()
            outcome.update(zip(ids, reasons, strict=True))
        outcome.update(dict.fromkeys(kept.get_column("id").to_list()))
    return outcome


def timed(function, *args) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(*args)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    texts = load_corpus(args.docs)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {len(texts)} real documents, {megabytes:.1f} MB of text; {args.runs} timed runs each")

    special_cases()  # dsforge setup: spaCy's exception table, once per process
    run_datatrove(texts[:20])  # datatrove setup: spaCy's English pipeline
    run_dsforge(texts[:20], args.batch_size)

    rows = []
    results = {}
    contenders = [
        ("datatrove", lambda: run_datatrove(texts)),
        ("dsforge", lambda: run_dsforge(texts, args.batch_size)),
    ]
    for name, function in contenders:
        cpus, walls = [], []
        for _ in range(args.runs):
            cpu, wall, result = timed(function)
            cpus.append(cpu)
            walls.append(wall)
        results[name] = result
        rows.append((name, statistics.median(cpus), statistics.median(walls)))

    header = ("chain", "CPU s", "wall s", "docs/CPU-s", "MB/CPU-s", "vs datatrove")
    print("\n{:28s} {:>7s} {:>7s} {:>11s} {:>9s} {:>12s}".format(*header))
    reference_cpu = rows[0][1]
    for name, cpu, wall in rows:
        print(
            f"{name:28s} {cpu:7.2f} {wall:7.2f} {len(texts) / cpu:11.0f} {megabytes / cpu:9.2f} "
            f"{reference_cpu / cpu:12.1f}"
        )

    ours, theirs = results["dsforge"], results["datatrove"]
    same_decision = sum((ours[i] is None) == (theirs[i] is None) for i in range(len(texts)))
    same_reason = sum(ours[i] == theirs[i] for i in range(len(texts)))
    kept = sum(v is None for v in theirs.values())
    print(
        f"\nagreement with datatrove: keep/drop {same_decision / len(texts):.4f}, "
        f"filter+reason {same_reason / len(texts):.4f} ({len(texts)} docs, datatrove keeps {kept})"
    )


if __name__ == "__main__":
    main()
