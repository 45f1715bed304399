"""PII masking, URL block lists and benchmark decontamination on real data from shared/data."""

from __future__ import annotations

import ipaddress
import json
import random
import re
from pathlib import Path

import polars as pl
import pytest

from dsforge.decontam.benchmarks import PACKS, BenchmarkSpec, load_benchmark
from dsforge.decontam.ngram_index import NgramIndex, tokenize
from dsforge.decontam.step import Decontaminate
from dsforge.errors import DsforgeError
from dsforge.io.readers import read_file
from dsforge.runner import build
from dsforge.text.pii import NON_PUBLIC_V4, Pii
from dsforge.text.urls import UrlFilter

BENCH_FILES = {
    "gsm8k": "gsm8k_test.jsonl",
    "humaneval": "HumanEval.jsonl.gz",
    "mmlu": "mmlu_test.jsonl.gz",
    "truthfulqa": "TruthfulQA.csv",
    "ifeval": "ifeval_input_data.jsonl",
    "bbh": "bbh.jsonl.gz",
    "mt_bench": "mt_bench_question.jsonl",
    "alpaca_eval": "alpaca_eval_805_example_outputs.json",
    "arena_hard": "arena_hard_v0.1_question.jsonl",
    "cmmlu": "cmmlu_test.jsonl.gz",
}
PLANTED = ["gsm8k", "mmlu", "humaneval", "truthfulqa", "ifeval", "arena_hard", "cmmlu"]
LONG_ITEMS = ["gsm8k", "mmlu", "humaneval", "ifeval", "arena_hard"]


def read_all(path: Path) -> pl.DataFrame:
    frames = [
        b.frame for b in read_file(path, "auto", 100_000, text_mode="line", text_field="text", split="train")
    ]
    return pl.concat(frames, how="diagonal_relaxed")


def masked(texts: list[str], **params) -> list[str]:
    return Pii(**params).process(pl.DataFrame({"text": texts})).get_column("text").to_list()


# --------------------------------------------------------------------------- pii


def test_pii_masks_planted_values_in_real_text_and_counts_them(shared_data: Path) -> None:
    c4 = read_all(shared_data / "raw/c4_demo.jsonl.zst").get_column("text").head(40).to_list()
    planted = [
        "Write to jane.doe+news@mail.example.org today.",
        "Our server 8.8.4.4 and backup 151.101.1.69, also 2a00:1450:4007:80e::200e answer.",
        "Call (415) 555-0132 or +44 20 7946 0958 or 212.555.0187.",
    ]
    texts = [f"{doc}\n{p}" for doc, p in zip(c4, planted * 20, strict=False)]
    out = Pii().process(pl.DataFrame({"text": texts}))
    for before, after in zip(texts, out.get_column("text").to_list(), strict=True):
        for secret in [
            "jane.doe+news@mail.example.org",
            "8.8.4.4",
            "151.101.1.69",
            "2a00:1450:4007:80e::200e",
            "(415) 555-0132",
            "+44 20 7946 0958",
            "212.555.0187",
        ]:
            assert secret not in after
        assert before.split("\n")[0][:200] == after.split("\n")[0][:200] or "@" in before.split("\n")[0]
    planted_rows = [planted[i % 3] for i in range(len(texts))]
    assert out.get_column("__metric__pii_email").sum() >= planted_rows.count(planted[0])
    assert out.get_column("__metric__pii_ip").sum() >= 3 * planted_rows.count(planted[1])
    assert out.get_column("__metric__pii_phone").sum() >= 3 * planted_rows.count(planted[2])
    assert "<EMAIL>" in out.get_column("text")[0] and "<IP_ADDRESS>" in out.get_column("text")[1]


