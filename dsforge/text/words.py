# ruff: noqa: RUF001, SIM905 - this module is mostly tables of look-alike punctuation characters
"""English word splitting that reproduces spaCy's tokenizer (what datatrove's filters count), on columns.

datatrove splits English text into words with ``spacy.blank("en")``: the text is cut at whitespace
into *chunks*, then each chunk loses prefixes and suffixes one at a time (punctuation, quotes,
currency, units after digits, a period after a lowercase letter…), the remaining core is split at
infixes (hyphens between letters, ``...``, ``,`` between letters…), and a table of special cases
(``don't`` → ``do n't``, ``Mr.``, ``e.g.``, emoticons) overrides the rules.

A chunk's tokens depend on the chunk alone, so we split every text into chunks with one regex, take
the *distinct* chunks of the batch (web text repeats most of its words) and run spaCy's affix loop
on all of them at once as polars string expressions: each round strips one prefix and one suffix
from every unfinished chunk, until none changes. Rust regexes have no look-around, so rules such as
"a period after a lowercase letter" consume the context character inside a capture group instead.
The special-case table is spaCy's own (read once per process from the installed spaCy, the same
data datatrove's tokenizer uses); without spaCy the table is empty and only the affix rules apply.

On the shared test documents (C4, Common Crawl, DCLM, Wikipedia: 1,140 texts, 792k words) the
word lists are identical to spaCy's for every text; tests/test_quality_filters.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import polars as pl

# --------------------------------------------------------------------------- character classes
# The characters spaCy's English prefix/suffix rules strip (spacy.lang.char_classes), as literals.
_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY_CHARS = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫€₭₮₯₰₱₲₳₴₵₶₷₸₹₺₻₼₽₾₿"
_CURRENCY = ["US\\$", "C\\$", "A\\$", "\\$", *[c for c in _CURRENCY_CHARS if c != "$"]]
_UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h "
    "kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм "
    "мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
).split()
_ICONS = r"\p{So}"
_ALPHA = r"\p{L}"
_LOWER = r"\p{Ll}\p{Lo}"
_UPPER = r"\p{Lu}\p{Lo}"


def _char_class(chars: str) -> str:
    """Characters → the inside of a regex character class (escaping class metacharacters)."""
    return "".join("\\" + c if c in "\\[]^-&~|" else c for c in dict.fromkeys(chars))


#: Whitespace-separated chunks. Python's str.isspace (spaCy's splitting) also counts \x1c-\x1f.
CHUNK_RE = r"[^\s\x1c-\x1f]+"

# prefix: first matching alternative at the start; "+" only when not followed by a digit.
_PREFIX_CHARS = "[" + _char_class("§%=—–" + _PUNCT + _QUOTES + _CURRENCY_CHARS) + "[" + _ICONS + "]]"
PREFIX_RE = r"^(?:(\.\.+|US\$|C\$|A\$|" + _PREFIX_CHARS + r")|(\+)(?:[^0-9]|$))"

# suffix: leftmost match at the end. Context-free alternatives first; the alternatives that look
# behind (a digit before a unit, a lowercase letter before a period…) carry the context in group 1-6.
_SUFFIX_CHARS = "[" + _char_class(_PUNCT + _QUOTES + "—–") + "[" + _ICONS + "]]"
PLAIN_SUFFIX_RE = r"(?:\.\.+|……|'s|'S|’s|’S|" + _SUFFIX_CHARS + ")$"
# spaCy writes the period context as "[0-9{lower}%²\-\+{PUNCT}(?:{QUOTES})]": inside a class, the
# "|" joining PUNCT and the "(?:)" wrapper become members too, so they are context characters here.
_PERIOD_AFTER = "0-9" + _LOWER + r"%²\-+" + _char_class(_PUNCT + "|(?:)" + _QUOTES)
CONTEXT_SUFFIX_RE = (
    r"(?:[0-9](\+)|°[FfCcKk](\.)|[0-9](" + "|".join(_CURRENCY) + r")|[0-9](" + "|".join(_UNITS) + r")"
    r"|[" + _PERIOD_AFTER + r"](\.)|[" + _UPPER + "][" + _UPPER + r"](\.))$"
)

# infixes: each rule inserts spaces around its match; rules with context run twice so that
# overlapping occurrences ("1-2-3") are all split, as a look-around finditer would.
_Q = _char_class(_QUOTES)
INFIX_RULES = [
    (r"\.\.+|…|[" + _ICONS + "]", " ${0} ", False),
    (r"([0-9])([+\-*^])([0-9-])", "${1} ${2} ${3}", True),
    (r"([" + _LOWER + _Q + r"])(\.)([" + _UPPER + _Q + "])", "${1} ${2} ${3}", True),
    (r"(" + _ALPHA + r"),(" + _ALPHA + ")", "${1} , ${2}", True),
    (r"([" + _ALPHA + r"0-9])(-|–|—|--|---|——|~)(" + _ALPHA + ")", "${1} ${2} ${3}", True),
    (r"([" + _ALPHA + r"0-9])([:<>=/])(" + _ALPHA + ")", "${1} ${2} ${3}", True),
]

#: characters some infix rule or the URL pattern needs (a ".", "-", "/", ":", "," … or a symbol)
INFIX_CHARS = r"[.…+\-*^,–—~:<>=/@\p{So}]"

# spaCy's URL pattern (a core that matches stays one token), minus its private-IP exclusions.
_HOST = r"[A-Za-z0-9\x{a1}-\x{ffff}]"
URL_RE = (
    r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    r"|(?:(?:" + _HOST + r"[A-Za-z0-9\x{a1}-\x{ffff}_-]{0,62})?" + _HOST + r"\.)+[" + _LOWER + r"]{2,63})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$"
)


# --------------------------------------------------------------------------- special cases
@dataclass(frozen=True)
class SpecialCases:
    """spaCy's tokenizer exceptions: chunk text → its tokens (space-joined)."""

    keys: pl.Series
    values: pl.Series
    #: specials whose text the affix rules would split; spaCy re-merges such token runs anywhere.
    merges: dict[tuple[str, ...], list[str]]
    merge_re: str | None


