"""gopher_quality, gopher_repetition, c4_quality and fineweb_quality against datatrove, on real web text.

The reference is datatrove's own filters (spaCy word splitting included) run document by document
on ~1,300 real documents: C4, Common Crawl (Dolma), DCLM-labelled web pages, Wikipedia articles and
Gutenberg paragraphs. Every test prints the documents it disagrees on.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard

from dsforge.errors import DsforgeError
from dsforge.runner import build
from dsforge.text import doc_stats
from dsforge.text.c4 import C4Quality
from dsforge.text.fineweb import FineWebQuality
from dsforge.text.gopher import GopherQuality, GopherRepetition
from dsforge.text.words import split_words

datatrove_filters = pytest.importorskip("datatrove.pipeline.filters")
from datatrove.data import Document  # noqa: E402
from datatrove.pipeline.filters.gopher_repetition_filter import (  # noqa: E402
    find_all_duplicate,
    find_top_duplicate,
    get_n_grams,
)

MIN_AGREEMENT = 0.995
#: our reason = family prefix + datatrove's reason (datatrove's Gopher quality names carry theirs)
PREFIXES = {
    "gopher_repetition": "gopher_",
    "gopher_quality": "",
    "c4_quality": "c4_",
    "fineweb_quality": "fineweb_",
}


def _zstd_lines(path: Path):
    with path.open("rb") as handle:
        yield from io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8")


def load_documents(data: Path) -> list[tuple[str, str]]:
    """(source, text) for the real documents the differential tests use."""
    raw = data / "raw"
    docs = [("c4", json.loads(line)["text"]) for line in _zstd_lines(raw / "c4_demo.jsonl.zst")]
    for path in sorted((raw / "commoncrawl").glob("dolma_*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            docs += [("dolma", json.loads(line)["text"]) for line in handle]
    for path in sorted((raw / "quality_labels").glob("dclm_*.jsonl.zst")):
        docs += [("dclm", json.loads(line)["text"]) for line in _zstd_lines(path)]
    docs += [("wiki", line.rstrip("\n")) for line in _zstd_lines(raw / "wiki_demo.txt.zst") if line.strip()]
    # Gutenberg paragraphs: prose with hard-wrapped lines, headings and tables of contents
    book = json.loads(next(iter(_zstd_lines(raw / "gutenberg_books.jsonl.zst"))))["text"]
    paragraphs = [p for p in book.split("\n\n") if p.strip()]
    docs += [
        ("gutenberg", "\n\n".join(paragraphs[i : i + 3])) for i in range(0, min(len(paragraphs), 600), 3)
    ]
    return docs


@pytest.fixture(scope="module")
def documents(shared_data: Path) -> list[tuple[str, str]]:
    return load_documents(shared_data)


@pytest.fixture(scope="module")
def datatrove_results(documents) -> dict[str, tuple[list[str | None], list[str]]]:
    """Per filter: datatrove's reason per document (None = kept) and the text after the filter."""
    filters = {
        # Gopher repetition then quality on the same text share datatrove's cached spaCy words
        "gopher_repetition": datatrove_filters.GopherRepetitionFilter(),
        "gopher_quality": datatrove_filters.GopherQualityFilter(),
        "c4_quality": datatrove_filters.C4QualityFilter(),
        "fineweb_quality": datatrove_filters.FineWebQualityFilter(),
    }
    results = {name: ([], []) for name in filters}
    for number, (_, text) in enumerate(documents):
        for name, reference in filters.items():
            doc = Document(text=text, id=str(number))
            outcome = reference.filter(doc)
            reason = (
                None
                if outcome is True
                else PREFIXES[name] + (outcome[1] if isinstance(outcome, tuple) else "")
            )
            results[name][0].append(reason)
            results[name][1].append(doc.text)
    return results


def _show(documents, indices, expected, got) -> str:
    lines = []
    for i in indices[:10]:
        source, text = documents[i]
        lines.append(
            f"  doc {i} ({source}): datatrove={expected[i]!r} dsforge={got[i]!r} text={text[:160]!r}"
        )
    return "\n".join(lines)


STEPS = {
    "gopher_repetition": GopherRepetition,
    "gopher_quality": GopherQuality,
    "c4_quality": C4Quality,
    "fineweb_quality": FineWebQuality,
}