def test_pii_keeps_private_ips_versions_dates_prices_and_isbns() -> None:
    negatives = [
        "Router at 192.168.1.1, NAS at 10.0.0.12, docker 172.17.0.2, localhost 127.0.0.1, 0.0.0.0",
        "link-local fe80::1ff:fe23:4567:890a, loopback ::1, docs 2001:db8::8a2e:370:7334, ULA fd12:3456::1",
        "Upgrade to version 1.2.3.4 or v2.10.0.1; build 3.8.9; numpy 1.26.4",
        "Dates 2019-10-12, 12/31/2020, 23.08.2012 and times 12:30:45",
        "Prices $1,299.99 and EUR 45.00; ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
        "Numbers 1234567890 and order #2023-1001-55",
    ]
    assert masked(negatives) == negatives


def test_pii_ipv4_rule_agrees_with_ipaddress_on_random_and_edge_addresses() -> None:
    rng = random.Random(7)
    numbers = [rng.getrandbits(32) for _ in range(4000)]
    for network in NON_PUBLIC_V4:  # both ends of every range, and the addresses just outside
        for edge in (int(network.network_address), int(network.broadcast_address)):
            numbers += [v for v in (edge - 1, edge, edge + 1) if 0 <= v < 2**32]
    addresses = [ipaddress.IPv4Address(v) for v in numbers]
    result = masked([f"host {a} up" for a in addresses], kinds=["ip"])
    for address, text in zip(addresses, result, strict=True):
        public = not any(address in n for n in NON_PUBLIC_V4)
        assert (text == "host <IP_ADDRESS> up") == public, str(address)
        if address.is_global and not address.is_multicast:  # stricter than ipaddress only on 192.0.0/24 etc.
            assert (
                public
                or address in ipaddress.IPv4Network("192.0.0.0/24")
                or address in ipaddress.IPv4Network("192.88.99.0/24")
            ), str(address)


def test_pii_ipv6_forms_and_neighbours() -> None:
    rng = random.Random(3)
    public = [ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(125)) for _ in range(300)]
    public = [a for a in public if a not in ipaddress.IPv6Network("2001:db8::/32")]
    texts = [f"peer {form} ok" for a in public for form in (a.compressed, a.exploded, a.compressed.upper())]
    assert set(masked(texts, kinds=["ip"])) == {"peer <IP_ADDRESS> ok"}
    assert masked(["1.1.1.1,8.8.8.8,9.9.9.9 4.2.2.2"], kinds=["ip"]) == [
        ",".join(["<IP_ADDRESS>"] * 3) + " <IP_ADDRESS>"
    ]
    assert masked(["mail a@b.co from 8.8.8.8"], kinds=["ip"], ip_placeholder="[ip]") == [
        "mail a@b.co from [ip]"
    ]


def test_pii_rejects_placeholders_that_look_like_pii() -> None:
    with pytest.raises(ValueError):
        Pii(ip_placeholder="0.0.0.0")


def test_pii_on_real_corpora_only_masks_contact_details(shared_data: Path) -> None:
    """Precision check on real text: every phone masked in C4 + DCLM web pages has phone shape."""
    frames = [
        read_all(shared_data / "raw/c4_demo.jsonl.zst"),
        read_all(shared_data / "raw/quality_labels/dclm_majority_data.jsonl.zst").select("text"),
    ]
    texts = pl.concat([f.select("text") for f in frames])
    out = Pii().process(texts)
    phones = out.get_column("__metric__pii_phone").sum()
    emails = out.get_column("__metric__pii_email").sum()
    assert phones >= 60 and emails >= 20
    assert out.get_column("__metric__pii_ip").sum() == 0  # these corpora hold no IP address
    # dates, prices and version numbers of the real text survive untouched
    for pattern in (r"\b\d{4}-\d{2}-\d{2}\b", r"\$\d[\d,]*(?:\.\d\d)?", r"\b\d+\.\d+\.\d+\b(?!\.\d)"):
        before = sum(len(re.findall(pattern, t)) for t in texts.get_column("text"))
        after = sum(len(re.findall(pattern, t)) for t in out.get_column("text"))
        assert before > 0
        # only NANP numbers written with dots (505.562.2253) may disappear, as phones
        assert after >= before - 10, pattern


# --------------------------------------------------------------------------- url_filter


