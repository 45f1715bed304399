"""Readers on the real files of every supported format, and malformed records located by file:line."""

from __future__ import annotations

import gzip
import shutil

import pytest
import zstandard

from dsforge.errors import InputError
from dsforge.io.readers import detect_format, read_file


def _read(path, fmt="auto", batch_size=1000, text_mode="line"):
    batches = list(read_file(path, fmt, batch_size, text_mode=text_mode, text_field="text", split="train"))
    rows = sum(b.frame.height for b in batches)
    errors = [e for b in batches for e in b.errors]
    return batches, rows, errors


@pytest.mark.parametrize(
    ("relative", "fmt", "rows"),
    [
        ("raw/c4_demo.jsonl.zst", "jsonl", 300),
        ("bench/gsm8k_test.jsonl", "jsonl", 1319),
        ("bench/HumanEval.jsonl.gz", "jsonl", 164),
        ("sft/fastchat_dummy_conversation.json", "json", 500),
        ("sft/llamafactory_alpaca_en_demo.json.zst", "json", 999),
        ("bench/TruthfulQA.csv", "csv", 817),
        ("raw/web_html/article_extraction_benchmark.parquet", "parquet", 181),
    ],
)
def test_real_files_read_completely(shared_data, relative, fmt, rows):
    path = shared_data / relative
    assert detect_format(path) == fmt
    batches, total, errors = _read(path, batch_size=128)
    assert total == rows
    assert errors == []
    assert all(b.frame.height <= 128 for b in batches)


def test_text_modes(shared_data):
    path = shared_data / "raw" / "wiki_demo.txt.zst"
    _, lines, _ = _read(path, text_mode="line")
    assert lines == 30
    _, files, _ = _read(path, text_mode="file")
    assert files == 1
    shakespeare = shared_data / "raw" / "tinyshakespeare.txt.gz"
    batches, paragraphs, _ = _read(shakespeare, text_mode="paragraph")
    assert 7000 < paragraphs < 8000  # speeches separated by blank lines
    assert batches[0].frame["text"][0].startswith("First Citizen:")


def test_nested_json_keeps_structure(shared_data):
    batches, _, _ = _read(shared_data / "sft" / "fastchat_dummy_conversation.json")
    conversations = batches[0].frame["conversations"][0].to_list()
    assert conversations[0].keys() == {"from", "value"}


def test_malformed_jsonl_lines_are_located(shared_data, tmp_path):
    with gzip.open(shared_data / "bench" / "HumanEval.jsonl.gz", "rt") as handle:
        lines = handle.read().splitlines()[:20]
    lines[6] = lines[6][: len(lines[6]) // 2]  # truncated object on line 7
    lines[11] = "[1, 2, 3]"  # valid JSON, not an object, line 12
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    _, rows, errors = _read(path)
    assert rows == 18
    assert errors[0].startswith(f"{path}:7: malformed JSON")
    assert errors[1] == f"{path}:12: expected a JSON object, got list"


def test_truncated_gzip_keeps_what_was_read(shared_data, tmp_path):
    data = (shared_data / "bench" / "HumanEval.jsonl.gz").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    _, rows, errors = _read(path, batch_size=10)
    assert 0 < rows < 164
    assert "truncated or corrupt" in errors[-1]


def test_unknown_extension_is_one_clear_error(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("x")
    with pytest.raises(InputError, match=r"cannot tell the format from the extension \.xyz; set 'format:'"):
        detect_format(path)


def test_hf_saved_dataset_folder(shared_data, tmp_path):
    import datasets

    ds = datasets.load_dataset(
        "json", data_files=str(shared_data / "bench" / "gsm8k_test.jsonl"), split="train"
    )
    ds.select(range(50)).save_to_disk(str(tmp_path / "saved"))
    batches, rows, _ = _read(tmp_path / "saved", batch_size=20)
    assert rows == 50
    assert batches[0].frame.columns == ["question", "answer"]


def test_csv_gzip(shared_data, tmp_path):
    path = tmp_path / "tqa.csv.gz"
    with open(shared_data / "bench" / "TruthfulQA.csv", "rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    batches, rows, _ = _read(path)
    assert rows == 817
    assert "Question" in batches[0].frame.columns


def test_truncated_zstd_keeps_what_was_read(shared_data, tmp_path):
    data = (shared_data / "raw" / "c4_demo.jsonl.zst").read_bytes()
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[: len(data) // 2])
    _, rows, errors = _read(path, batch_size=20)
    assert 0 < rows < 300
    assert "truncated or corrupt" in errors[-1]


def test_binary_garbage_is_counted_not_fatal(shared_data, tmp_path):
    lines = (shared_data / "bench" / "gsm8k_test.jsonl").read_bytes().splitlines()[:30]
    garbage = (shared_data / "models" / "tiny-random-gpt2" / "model.safetensors").read_bytes()[:3000]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([*lines[:10], garbage.replace(b"\n", b" "), *lines[10:]]) + b"\n")
    _, rows, errors = _read(path)
    assert rows == 30
    assert len(errors) == 1 and errors[0].startswith(f"{path}:11: malformed JSON")