@pytest.mark.parametrize("name", list(STEPS))
def test_decisions_and_reasons_agree_with_datatrove(name, documents, datatrove_results):
    expected, expected_texts = datatrove_results[name]
    batch = pl.DataFrame({"text": [text for _, text in documents], "id": range(len(documents))})
    out = STEPS[name]().process(batch)
    got = out.get_column("__drop__").to_list()
    n = len(documents)

    decision_bad = [i for i in range(n) if (got[i] is None) != (expected[i] is None)]
    agreement = 1 - len(decision_bad) / n
    assert agreement >= MIN_AGREEMENT, f"{name}: decisions agree on {agreement:.4f}\n" + _show(
        documents, decision_bad, expected, got
    )
    both_dropped = [i for i in range(n) if got[i] is not None and expected[i] is not None]
    reason_bad = [i for i in both_dropped if got[i] != expected[i]]
    assert len(reason_bad) <= (1 - MIN_AGREEMENT) * len(both_dropped), f"{name}: reasons differ\n" + _show(
        documents, reason_bad, expected, got
    )
    assert len(both_dropped) >= 20, "the sample must exercise the filter's drop rules"
    assert out.get_column("id").to_list() == list(range(n)), "rows keep their order and other columns"

    if name == "c4_quality":  # the rewritten text is datatrove's rewritten text
        texts = out.get_column("text").to_list()
        text_bad = [
            i for i in range(n) if got[i] is None and expected[i] is None and texts[i] != expected_texts[i]
        ]
        assert len(text_bad) <= (1 - MIN_AGREEMENT) * n, _show(documents, text_bad, expected_texts, texts)
        changed = sum(texts[i] != documents[i][1] for i in range(n) if got[i] is None)
        assert changed >= 50, "C4's line cleaning rewrote kept documents"


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gopher_quality", {"min_doc_words": 80, "max_non_alpha_words_ratio": 0.85, "min_stop_words": 4}),
        ("gopher_repetition", {"dup_line_frac": 0.1, "top_n_grams": [(2, 0.1), (3, 0.08)]}),
        ("c4_quality", {"min_num_sentences": 8, "min_words_per_line": 5, "filter_policy": False}),
        ("fineweb_quality", {"line_punct_thr": 0.3, "short_line_thr": 0.5, "new_line_ratio": 0.1}),
    ],
)
def test_non_default_thresholds_mean_the_same(name, params, documents):
    sample = documents[::4]
    reference = {
        "gopher_quality": datatrove_filters.GopherQualityFilter,
        "gopher_repetition": datatrove_filters.GopherRepetitionFilter,
        "c4_quality": datatrove_filters.C4QualityFilter,
        "fineweb_quality": datatrove_filters.FineWebQualityFilter,
    }[name](**params)
    expected = []
    for number, (_, text) in enumerate(sample):
        outcome = reference.filter(Document(text=text, id=str(number)))
        expected.append(None if outcome is True else PREFIXES[name] + outcome[1])
    got = STEPS[name](**params).drop_reason(pl.DataFrame({"text": [t for _, t in sample]})).to_list()
    bad = [i for i in range(len(sample)) if got[i] != expected[i]]
    assert len(bad) <= (1 - MIN_AGREEMENT) * len(sample), _show(sample, bad, expected, got)


def test_word_splitting_matches_spacy(documents):
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    spacy_words = load_word_tokenizer("en")
    sample = documents[::3]
    rows = split_words([text for _, text in sample])
    ours = dict(rows.group_by("doc", maintain_order=True).agg("token").iter_rows())
    expected = [spacy_words.word_tokenize(text) for _, text in sample]
    bad = [i for i in range(len(sample)) if ours.get(i, []) != expected[i]]
    assert len(bad) <= (1 - MIN_AGREEMENT) * len(sample), "\n".join(
        f"  doc {i}: spaCy {expected[i][:40]} dsforge {ours.get(i, [])[:40]}" for i in bad[:10]
    )