def dolma_recipe(shared_data: Path, steps: list[dict]) -> dict:
    return {
        "sources": [
            {
                "path": str(shared_data / "raw/commoncrawl/dolma_*.jsonl.gz"),
                "fields": {"url": "metadata.url"},
                "columns": ["id", "text", "url"],
            }
        ],
        "steps": steps,
    }


def test_url_filter_on_dolma_with_blocklist_file(shared_data: Path, write_recipe, tmp_path: Path) -> None:
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(
        "# domains, one per line\n"
        "blogspot.com\n"  # parent domain: blocks every *.blogspot.com page
        "0.0.0.0 advocatesaz.org   # hosts-file style line\n"
        "ucd.ie\n"
        "http://100kinvesting.com/2016/11/28/first-teleconference-calls-invoice-factoring/\n"
        "logspot.com\n",  # must NOT block blogspot.com (label boundary)
        encoding="utf-8",
    )
    recipe = write_recipe(
        dolma_recipe(
            shared_data,
            [
                {
                    "step": "url_filter",
                    "blocklist_files": ["blocklist.txt"],
                    "domains": ["Getty.edu"],
                    "substrings": ["CAPOEIRA"],
                    "drop_missing": True,
                },
            ],
        )
    )
    result = build(recipe, progress=False)
    step = result.stats["steps"][0]
    # 4 blogspot pages, 2 advocatesaz, 1 eeme.ucd.ie, 1 archives2.getty.edu
    assert step["dropped"] == {"url_blocked_domain": 8, "url_blocked_url": 1, "url_blocked_substring": 1}
    kept = pl.read_parquet(result.output / "data" / "*.parquet")
    assert kept.height == 30 - 10
    assert not kept.get_column("url").str.contains("blogspot|advocatesaz|ucd\\.ie|getty|capoeira").any()
    assert kept.get_column("url").str.contains("100women.ng").any()


def test_url_filter_missing_urls_and_missing_column() -> None:
    batch = pl.DataFrame({"url": ["https://a.example.com/x", None, " ", "https://notexample.com/"]})
    out = UrlFilter(domains=["example.com"], drop_missing=True).process(batch)
    assert out.get_column("__drop__").to_list() == ["url_blocked_domain", "url_missing", "url_missing", None]
    kept = UrlFilter(domains=["example.com"]).process(batch).get_column("__drop__").to_list()
    assert kept == ["url_blocked_domain", None, None, None]
    nothing = UrlFilter(domains=["example.com"]).process(batch.slice(3))  # no row blocked at all
    assert (
        nothing.get_column("__drop__").dtype == pl.String and nothing.get_column("__drop__").null_count() == 1
    )
    with pytest.raises(DsforgeError, match=r"steps\.0 \(url_filter\): no column 'url'"):
        UrlFilter(domains=["example.com"]).process(pl.DataFrame({"text": ["x"]}))
    with pytest.raises(ValueError):
        UrlFilter()


# --------------------------------------------------------------------------- decontamination


@pytest.fixture(scope="module")
def bench_dir(shared_data: Path) -> Path:
    return shared_data / "bench"


@pytest.fixture(scope="module")
def bench_items(bench_dir: Path) -> pl.DataFrame:
    return pl.concat(
        [load_benchmark(BenchmarkSpec(name=n, path=str(bench_dir / f))) for n, f in BENCH_FILES.items()]
    )


@pytest.fixture(scope="module")
def decontam13(bench_dir: Path) -> Decontaminate:
    step = Decontaminate(
        benchmarks=[{"name": n, "path": str(bench_dir / f)} for n, f in BENCH_FILES.items()],
        ngram=13,
        columns=["instruction", "output"],
        mode="flag",
    )
    step.setup()
    return step


@pytest.fixture(scope="module")
def alpaca(shared_data: Path) -> pl.DataFrame:
    return read_all(shared_data / "sft/llamafactory_alpaca_en_demo.json.zst").select(
        "instruction", "input", "output"
    )