@lru_cache(maxsize=1)
def special_cases() -> SpecialCases:
    """Load the English exception table from spaCy once per process (empty if spaCy is absent)."""
    try:
        import spacy
        from spacy.attrs import ORTH
    except ImportError:  # pragma: no cover - spaCy is a dependency; a trimmed install may lack it
        import warnings

        warnings.warn(
            "spaCy is not installed: English word splitting runs without its exception table "
            "(don't, e.g., Mr., emoticons); quality-filter decisions may differ slightly from datatrove's",
            stacklevel=2,
        )
        table: dict[str, str] = {}
    else:
        rules = spacy.blank("en").tokenizer.rules
        table = {key: " ".join(t[ORTH] for t in value) for key, value in rules.items() if key.strip()}
    keys = pl.Series("key", list(table), dtype=pl.String)
    values = pl.Series("value", list(table.values()), dtype=pl.String)
    empty = pl.Series(dtype=pl.String)
    bare = SpecialCases(empty, empty, {}, None)  # what the affix rules alone make of each special
    split = _tokenize_chunks(keys, bare) if len(keys) else pl.DataFrame({"chunk": [], "tokens": []})
    merges = {}
    for key, tokens in split.iter_rows():
        parts = tuple(t for t in tokens.split(" ") if t)
        if len(parts) > 1:
            merges[parts] = table[key].split(" ")
    merge_re = None
    if merges:
        alternatives = sorted((" ".join(p) for p in merges), key=len, reverse=True)
        merge_re = "(?:^| )(?:" + "|".join(_escape(a) for a in alternatives) + ")(?: |$)"
    return SpecialCases(keys, values, merges, merge_re)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$#&-~" else c for c in text)


