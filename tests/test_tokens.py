"""Tokenization, Megatron and packed-Parquet token sinks, and `dsforge verify`, on real text.

Ground truth is always the tokenizer itself (transformers' AutoTokenizer on the same texts)
and megatron-core's own IndexedDataset reader; nothing is mocked.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
import yaml
import zstandard

from dsforge.errors import DsforgeError, VerifyError
from dsforge.io.parts import PartStore
from dsforge.registry import get_sink, get_step
from dsforge.runner import build
from dsforge.tokens.tokenizer import _cache_file, load_tokenizer
from dsforge.tokens.verify import verify_shards

DSFORGE = Path(sys.executable).with_name("dsforge")
C4_DOCS = 300


def read_zst(path: Path) -> str:
    with open(path, "rb") as raw:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read().decode("utf-8")


def c4_texts(data: Path) -> list[str]:
    return [orjson.loads(line)["text"] for line in read_zst(data / "raw/c4_demo.jsonl.zst").splitlines()]


def wiki_texts(data: Path) -> list[str]:
    return [line for line in read_zst(data / "raw/wiki_demo.txt.zst").split("\n") if line.strip()]


def expected_ids(tokenizer_dir: Path, texts: list[str]) -> list[list[int]]:
    """The tokenizer's own encoding of each text, plus EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return [[*ids, tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]


def megatron_documents(prefixes: list[Path]) -> list[np.ndarray]:
    """Every document, in order, through megatron-core's own reader."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    documents = []
    for prefix in prefixes:
        dataset = IndexedDataset(str(prefix))
        # copies: the arrays are views on a memory map the dataset closes when it is collected
        documents.extend(np.array(dataset[i]) for i in range(len(dataset)))
        del dataset
    return documents


def make_recipe(folder: Path, sources: list[dict], steps: list[dict], output: dict) -> Path:
    path = folder / "recipe.yaml"
    recipe = {
        "name": "tokens",
        "sources": sources,
        "steps": steps,
        "output": {"path": str(folder / "out"), **output},
        "runtime": {"workers": 1, "batch_size": 100},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DSFORGE), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", autouse=True)
def private_tokenizer_cache(tmp_path_factory):
    """Keep the tokenizer cache of these tests out of the user's home (CLI children inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def gpt2(shared_data: Path) -> Path:
    return shared_data / "tokenizers/gpt2"


@pytest.fixture(scope="module")
def megatron_build(shared_data: Path, gpt2: Path, tmp_path_factory):
    """c4 + wiki → tokenize(gpt2) → megatron, sharded every 100k tokens (built once for the module)."""
    folder = tmp_path_factory.mktemp("megatron")
    recipe = make_recipe(
        folder,
        [
            {"path": str(shared_data / "raw/c4_demo.jsonl.zst")},
            {"path": str(shared_data / "raw/wiki_demo.txt.zst")},
        ],
        [{"step": "tokenize", "tokenizer": str(gpt2)}],
        {"format": "megatron", "shard_tokens": 100_000},
    )
    return build(recipe, progress=False)


# --------------------------------------------------------------------------- the tokenize step


def test_megatron_shards_hold_exactly_the_tokenizers_ids(megatron_build, shared_data: Path, gpt2: Path):
    output = megatron_build.stats["output"]
    assert output["dtype"] == "uint16"
    prefixes = [megatron_build.output / p for p in output["prefixes"]["train"]]
    assert len(prefixes) > 1  # shard_tokens cut the split
    documents = megatron_documents(prefixes)
    texts = c4_texts(shared_data) + wiki_texts(shared_data)
    expected = expected_ids(gpt2, texts)
    assert len(documents) == len(expected) == output["documents"]["train"]
    assert all(doc.dtype == np.uint16 for doc in documents)
    mismatched = [
        i for i, (doc, want) in enumerate(zip(documents, expected, strict=True)) if doc.tolist() != want
    ]
    assert mismatched == []
    # the token ledger: the funnel's metric, the sink's count and the shards agree
    total = sum(len(want) for want in expected)
    tokenize_stats = next(s for s in megatron_build.stats["steps"] if s["step"] == "tokenize")
    assert tokenize_stats["metrics"]["tokens"] == total == output["tokens"]["train"]
    # shards never exceed shard_tokens and never split a document
    for shard in output["shards"]:
        assert shard["tokens"] <= 100_000 or shard["documents"] == 1