def test_every_pack_loads_its_real_file(bench_items: pl.DataFrame) -> None:
    counts = dict(bench_items.group_by("benchmark").agg(pl.col("item_id").n_unique()).iter_rows())
    assert counts == {
        "gsm8k": 1319,
        "humaneval": 164,
        "mmlu": 14080,
        "truthfulqa": 817,
        "ifeval": 541,
        "bbh": 6511,
        "mt_bench": 80,
        "alpaca_eval": 805,
        "arena_hard": 500,
        "cmmlu": 11582,
    }
    assert set(PACKS) >= set(BENCH_FILES)
    mt = bench_items.filter(pl.col("benchmark") == "mt_bench")
    assert mt.height == 160  # two turns per question, each its own text row


def test_index_normalization_short_items_and_self_lookup(bench_items: pl.DataFrame) -> None:
    _, lengths = tokenize(pl.Series(["Hello, WORLD! it's 3.5", "中文abc", ""]))
    assert lengths.tolist() == [6, 3, 0]
    sample = bench_items.filter(pl.col("benchmark").is_in(["truthfulqa", "gsm8k", "cmmlu"])).sample(
        600, seed=1
    )
    index = NgramIndex.build(sample, 13)
    assert index.short_sizes and min(index.short_sizes) < 13  # short questions kept whole
    hits = index.lookup(sample.get_column("text"))
    own = (
        sample.with_row_index("position")
        .join(index.items, on=["benchmark", "item_id"])
        .select(pl.col("position").cast(pl.Int64).alias("text"), "key")
    )
    found = hits.join(own, on=["text", "key"]).get_column("text").n_unique()
    assert found == sample.height


def edit_lightly(text: str, rng: random.Random, words: int) -> str:
    """Change case, punctuation and spacing, and replace ``words`` words.

    With word edits, punctuation is doubled or spaced but never deleted, so that the two changed
    words are the only token changes (deleting "." in "U.S." or "1,801" merges tokens).
    """
    text = rng.choice([str.lower, str.upper, str.swapcase])(text)
    options = [" ", "@@"] if words else ["", " ", "@@"]
    text = re.sub(r"[,.?!;:\"]", lambda m: rng.choice(options).replace("@", m.group(0)), text)
    text = text.replace("'", "\u2019").replace(" ", "  ")
    if words:
        spans = [m.span() for m in re.finditer(r"[A-Za-z]{4,}", text)]
        for start, end in sorted(rng.sample(spans, min(words, len(spans))), reverse=True):
            text = text[:start] + "zqx" + text[start:end][::-1] + text[end:]
    return text


def planted_rows(
    alpaca: pl.DataFrame, bench_items: pl.DataFrame, words: int, min_tokens: int, benchmarks: list[str]
) -> pl.DataFrame:
    rng = random.Random(words)
    _, lengths = tokenize(bench_items.get_column("text"))
    pool = bench_items.with_columns(pl.Series("tokens", lengths)).filter(
        pl.col("benchmark").is_in(benchmarks) & (pl.col("tokens") >= min_tokens)
    )
    chosen = (
        pool.sort("benchmark", "item_id")
        .group_by("benchmark", maintain_order=True)
        .agg(pl.all().sample(40, seed=words, with_replacement=False))
        .explode(pl.exclude("benchmark"))
    )
    hosts = alpaca.sample(chosen.height, seed=words)
    instruction = [
        f"{host}\n\n{edit_lightly(item, rng, words)}"
        for host, item in zip(hosts.get_column("instruction"), chosen.get_column("text"), strict=True)
    ]
    return chosen.select("benchmark", "item_id").with_columns(
        pl.Series("instruction", instruction), hosts.get_column("output")
    )