def _apply_merges(tokens: list[str], merges: dict[tuple[str, ...], list[str]]) -> list[str]:
    """Replace runs of tokens that spell a special case (longest first, then leftmost) by its tokens."""
    spans = []
    for length in sorted({len(k) for k in merges}, reverse=True):
        for start in range(len(tokens) - length + 1):
            key = tuple(tokens[start : start + length])
            if key in merges:
                spans.append((start, start + length))
    chosen, taken = [], set()
    for start, end in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if not taken.intersection(range(start, end)):
            chosen.append((start, end))
            taken.update(range(start, end))
    out, position = [], 0
    for start, end in sorted(chosen):
        out += tokens[position:start] + merges[tuple(tokens[start:end])]
        position = end
    return out + tokens[position:]


# --------------------------------------------------------------------------- the affix loop
#: affix rounds per polars query: one at a time while most chunks are still open, then several at
#: once for the few long punctuation runs ("!!!!!!!!") that lose one character per round.
_ROUNDS_PER_QUERY = (1, 1, 4, 8)


def _affix_round(state: pl.LazyFrame, special) -> pl.LazyFrame:
    """One round of spaCy's affix loop on the open rows: strip one prefix and one suffix, stop at specials."""
    core, is_open = pl.col("core"), ~pl.col("done")
    prefix_groups = core.str.extract_groups(PREFIX_RE).struct
    state = state.with_columns(
        prefix=pl.coalesce(prefix_groups.field("1"), prefix_groups.field("2")), n=core.str.len_chars()
    ).with_columns(pre_len=pl.col("prefix").str.len_chars().fill_null(0))
    state = state.with_columns(minus_pre=core.str.slice(pl.col("pre_len")))
    rest = pl.col("minus_pre")
    plain = rest.str.extract(PLAIN_SUFFIX_RE, 0)
    context_groups = rest.str.extract_groups(CONTEXT_SUFFIX_RE).struct
    context = pl.coalesce([context_groups.field(str(i)) for i in range(1, 7)])
    # both kinds end at the string's end: the longer one starts further left and wins
    suffix = pl.when(context.str.len_chars() > plain.str.len_chars().fill_null(0)).then(context)
    state = state.with_columns(suffix=suffix.otherwise(plain)).with_columns(
        suf_len=pl.col("suffix").str.len_chars().fill_null(0)
    )
    state = state.with_columns(minus_suf=core.str.slice(0, pl.col("n") - pl.col("suf_len")))
    has_pre, has_suf = pl.col("pre_len") > 0, pl.col("suf_len") > 0
    state = state.with_columns(
        sp_pre=has_pre & (pl.col("minus_pre") != "") & special(pl.col("minus_pre"))
    ).with_columns(
        sp_suf=~pl.col("sp_pre") & has_suf & (pl.col("minus_suf") != "") & special(pl.col("minus_suf"))
    )
    push_pre = is_open & (pl.col("sp_pre") | (~pl.col("sp_suf") & has_pre))
    push_suf = is_open & ~pl.col("sp_pre") & has_suf
    new_core = (
        pl.when(pl.col("done"))
        .then(core)
        .when("sp_pre")
        .then("minus_pre")
        .when("sp_suf")
        .then("minus_suf")
        .when(has_pre & has_suf)
        .then(core.str.slice(pl.col("pre_len"), pl.col("n") - pl.col("pre_len") - pl.col("suf_len")))
        .when(has_pre)
        .then("minus_pre")
        .when(has_suf)
        .then("minus_suf")
        .otherwise(core)
    )
    stops = pl.col("sp_pre") | pl.col("sp_suf") | (~has_pre & ~has_suf)
    return (
        state.with_columns(
            core=new_core,
            pre=pl.when(push_pre).then(pl.col("pre") + pl.col("prefix") + " ").otherwise("pre"),
            suf=pl.when(push_suf).then(" " + pl.col("suffix") + pl.col("suf")).otherwise("suf"),
            done=pl.col("done") | stops,
        )
        .with_columns(done=pl.col("done") | (core == "") | special(core))
        .select("chunk", "core", "pre", "suf", "done")
    )