def test_ngram_statistics_equal_datatrove_on_the_same_words(documents):
    """Top n-gram and greedy duplicated n-gram characters, exactly, for every document and n."""
    texts = [text for _, text in documents[::2]]
    words = doc_stats.word_rows(pl.Series(texts))
    per_doc = dict(words.group_by("doc", maintain_order=True).agg("token").iter_rows())
    index = doc_stats.NgramIndex(words, len(texts))
    mismatches = []
    for n in (2, 3, 4):
        ours = doc_stats.top_ngram_chars(index, n)
        for doc, tokens in per_doc.items():
            grams = get_n_grams(tokens, n)
            expected = find_top_duplicate(grams) if grams else None
            value = None if np.isnan(ours[doc]) else int(ours[doc])
            if value != expected:
                mismatches.append(("top", n, doc, value, expected))
    every_doc = np.arange(len(texts))
    for n in range(5, 11):
        ours = doc_stats.duplicated_ngram_chars(index, n, every_doc)
        for doc, tokens in per_doc.items():
            expected = find_all_duplicate(tokens, n)
            if ours[doc] != expected:
                mismatches.append(("dup", n, doc, int(ours[doc]), expected))
    assert not mismatches, mismatches[:10]
    assert sum(doc_stats.duplicated_ngram_chars(index, 5, every_doc) > 0) >= 5, "sample has repeated 5-grams"


def test_end_to_end_funnel_counts_every_rule(shared_data: Path, write_recipe):
    recipe = write_recipe(
        {
            "sources": [
                {"path": str(shared_data / "raw/quality_labels/dclm_majority_data.jsonl.zst")},
                {"path": str(shared_data / "raw/c4_demo.jsonl.zst")},
            ],
            "steps": [{"step": name} for name in STEPS],
        }
    )
    result = build(recipe, progress=False)
    steps = {s["step"]: s for s in result.stats["steps"]}
    assert set(steps) == set(STEPS)
    quality = steps["gopher_quality"]["dropped"]
    assert quality.get("gopher_below_alpha_threshold", 0) > 0 and quality.get("gopher_short_doc", 0) > 0
    assert any(r.startswith("gopher_top_") for r in steps["gopher_repetition"]["dropped"])
    assert steps["c4_quality"]["dropped"].get("c4_too_few_sentences", 0) > 0
    assert steps["fineweb_quality"]["dropped"].get("fineweb_line_punct_ratio", 0) > 0
    for step in steps.values():
        assert step["rows_in"] - step["rows_out"] == sum(step["dropped"].values())
    metrics = steps["c4_quality"]["metrics"]
    assert metrics["c4_lines_kept"] > 0 and metrics["c4_lines_removed_no_terminal_punct"] > 0

    kept = pl.read_parquet(list(Path(result.output).rglob("*.parquet")))
    assert kept.height == steps["fineweb_quality"]["rows_out"] > 0
    # C4's line cleaning rewrote the text: short lines and lines without terminal punctuation are gone
    lines = kept.get_column("text").str.split("\n").explode()
    assert lines.str.contains(r"[.?!\"']$").all()
    originals = {json.loads(line)["text"] for line in _zstd_lines(shared_data / "raw/c4_demo.jsonl.zst")}
    originals |= {
        json.loads(line)["text"]
        for line in _zstd_lines(shared_data / "raw/quality_labels/dclm_majority_data.jsonl.zst")
    }
    assert sum(text not in originals for text in kept.get_column("text")) > 0


def test_missing_column_is_a_one_line_error():
    step = GopherQuality(column="body")
    with pytest.raises(DsforgeError, match="no column 'body'"):
        step.process(pl.DataFrame({"text": ["hello"]}))


def test_empty_blank_and_null_texts_decide_like_datatrove():
    texts = ["", "   \n  ", "\n\n", "One line."]
    batch = pl.DataFrame({"text": [*texts, None]}, schema={"text": pl.String})
    references = {
        "gopher_repetition": datatrove_filters.GopherRepetitionFilter(),
        "gopher_quality": datatrove_filters.GopherQualityFilter(),
        "c4_quality": datatrove_filters.C4QualityFilter(),
        "fineweb_quality": datatrove_filters.FineWebQualityFilter(),
    }
    for name, step in STEPS.items():
        expected = []
        for text in texts:
            outcome = references[name].filter(Document(text=text, id="0"))
            expected.append(None if outcome is True else PREFIXES[name] + outcome[1])
        got = step().process(batch).get_column("__drop__").to_list()
        assert got == [*expected, expected[0]], name  # a null text is an empty one