@pytest.mark.parametrize(
    ("words", "min_tokens", "benchmarks"),
    [(0, 1, PLANTED), (2, 40, LONG_ITEMS)],
    ids=["verbatim+case+punct", "two-words-changed"],
)
def test_planted_benchmark_items_are_caught(
    decontam13, alpaca, bench_items, words, min_tokens, benchmarks
) -> None:
    """Recall on 40 items per benchmark planted in real alpaca rows (n=13).

    Case and spacing never change tokens; punctuation edits can ("U.S.S.R." → "us sr", "1,801" →
    "1 801"). Word edits use items of >= 40 tokens, where two changed words always leave a clean
    13-token run (ceil((40 - 2) / 3) = 13); TruthfulQA and CMMLU have too few such items.
    """
    rows = planted_rows(alpaca, bench_items, words, min_tokens, benchmarks)
    assert set(rows.get_column("benchmark")) == set(benchmarks) and rows.height == 40 * len(benchmarks)
    out = decontam13.process(rows.select("instruction", "output"))
    expected = (rows.get_column("benchmark") + ":" + rows.get_column("item_id")).to_list()
    caught = [exp in items for exp, items in zip(expected, out.get_column("contaminated_items"), strict=True)]
    recall = sum(caught) / len(caught)
    assert recall >= 0.99, [e for e, c in zip(expected, caught, strict=True) if not c][:10]
    assert out.get_column("contaminated").sum() >= 0.99 * rows.height
    for name in benchmarks:
        rows_hit = out.get_column("contaminated_by").list.contains(name).sum()
        assert out.get_column(f"__metric__contaminated_{name}").sum() == rows_hit >= 36


def test_clean_alpaca_rows_are_not_flagged(decontam13, alpaca) -> None:
    out = decontam13.process(alpaca.select("instruction", "output"))
    flagged = out.filter(pl.col("contaminated"))
    assert flagged.height <= 0.001 * alpaca.height, flagged.select(
        "instruction", "contaminated_items"
    ).to_dicts()


def test_real_overlap_self_instruct_vs_alpaca_eval(shared_data: Path, bench_dir: Path) -> None:
    """AlpacaEval reuses the Self-Instruct user-oriented prompts: real contamination to find."""
    rows = read_all(shared_data / "sft/self_instruct_user_oriented_instructions.jsonl")
    rows = rows.select("id", "instruction", pl.col("instances").list.first().struct.field("input"))
    step = Decontaminate(
        benchmarks=[{"name": "alpaca_eval", "path": str(bench_dir / BENCH_FILES["alpaca_eval"])}],
        columns=["instruction", "input"],
        join_columns=True,  # AlpacaEval stores instruction + input as one prompt
        mode="flag",
    )
    out = step.process(rows)
    apart = step.model_copy(update={"join_columns": False}).process(rows)
    selfinstruct = read_all(bench_dir / BENCH_FILES["alpaca_eval"]).filter(
        pl.col("dataset") == "selfinstruct"
    )
    assert selfinstruct.height == rows.height == 252
    # measured: all 252 joined; 171 with the columns matched apart (short instructions need their input)
    assert out.get_column("contaminated").sum() >= 0.99 * rows.height
    assert apart.get_column("contaminated").sum() < out.get_column("contaminated").sum()
    assert {b for row in out.get_column("contaminated_by") for b in row} == {"alpaca_eval"}


