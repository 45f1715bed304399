"""dedup_minhash on a planted corpus: real documents with known near and exact copies.

The corpus is made by the shared build_bench_corpus.py from real web/wiki text and scored with
the shared eval_dedup.py, so the numbers here are the ones the benchmark reports.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard

from dsforge.dedup.lsh import optimal_bands_rows
from dsforge.dedup.signatures import MinHasher, shingle_hashes
from dsforge.dedup.unionfind import connected_components
from dsforge.errors import DsforgeError
from dsforge.runner import build

TOOLS = Path(__file__).resolve().parents[2] / "shared" / "tools"
# build_bench_corpus.py hashes str with xxhash, which xxhash>=4 refuses: run it with str encoded.
RUN_TOOL = """
import runpy, sys, xxhash
def encoded(f):
    return lambda s, *a, **k: f(s.encode("utf-8") if isinstance(s, str) else s, *a, **k)
xxhash.xxh32_intdigest = encoded(xxhash.xxh32_intdigest)
xxhash.xxh3_64_intdigest = encoded(xxhash.xxh3_64_intdigest)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _load_eval():
    spec = importlib.util.spec_from_file_location("eval_dedup", TOOLS / "eval_dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory) -> Path:
    """~1,100 real base documents, 30 % with a near copy (1-20 % word edits, boilerplate), 5 % exact."""
    folder = tmp_path_factory.mktemp("planted")
    raw = shared_data / "raw"
    wiki = folder / "wiki.jsonl"
    text = (
        zstandard.ZstdDecompressor()
        .decompress((raw / "wiki_demo.txt.zst").read_bytes(), max_output_size=1 << 30)
        .decode()
    )
    wiki.write_text("".join(json.dumps({"text": line}) + "\n" for line in text.splitlines() if line.strip()))
    inputs = [
        raw / "c4_demo.jsonl.zst",
        wiki,
        *sorted((raw / "commoncrawl").glob("dolma_*.jsonl.gz")),
        raw / "quality_labels" / "dclm_majority_data.jsonl.zst",
        raw / "quality_labels" / "dclm_agreement_data.jsonl.zst",
    ]
    out = folder / "corpus"
    subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_TOOL,
            str(TOOLS / "build_bench_corpus.py"),
            *map(str, inputs),
            "--out",
            str(out),
            "--near-frac",
            "0.3",
            "--exact-frac",
            "0.05",
            "--shards",
            "2",
            "--seed",
            "7",
        ],
        check=True,
        capture_output=True,
    )
    return out


def _run(write_recipe, tmp_path: Path, corpus: Path, name: str, **params) -> tuple[pl.DataFrame, dict]:
    recipe = write_recipe(
        {
            "seed": 0,
            "sources": [{"path": str(corpus / "corpus.parquet")}],
            "steps": [{"step": "dedup_minhash", **params}],
            "output": {"path": str(tmp_path / name)},
        },
        name=f"{name}.yaml",
    )
    result = build(recipe, progress=False)
    return pl.read_parquet(result.output / "**" / "*.parquet"), result.stats


def _removed(corpus: Path, kept: pl.DataFrame) -> set[str]:
    every = set(pl.read_parquet(corpus / "corpus.parquet", columns=["id"])["id"])
    return every - set(kept["id"])


def _score(corpus: Path, removed: set[str], tmp_path: Path) -> dict:
    ids = tmp_path / "removed.txt"
    ids.write_text("\n".join(sorted(removed)))
    return _load_eval().evaluate(str(corpus / "ground_truth.jsonl"), str(ids))


def test_default_threshold_finds_planted_copies(corpus, write_recipe, tmp_path):
    kept, stats = _run(write_recipe, tmp_path, corpus, "default")
    removed = _removed(corpus, kept)
    scores = _score(corpus, removed, tmp_path)
    view = scores["j>=0.7"]
    assert view["precision"] >= 0.95 and view["recall"] >= 0.95, scores
    assert scores["all"]["precision"] >= 0.95, scores  # no base document lost to a spurious match
    assert scores["recall_by_tier"]["exact"].split("/")[0] == scores["recall_by_tier"]["exact"].split("/")[1]
    step = stats["steps"][0]
    assert step["dropped"] == {"near_duplicate": len(removed)}
    assert step["metrics"]["minhash_clusters"] > 0


def test_same_seed_same_removals(corpus, write_recipe, tmp_path):
    first, _ = _run(write_recipe, tmp_path, corpus, "a", seed=11)
    again, _ = _run(write_recipe, tmp_path, corpus, "b", seed=11)
    other, _ = _run(write_recipe, tmp_path, corpus, "c", seed=12)
    assert _removed(corpus, first) == _removed(corpus, again)
    assert _removed(corpus, first)  # and a different seed still finds the bulk of the same copies
    overlap = len(_removed(corpus, first) & _removed(corpus, other)) / len(_removed(corpus, first))
    assert overlap > 0.9