def _tokenize_chunks(chunks: pl.Series, specials: SpecialCases) -> pl.DataFrame:
    """Distinct chunks → frame (chunk, tokens joined by single spaces, maybe with extra spaces)."""
    keys = specials.keys

    def special(expr: pl.Expr) -> pl.Expr:
        return expr.is_in(pl.lit(keys).implode()) if len(keys) else pl.lit(False)

    core = pl.col("core")
    state = pl.DataFrame({"chunk": chunks, "core": chunks}).with_columns(
        pre=pl.lit(""), suf=pl.lit(""), done=special(core)
    )
    finished = [state.filter("done")]
    state = state.filter(~pl.col("done"))
    query = 0
    while state.height:
        rounds = _ROUNDS_PER_QUERY[min(query, len(_ROUNDS_PER_QUERY) - 1)]
        lazy = state.lazy()
        for _ in range(rounds):
            lazy = _affix_round(lazy, special)
        state = lazy.collect()
        finished.append(state.filter("done"))
        state = state.filter(~pl.col("done"))
        query += 1

    done = pl.concat(finished)
    # only cores holding an infix or URL character can split or be a URL; the rest stay whole
    splittable = core.str.contains(INFIX_CHARS)
    simple = done.filter(~splittable)
    done = done.filter(splittable)
    infixed = core
    for pattern, replacement, twice in INFIX_RULES:
        for _ in range(2 if twice else 1):
            infixed = infixed.str.replace_all(pattern, replacement)
    body = pl.when(core.str.contains(URL_RE)).then(core).otherwise(infixed)
    tokens = [simple.with_columns(body=core), done.with_columns(body=body)]
    table = pl.concat(tokens).select("chunk", "core", "pre", "suf", "body")
    if len(keys):
        as_special = core.replace_strict(keys, specials.values, default=None)
        table = table.with_columns(body=pl.when(special(core)).then(as_special).otherwise("body"))
    return table.select("chunk", tokens=pl.col("pre") + pl.col("body") + pl.col("suf"))


def tokenize_chunks(chunks: pl.Series) -> pl.DataFrame:
    """Distinct chunks → (chunk, tokens: space-joined), special cases and their re-merging applied."""
    specials = special_cases()
    table = _tokenize_chunks(chunks, specials).with_columns(pl.col("tokens").str.replace_all(" +", " "))
    if specials.merge_re is None:
        return table
    hit = pl.col("tokens").str.contains(specials.merge_re)
    fixed = table.filter(hit)
    if not fixed.height:
        return table
    merged = [
        " ".join(_apply_merges([t for t in tokens.split(" ") if t], specials.merges))
        for tokens in fixed.get_column("tokens")
    ]
    return pl.concat([table.filter(~hit), fixed.with_columns(tokens=pl.Series(merged, dtype=pl.String))])


def split_words(texts: pl.Series | pl.Expr | list[str]) -> pl.DataFrame:
    """Texts → rows (doc: row number, token) in reading order, the words spaCy's English tokenizer gives.

    Whitespace tokens are left out, as datatrove's ``split_into_words`` strips them.
    """
    frame = pl.DataFrame({"text": pl.Series(texts, dtype=pl.String)})
    chunks = (
        frame.with_row_index("doc")
        .select("doc", chunk=pl.col("text").str.extract_all(CHUNK_RE))
        .explode("chunk")
        .drop_nulls("chunk")
    )
    table = tokenize_chunks(chunks.get_column("chunk").unique())
    return (
        chunks.join(table, on="chunk", how="left", maintain_order="left")
        .select("doc", token=pl.col("tokens").str.strip_chars(" ").str.split(" "))
        .explode("token")
        .filter(pl.col("token") != "")
    )