def test_messages_column_checks_only_selected_roles(decontam13, bench_items: pl.DataFrame) -> None:
    gsm = bench_items.filter(pl.col("benchmark") == "gsm8k").head(3).get_column("text").to_list()
    messages = [
        [{"role": "user", "content": gsm[0]}, {"role": "assistant", "content": "ok"}],
        [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": gsm[1]}],
    ]
    batch = pl.DataFrame({"messages": messages})
    step = Decontaminate(benchmarks=decontam13.benchmarks[:1], columns=["messages"], mode="flag")
    assert step.process(batch).get_column("contaminated").to_list() == [True, False]
    both = Decontaminate(
        benchmarks=decontam13.benchmarks[:1], columns=["messages"], roles=["user", "assistant"], mode="flag"
    )
    assert both.process(batch).get_column("contaminated").to_list() == [True, True]


def test_min_fraction_and_bad_inputs(bench_dir: Path, decontam13) -> None:
    gsm = str(bench_dir / BENCH_FILES["gsm8k"])
    item = load_benchmark(BenchmarkSpec(name="gsm8k", path=gsm)).get_column("text")[0]
    half = " ".join(item.split()[: len(item.split()) // 2])
    batch = pl.DataFrame({"text": [half]})
    loose = Decontaminate(benchmarks=[{"name": "gsm8k", "path": gsm}], mode="flag")
    assert loose.process(batch)["contaminated"].item()
    strict = Decontaminate(benchmarks=[{"name": "gsm8k", "path": gsm}], mode="flag", min_fraction=0.8)
    assert not strict.process(batch)["contaminated"].item()
    with pytest.raises(DsforgeError, match="no column 'text'"):
        Decontaminate(benchmarks=[{"name": "gsm8k", "path": gsm}]).process(pl.DataFrame({"prompt": ["x"]}))
    with pytest.raises(ValueError, match="no benchmark pack"):
        BenchmarkSpec(name="mystery", path=gsm)
    with pytest.raises(DsforgeError, match="has no field 'prompt'"):
        Decontaminate(benchmarks=[{"name": "humaneval", "path": gsm}]).setup()
    generic = Decontaminate(benchmarks=[{"name": "mine", "path": gsm, "text_field": "answer"}], mode="flag")
    answer = load_benchmark(BenchmarkSpec(name="x", path=gsm, text_field="answer")).get_column("text")[5]
    assert generic.process(pl.DataFrame({"text": [answer]}))["contaminated_items"].to_list() == [["mine:5"]]


def test_decontaminate_recipe_end_to_end(
    shared_data: Path, write_recipe, tmp_path: Path, bench_dir: Path
) -> None:
    alpaca = read_all(shared_data / "sft/llamafactory_alpaca_en_demo.json.zst").head(300)
    gsm = load_benchmark(BenchmarkSpec(name="gsm8k", path=str(bench_dir / BENCH_FILES["gsm8k"])))
    ifeval = load_benchmark(BenchmarkSpec(name="ifeval", path=str(bench_dir / BENCH_FILES["ifeval"])))
    rows = alpaca.to_dicts()
    for i in range(5):
        rows[10 * i]["instruction"] = gsm.get_column("text")[i]
    for i in range(3):
        rows[10 * i + 5]["output"] += "\n" + ifeval.get_column("text")[i].upper()
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bench_copy = tmp_path / "bench"
    bench_copy.mkdir()
    for name in ("gsm8k", "ifeval"):
        (bench_copy / BENCH_FILES[name]).write_bytes((bench_dir / BENCH_FILES[name]).read_bytes())
    recipe = write_recipe(
        {
            "sources": [{"path": "sft.jsonl"}],
            "steps": [
                {
                    "step": "decontaminate",
                    "benchmarks": [
                        {"name": "gsm8k", "path": f"bench/{BENCH_FILES['gsm8k']}"},
                        {"name": "ifeval", "path": f"bench/{BENCH_FILES['ifeval']}"},
                    ],
                    "columns": ["instruction", "input", "output"],
                }
            ],
            "output": {"path": str(tmp_path / "out"), "keep_dropped": True},
        }
    )
    result = build(recipe, progress=False)
    step = result.stats["steps"][0]
    assert step["dropped"] == {"contaminated:gsm8k": 5, "contaminated:ifeval": 3}
    assert step["metrics"] == {"contaminated_gsm8k": 5, "contaminated_ifeval": 3}
    assert step["rows_out"] == 292
    kept = pl.read_parquet(tmp_path / "out" / "data" / "*.parquet")
    assert "contaminated_items" not in kept.columns  # it explains drops: dropped rows only
    dropped = pl.read_parquet(tmp_path / "out.dropped" / "*.parquet")
    items = sorted(i for row in dropped.get_column("contaminated_items") for i in row)
    ifeval_ids = ifeval.get_column("item_id").head(3).to_list()
    assert items == sorted([f"gsm8k:{i}" for i in range(5)] + [f"ifeval:{k}" for k in ifeval_ids])