def test_annotate_mode_marks_clusters_and_drops_nothing(corpus, write_recipe, tmp_path):
    annotated, stats = _run(write_recipe, tmp_path, corpus, "annotate", mode="annotate")
    total = pl.read_parquet(corpus / "corpus.parquet", columns=["id"]).height
    assert annotated.height == total and stats["steps"][0]["dropped"] == {}
    frame = annotated.with_columns(row=pl.col("id").str.slice(1).cast(pl.Int64))
    grouped = frame.group_by("cluster_id").agg(
        pl.len().alias("n"),
        pl.col("cluster_size").first(),
        pl.col("row").min().alias("first_row"),
        pl.col("cluster_keep").sum().alias("kept"),
    )
    assert (grouped["n"] == grouped["cluster_size"]).all()
    assert (grouped["first_row"] == grouped["cluster_id"]).all()  # id = smallest row of the cluster
    assert (grouped["kept"] == 1).all()
    assert grouped.filter(pl.col("n") > 1).height > 50


def test_keep_policies_choose_first_or_longest(corpus, write_recipe, tmp_path):
    annotated, _ = _run(write_recipe, tmp_path, corpus, "clusters", mode="annotate")
    members = annotated.filter(pl.col("cluster_size") > 1).with_columns(
        row=pl.col("id").str.slice(1).cast(pl.Int64), length=pl.col("text").str.len_chars()
    )
    kept_first, _ = _run(write_recipe, tmp_path, corpus, "first", keep="first")
    kept_longest, _ = _run(write_recipe, tmp_path, corpus, "longest", keep="longest")

    survivors = members.filter(pl.col("id").is_in(kept_first["id"].implode()))
    assert survivors.height == members["cluster_id"].n_unique()
    assert (survivors["row"] == survivors["cluster_id"]).all()

    longest = members.group_by("cluster_id").agg(pl.col("length").max().alias("max_length"))
    survivors = members.filter(pl.col("id").is_in(kept_longest["id"].implode())).join(
        longest, on="cluster_id"
    )
    assert survivors.height == members["cluster_id"].n_unique()
    assert (survivors["length"] == survivors["max_length"]).all()
    assert not (survivors["row"] == survivors["cluster_id"]).all()  # the policy changed some choices

    kept_random, _ = _run(write_recipe, tmp_path, corpus, "random", keep="random")
    survivors = members.filter(pl.col("id").is_in(kept_random["id"].implode()))
    assert survivors.height == members["cluster_id"].n_unique()  # still exactly one per cluster
    assert not (survivors["row"] == survivors["cluster_id"]).all()


def test_char_shingles_find_exact_and_light_copies(corpus, write_recipe, tmp_path):
    kept, _ = _run(write_recipe, tmp_path, corpus, "chars", shingle="chars", ngram=5, threshold=0.8)
    scores = _score(corpus, _removed(corpus, kept), tmp_path)
    assert scores["recall_by_tier"]["exact"].split("/")[0] == scores["recall_by_tier"]["exact"].split("/")[1]
    assert scores["all"]["precision"] >= 0.95, scores


def test_banding_matches_datasketch_optimal_param():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm in [(0.5, 64), (0.7, 128), (0.8, 128), (0.9, 256)]:
        assert optimal_bands_rows(threshold, num_perm, 0.5, 0.5) == _optimal_param(
            threshold, num_perm, 0.5, 0.5
        )


def test_signatures_estimate_true_jaccard(corpus):
    truth = pl.read_ndjson(corpus / "ground_truth.jsonl").filter(pl.col("kind") == "near").head(300)
    docs = pl.read_parquet(corpus / "corpus.parquet")
    position = {doc_id: i for i, doc_id in enumerate(docs["id"])}
    hashes, per_doc = shingle_hashes(docs["text"], "words", 5)
    signatures = np.zeros((docs.height, 256), dtype=np.uint32)
    signatures[per_doc > 0] = MinHasher(256, seed=3).signatures(hashes, per_doc)
    left = np.array([position[i] for i in truth["copy_id"]])
    right = np.array([position[i] for i in truth["orig_id"]])
    error = (signatures[left] == signatures[right]).mean(axis=1) - truth["jaccard5"].to_numpy()
    assert abs(error.mean()) < 0.01  # unbiased
    assert error.std() < 1.5 * np.sqrt(0.25 / 256)  # no worse than ideal MinHash's worst case


def test_short_and_empty_documents(write_recipe, tmp_path):
    data = tmp_path / "tiny.jsonl"
    rows = ["a b", "a b", "", "one two three four five six", "One two three   four five six", None]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    recipe = write_recipe({"sources": [{"path": str(data)}], "steps": [{"step": "dedup_minhash"}]})
    stats = build(recipe, progress=False).stats
    assert stats["steps"][0]["dropped"] == {"near_duplicate": 2}  # empty texts are never near duplicates


def test_union_find_matches_python(shared_data):
    rng = np.random.default_rng(5)
    left, right = rng.integers(0, 400, 300), rng.integers(0, 400, 300)
    nodes, labels = connected_components(left, right)
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    assert labels.tolist() == [find(int(x)) for x in nodes]


def test_user_mistakes_are_one_line_errors(write_recipe, tmp_path, shared_data):
    source = {"path": str(shared_data / "raw" / "c4_demo.jsonl.zst"), "max_rows": 20}
    recipe = write_recipe({"sources": [source], "steps": [{"step": "dedup_minhash", "column": "body"}]})
    with pytest.raises(DsforgeError, match=r"steps\.0 \(dedup_minhash\): no column 'body'"):
        build(recipe, progress=False)
    recipe = write_recipe(
        {"sources": [source], "steps": [{"step": "dedup_minhash", "bands": 4}]}, name="b.yaml"
    )
    with pytest.raises(DsforgeError, match="both 'bands' and 'rows'"):
        build(recipe, progress=False)