def test_phi3_follows_the_tokenizers_own_bos_convention(shared_data: Path):
    from transformers import AutoTokenizer

    folder = shared_data / "tokenizers/phi-3-mini"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = wiki_texts(shared_data)[:5]
    frame = pl.DataFrame({"text": texts})
    step_class = get_step("tokenize")
    own = step_class.model_validate({"tokenizer": str(folder)})
    ids = own.process(frame).get_column("input_ids")
    assert ids.dtype == pl.List(pl.UInt16)
    assert ids.to_list() == [[*x, tokenizer.eos_token_id] for x in tokenizer(texts)["input_ids"]]
    with_bos = step_class.model_validate({"tokenizer": str(folder), "add_bos": True, "add_eos": False})
    first = with_bos.process(frame).get_column("input_ids").to_list()
    assert first == [
        [tokenizer.bos_token_id, *x] for x in tokenizer(texts, add_special_tokens=False)["input_ids"]
    ]


def test_tokenizer_cache_reproduces_transformers_and_skips_its_import(
    shared_data: Path, tmp_path, monkeypatch
):
    monkeypatch.setenv("DSFORGE_CACHE_DIR", str(tmp_path / "cache"))
    folder = str(shared_data / "tokenizers/phi-3-mini")  # transformers rebuilds its normalizer
    fresh = load_tokenizer(folder, "test")
    assert fresh.tokenizer is not None and len(list((tmp_path / "cache").rglob("*.json"))) == 1
    cached = load_tokenizer(folder, "test")
    assert cached.tokenizer is None
    texts = [*wiki_texts(shared_data)[:20], "  two  spaces\n\nand <s> </s> <|endoftext|> 東京 émigré"]
    from_cache = [e.ids for e in cached.backend.encode_batch_fast(texts, add_special_tokens=False)]
    assert from_cache == fresh.tokenizer(texts, add_special_tokens=False)["input_ids"]
    facts = ("vocab_size", "bos_id", "eos_id", "adds_bos")
    assert [getattr(cached, f) for f in facts] == [getattr(fresh, f) for f in facts]
    code = "import sys; from dsforge.tokens.tokenizer import load_tokenizer as l; l(sys.argv[1], 't'); "
    code += "print('transformers' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "False", child.stderr
    # editing a tokenizer file changes the cache key
    copy = tmp_path / "gpt2"
    shutil.copytree(shared_data / "tokenizers/gpt2", copy)
    before = _cache_file(str(copy))
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "!"}))
    assert _cache_file(str(copy)) != before


@pytest.fixture(scope="module")
def big_vocab_tokenizer(shared_data: Path, tmp_path_factory) -> Path:
    """A word-level tokenizer of 70,000 entries whose real words sit above id 65,535."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in wiki_texts(shared_data)[:10] for w in text.split()})
    vocab = {"<unk>": 0, "</s>": 1}
    vocab.update({f"<filler{i}>": i for i in range(2, 70_000 - len(words))})
    vocab.update({word: 70_000 - len(words) + i for i, word in enumerate(words)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("bigvocab")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>").save_pretrained(
        folder
    )
    return folder


def test_large_vocabulary_uses_uint32_and_megatron_int32(
    big_vocab_tokenizer: Path, shared_data: Path, tmp_path
):
    texts = wiki_texts(shared_data)[:10]
    source = tmp_path / "docs.jsonl"
    pl.DataFrame({"text": texts}).write_ndjson(source)
    recipe = make_recipe(
        tmp_path,
        [{"path": str(source)}],
        [{"step": "tokenize", "tokenizer": str(big_vocab_tokenizer)}],
        {"format": "megatron", "tokenizer": str(big_vocab_tokenizer)},
    )
    result = build(recipe, progress=False)
    assert result.stats["output"]["dtype"] == "int32"
    assert result.stats["output"]["vocab_size"] == 70_000
    documents = megatron_documents([result.output / "tokens_train"])
    expected = expected_ids(big_vocab_tokenizer, texts)
    assert [d.tolist() for d in documents] == expected
    assert max(max(e) for e in expected) > 65_535  # the ids really need more than 16 bits
    assert verify_shards(result.output, tokenizer=str(big_vocab_tokenizer)).ok
    step = get_step("tokenize").model_validate({"tokenizer": str(big_vocab_tokenizer)})
    assert step.process(pl.DataFrame({"text": texts[:2]})).schema["input_ids"] == pl.List(pl.UInt32)


def test_missing_tokenizer_is_one_clear_line(write_recipe, shared_data: Path, tmp_path):
    recipe = write_recipe(
        {
            "sources": [{"path": str(shared_data / "raw/c4_demo.jsonl.zst")}],
            "steps": [{"step": "tokenize", "tokenizer": "./no/such/tokenizer"}],
        }
    )
    done = run_cli("build", recipe, "-q")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "steps.0" in lines[0] and "no tokenizer folder" in lines[0]
    assert "Traceback" not in done.stderr


def test_megatron_sink_rejects_ids_outside_the_vocabulary(gpt2: Path, shared_data: Path, tmp_path):
    frame = (
        get_step("tokenize")
        .model_validate({"tokenizer": str(gpt2)})
        .process(pl.DataFrame({"text": c4_texts(shared_data)[:20]}))
    )
    store = PartStore(tmp_path / "store").create()
    store.write(0, frame)
    sink = get_sink("megatron").model_validate({"vocab_size": 1000})
    with pytest.raises(DsforgeError, match=r"outside 0\.\.999"):
        sink.write(store, tmp_path / "dest")


# --------------------------------------------------------------------------- packed parquet


@pytest.fixture(scope="module")
def tokenized_store(shared_data: Path, gpt2: Path, tmp_path_factory):
    """Tokenized c4 in three parts, with a split column on the last two, plus the flat streams."""
    texts = c4_texts(shared_data)
    frame = (
        get_step("tokenize").model_validate({"tokenizer": str(gpt2)}).process(pl.DataFrame({"text": texts}))
    )
    frame = frame.drop("__metric__tokens").with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )
    store = PartStore(tmp_path_factory.mktemp("store")).create()
    for index, start in enumerate(range(0, len(texts), 100)):
        store.write(index, frame.slice(start, 100))
    streams = {
        s: frame.filter(pl.col("split") == s).get_column("input_ids").to_list() for s in ("train", "test")
    }
    return store, streams


@pytest.mark.parametrize("keep_partial", [True, False])
def test_packed_windows_concatenate_back_to_the_token_stream(tokenized_store, tmp_path, keep_partial: bool):
    import datasets

    store, streams = tokenized_store
    seq_len = 512
    sink = get_sink("packed_parquet").model_validate(
        {"seq_len": seq_len, "keep_partial": keep_partial, "position_ids": True, "windows_per_shard": 40}
    )
    dest = tmp_path / "packed"
    info = sink.write(store, dest)
    loaded = datasets.load_dataset(str(dest), data_files=info["data_files"])
    assert set(loaded) == {"train", "test"}
    assert len(list((dest / "data").glob("train-*-of-*.parquet"))) > 1
    for split, documents in streams.items():
        rows = loaded[split]
        windows = rows["input_ids"]
        stream = [t for doc in documents for t in doc]
        kept = len(stream) if keep_partial else len(stream) // seq_len * seq_len
        assert [t for w in windows for t in w] == stream[:kept]
        assert all(len(w) == seq_len for w in windows[:-1])
        assert (len(windows[-1]) == seq_len) or keep_partial
        # doc_starts recover the document boundaries exactly
        starts = [i * seq_len + s for i, row in enumerate(rows["doc_starts"]) for s in row]
        boundaries = np.cumsum([0] + [len(d) for d in documents])[:-1]
        assert starts == [b for b in boundaries.tolist() if b < kept]
        assert info["tokens"][split] == kept and info["splits"][split] == len(windows)
        positions = rows["position_ids"][1]
        assert positions[0] == 0 and all(positions[s] == 0 for s in rows["doc_starts"][1])
    report = verify_shards(dest)
    assert report.ok, report.problems


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_good_output_through_the_cli(megatron_build, gpt2: Path):
    done = run_cli("verify", megatron_build.output, "--tokenizer", gpt2)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "EOS 50256 (tokenizer)" in done.stdout
    assert "document 0: 'Don\u2019t think you need" in done.stdout  # the first c4 document, decoded back


def _copy(build_output: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(build_output, copy)
    return copy


def test_verify_fails_on_a_truncated_bin(megatron_build, tmp_path):
    folder = _copy(megatron_build.output, tmp_path)
    bin_path = folder / (megatron_build.stats["output"]["prefixes"]["train"][0] + ".bin")
    with open(bin_path, "r+b") as handle:
        handle.truncate(bin_path.stat().st_size - 2)
    done = run_cli("verify", folder)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "truncated" in done.stderr and bin_path.name in done.stderr


def test_verify_fails_on_index_pointers_and_missing_eos(megatron_build, tmp_path):
    folder = _copy(megatron_build.output, tmp_path)
    prefix = folder / megatron_build.stats["output"]["prefixes"]["train"][0]
    idx = bytearray(prefix.with_suffix(".idx").read_bytes())
    count = int.from_bytes(idx[18:26], "little")
    pointer_at = 34 + 4 * count + 8 * 3  # the fourth sequence's byte pointer
    idx[pointer_at : pointer_at + 8] = (10**6).to_bytes(8, "little")
    prefix.with_suffix(".idx").write_bytes(bytes(idx))
    with pytest.raises(VerifyError, match="byte pointers do not follow the lengths"):
        verify_shards(prefix).raise_if_failed()

    second = folder / megatron_build.stats["output"]["prefixes"]["train"][1]
    tokens = np.memmap(second.with_suffix(".bin"), dtype=np.uint16, mode="r+")
    first_length = int(np.frombuffer(second.with_suffix(".idx").read_bytes()[34:38], dtype="<i4")[0])
    tokens[first_length - 1] = 11  # the first document's EOS becomes ","
    tokens.flush()
    report = verify_shards(second)
    assert not report.ok and "lack EOS" in report.problems[0] and "document 0" in report.problems[0]


def test_verify_fails_on_a_broken_packed_folder(tokenized_store, tmp_path):
    store, _ = tokenized_store
    sink = get_sink("packed_parquet").model_validate({"seq_len": 256, "windows_per_shard": 100})
    dest = tmp_path / "packed"
    info = sink.write(store, dest)
    (dest / "stats.json").write_text(json.dumps({"output": info}))
    assert verify_shards(dest).ok
    shard = dest / info["files"][0]
    table = pl.read_parquet(shard)
    ids = table.get_column("input_ids").to_list()
    row = next(
        i for i, starts in enumerate(table.get_column("doc_starts").to_list()) if starts and starts[0] > 0
    )
    ids[row][table.get_column("doc_starts")[row][0] - 1] = 11  # drop an EOS inside a window
    table.with_columns(pl.Series("input_ids", ids, dtype=pl.List(pl.Int32))).write_parquet(shard)
    report = verify_shards(dest)
    assert not report.ok and "lack EOS 50256 (inferred)" in report.problems[0]
    (dest / info["files"][-1]).unlink()
    done = run_cli("verify", dest)
    assert done.returncode == 1 and "verify failed" in done.stderr


def test_verify_names_what_it_cannot_find(tmp_path):
    done = run_cli("verify", tmp_path / "nothing")
    assert done.returncode == 1 and "not a Megatron prefix" in done.stderr
    assert io.StringIO(done.stderr).read().count("\n") == 1
