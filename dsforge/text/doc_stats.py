# ruff: noqa: RUF001, RUF002, RUF003 - tables of look-alike punctuation characters
"""Document statistics the web-text quality filters decide on, computed once per batch on columns.

Every function takes a batch of texts (a String Series) and returns one row per document, in order.
Line and word statistics come from polars string expressions, or from exploding texts into
(doc, line) / (doc, word) rows and grouping back; the only Python loop left is the greedy
"duplicated n-gram characters" walk (`duplicated_ngram_chars`), run only on the documents that
repeat an n-gram at all.

The definitions follow datatrove's filters exactly (Python's ``str.splitlines``/``str.strip``
whitespace, spaCy's English words from :mod:`dsforge.text.words`), so thresholds mean the same.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import polars as pl

from dsforge.text.words import split_words

#: Python's whitespace (``str.isspace``), which is what ``str.strip()``/``str.split()`` remove.
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
#: The same as a regex class: Rust's ``\s`` lacks the four information separators \x1c-\x1f.
WS = r"[\s\x1c-\x1f]"
#: A whitespace-separated word (what ``str.split()`` returns) or spaCy chunk.
WS_RUN = r"[^\s\x1c-\x1f]+"
#: What ``str.splitlines`` breaks on (besides \n), so it can be rewritten to \n first.
LINE_BREAKS = r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\x{2028}\x{2029}]"

#: datatrove's TERMINAL_PUNCTUATION: Unicode Sentence_Terminal (as of its table) plus three Khmer signs.
TERMINAL_PUNCTUATION = (
    r"[\p{Sentence_Terminal}\x{17D6}\x{17D9}\x{17DA}--[\x{1B4E}\x{1B4F}\x{1B7F}\x{2024}\x{2CF9}-\x{2CFB}"
    r"\x{FE12}\x{FE15}\x{FE16}\x{113D4}\x{113D5}\x{16D6E}\x{16D6F}]]"
)
#: datatrove's PUNCTUATION (ASCII and CJK punctuation, a few symbols, C0/C1 controls but tab/newline).
_PUNCTUATION_CHARS = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
)
_PUNCTUATION_CLASS = (
    "".join("\\" + c if c in "\\[]^-&~|" else c for c in _PUNCTUATION_CHARS)
    + r"\x00-\x08\x0b\x0c\x0d-\x1f\x7f-\x9f"
)
#: A word with a character outside PUNCTUATION ∪ TERMINAL_PUNCTUATION is a "non-symbol" word.
NON_SYMBOL_CHAR = r"[^" + _PUNCTUATION_CLASS + r"[" + TERMINAL_PUNCTUATION[1:-1] + "]]"

_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_DOC_MULTIPLIER = np.uint64(0xC2B2AE3D27D4EB4F)
_LENGTH_MULTIPLIER = np.uint64(0x165667B19E3779F9)
_BYTE_BASE = 0x100000001B3
_BYTE_BASE_INVERSE = pow(_BYTE_BASE, -1, 2**64)


# --------------------------------------------------------------------------- helpers
def py_strip(expr: pl.Expr) -> pl.Expr:
    """``str.strip()`` with Python's whitespace."""
    return expr.str.strip_chars(PY_WHITESPACE)


def py_splitlines(expr: pl.Expr) -> pl.Expr:
    """``str.splitlines()`` as a List[String] expression (no trailing empty line, [] for "")."""
    normalized = expr.str.replace_all(LINE_BREAKS, "\n").str.strip_suffix("\n")
    return (
        pl.when(expr == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(normalized.str.split("\n"))
    )


def explode_items(texts: pl.Series, items: pl.Expr) -> pl.DataFrame:
    """(doc, item) rows for a list expression over the texts; documents without items have no rows."""
    return (
        pl.DataFrame({"text": texts})
        .with_row_index("doc")
        .select("doc", item=items)
        .explode("item")
        .drop_nulls("item")
    )


def per_doc(n_docs: int, frame: pl.DataFrame, fill: dict[str, object]) -> pl.DataFrame:
    """Align a (doc, ...) aggregate to every document 0..n_docs-1, filling documents it lacks."""
    docs = pl.DataFrame({"doc": pl.arange(0, n_docs, dtype=pl.UInt32, eager=True)})
    out = docs.join(
        frame.with_columns(pl.col("doc").cast(pl.UInt32)), on="doc", how="left", maintain_order="left"
    )
    return out.with_columns([pl.col(c).fill_null(v) for c, v in fill.items()])


def duplicate_stats(items: pl.DataFrame, n_docs: int) -> pl.DataFrame:
    """Per doc: items, repeated items (every occurrence after the first) and their characters.

    datatrove's ``find_duplicates``: a set of seen elements, counting each element already seen.
    """
    grouped = items.group_by("doc", "item").agg(count=pl.len(), chars=pl.col("item").first().str.len_chars())
    totals = grouped.group_by("doc").agg(
        n_items=pl.col("count").sum(),
        dup_items=(pl.col("count") - 1).sum(),
        dup_chars=((pl.col("count") - 1) * pl.col("chars")).sum(),
    )
    return per_doc(n_docs, totals, {"n_items": 0, "dup_items": 0, "dup_chars": 0}).drop("doc")


def word_rows(texts: pl.Series) -> pl.DataFrame:
    """(doc, token, chars) rows: the words datatrove's ``split_into_words`` gives for each text."""
    words = split_words(texts)
    return words.with_columns(chars=pl.col("token").str.len_chars())


# --------------------------------------------------------------------------- Gopher quality
def gopher_word_stats(words: pl.DataFrame, n_docs: int, stop_words: Sequence[str]) -> pl.DataFrame:
    """Per doc: words, non-symbol words and their characters, words with a letter, distinct stop words."""
    token = pl.col("token")
    non_symbol = token.str.contains(NON_SYMBOL_CHAR)
    totals = words.group_by("doc").agg(
        n_words=pl.len(),
        n_non_symbol=non_symbol.sum(),
        non_symbol_chars=pl.col("chars").filter(non_symbol).sum(),
        n_alpha=token.str.contains(r"\p{L}").sum(),
        n_stop_words=token.filter(token.is_in(list(stop_words))).n_unique(),
    )
    fill = dict.fromkeys(["n_words", "n_non_symbol", "non_symbol_chars", "n_alpha", "n_stop_words"], 0)
    return per_doc(n_docs, totals, fill).drop("doc")


def gopher_line_stats(texts: pl.Series) -> pl.DataFrame:
    """Per doc: '#' and ellipsis counts, lines (splitlines), lines opening with a bullet / ending in '...'."""
    text = pl.col("text")
    lines = text.str.replace_all(LINE_BREAKS, "\n").str.strip_suffix("\n")
    inline_ws = r"[^\S\n\x1c-\x1e]|\x1f"  # whitespace that cannot end a line once breaks are \n
    return pl.DataFrame({"text": texts}).select(
        hashes=text.str.count_matches("#", literal=True),
        ellipses=text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True),
        n_lines=pl.when(text == "").then(0).otherwise(lines.str.count_matches("\n", literal=True) + 1),
        bullet_lines=lines.str.count_matches(r"(?m)^(?:" + inline_ws + r")*[•\-]"),
        ellipsis_lines=lines.str.count_matches(r"(?m)(?:\.\.\.|…)(?:" + inline_ws + r")*$"),
    )


# --------------------------------------------------------------------------- Gopher repetition
def paragraph_and_line_duplicates(texts: pl.Series) -> pl.DataFrame:
    """Per doc: duplicated paragraphs (split on \\n\\n+) and lines (split on \\n+), counts and characters."""
    n_docs = len(texts)
    paragraphs = explode_items(texts, py_strip(pl.col("text")).str.extract_all(r"[^\n]+(?:\n[^\n]+)*"))
    para = duplicate_stats(paragraphs, n_docs)
    lines = duplicate_stats(explode_items(texts, pl.col("text").str.extract_all(r"[^\n]+")), n_docs)
    text = pl.col("text")
    # re.split("\n+") also yields "" before a leading and after a trailing newline run
    edges = pl.DataFrame({"text": texts}).select(
        empty=text.str.starts_with("\n").cast(pl.Int64) + text.str.ends_with("\n").cast(pl.Int64),
        text_chars=text.str.len_chars(),
    )
    return pl.DataFrame(
        {
            # re.split on a stripped empty text gives one empty paragraph
            "n_paragraphs": para["n_items"].clip(lower_bound=1),
            "dup_paragraphs": para["dup_items"],
            "dup_paragraph_chars": para["dup_chars"],
            "n_lines": lines["n_items"] + edges["empty"],
            "dup_lines": lines["dup_items"] + (edges["empty"] - 1).clip(lower_bound=0),
            "dup_line_chars": lines["dup_chars"],
            "text_chars": edges["text_chars"],
        }
    )


class NgramIndex:
    """The *repeated* word n-grams of every document (those occurring twice or more in it), by n.

    An n-gram is a 64-bit polynomial hash of its words' hashes, mixed with the document number.
    If an (n+1)-gram repeats, so does its leading n-gram, so the repeats for n+1 are searched only
    among the repeats for n: one pass over all bigrams, then ever smaller sets. Memory: a few
    int64 arrays per word (document, length, hash), plus the repeats kept per n.
    """

    def __init__(self, words: pl.DataFrame, n_docs: int) -> None:
        self.n_docs = n_docs
        self.doc = words.get_column("doc").to_numpy().astype(np.int64)
        self.char_cumsum = np.concatenate(
            [[0], np.cumsum(words.get_column("chars").to_numpy().astype(np.int64))]
        )
        self.word_hash = words.get_column("token").hash(seed=7).to_numpy()
        self.doc_start = np.searchsorted(self.doc, np.arange(n_docs + 1))
        self.doc_words = np.diff(self.doc_start)
        # n -> (start index of each repeated n-gram, its unmixed hash)
        self._repeats: dict[int, tuple[np.ndarray, np.ndarray]] = {
            1: (np.arange(len(self.doc)), self.word_hash)
        }
        # per word boundary: prefix hash of the bytes before it, and B^(bytes before it - 1)
        self._bytes_before, self._power_at, self._sum_at = _byte_prefix_hashes(words.get_column("token"))

    def _repeated(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in self._repeats:
            starts, hashes = self._repeated(n - 1) if n > 2 else (np.arange(len(self.doc)), self.word_hash)
            end = starts + n - 1
            inside = end < self.doc_start[self.doc[starts] + 1]
            starts, end = starts[inside], end[inside]
            with np.errstate(over="ignore"):
                hashes = hashes[inside] * _HASH_MULTIPLIER + self.word_hash[end]
            repeated = pl.Series(self._mixed(starts, hashes)).is_duplicated().to_numpy()
            self._repeats[n] = (starts[repeated], hashes[repeated])
        return self._repeats[n]

    def _mixed(self, starts: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return hashes ^ (self.doc[starts].astype(np.uint64) * _DOC_MULTIPLIER)

    def repeated(self, n: int) -> pl.DataFrame:
        """(doc, pos, key, chars) for each occurrence of an n-gram its document repeats, in reading order.

        ``pos`` is the word index in the document, ``chars`` the n words' characters (no separators),
        ``key`` equal for the same n-gram in the same document.
        """
        starts, hashes = self._repeated(n)
        doc = self.doc[starts]
        return pl.DataFrame(
            {
                "doc": doc,
                "pos": starts - self.doc_start[doc],
                "key": self._mixed(starts, hashes),
                "chars": self.char_cumsum[starts + n] - self.char_cumsum[starts],
            }
        )

    def repeated_concatenations(self, n: int, docs: np.ndarray) -> pl.DataFrame:
        """Like :meth:`repeated`, for the docs given, but n-grams are equal when their words *concatenated*
        are (``"".join``, datatrove's key for duplicated n-grams: "..", "." equals ".", "..")."""
        count = len(self.doc) - n + 1
        if count <= 0:
            schema = {"doc": pl.Int64, "pos": pl.Int64, "key": pl.UInt64, "chars": pl.Int64}
            return pl.DataFrame(schema=schema)
        inside = self.doc[:count] == self.doc[n - 1 :]
        if len(docs) < self.n_docs:
            wanted = np.zeros(self.n_docs, dtype=bool)
            wanted[docs] = True
            inside &= wanted[self.doc[:count]]
        with np.errstate(over="ignore"):
            hashes = (self._sum_at[n:] - self._sum_at[:count]) * self._power_at[n:]
            lengths = (self._bytes_before[n:] - self._bytes_before[:count]).astype(np.uint64)
            hashes ^= lengths * _LENGTH_MULTIPLIER
        starts = np.flatnonzero(inside)
        keys = self._mixed(starts, hashes[starts])
        repeated = pl.Series(keys).is_duplicated().to_numpy()
        starts = starts[repeated]
        doc = self.doc[starts]
        return pl.DataFrame(
            {
                "doc": doc,
                "pos": starts - self.doc_start[doc],
                "key": keys[repeated],
                "chars": self.char_cumsum[starts + n] - self.char_cumsum[starts],
            }
        )

    def first_ngram_chars(self, n: int) -> np.ndarray:
        """Characters of each document's first n-gram (no separators); -1 if it has fewer than n words."""
        start = self.doc_start[:-1]
        has = self.doc_words >= n
        out = np.full(self.n_docs, -1, dtype=np.int64)
        out[has] = self.char_cumsum[start[has] + n] - self.char_cumsum[start[has]]
        return out


def _byte_prefix_hashes(tokens: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix hashes over the words' UTF-8 bytes laid end to end, so any run of consecutive words
    (their concatenation) hashes in O(1): with ``S[i] = Σ_{j<i} (b_j + 1)·B^-j`` and ``P[i] = B^(i-1)``,
    bytes [lo, hi) hash to ``(S[hi] - S[lo])·P[hi] = Σ (b_j + 1)·B^(hi-1-j)`` (mod 2^64, B odd).

    Returns, at each word boundary (word starts and the final end): the bytes before it, P and S.
    Transient cost: three uint64 per byte of text.
    """
    bytes_before = np.concatenate([[0], np.cumsum(tokens.str.len_bytes().to_numpy().astype(np.int64))])
    data = np.frombuffer(tokens.str.join("").item().encode("utf-8"), dtype=np.uint8) if len(tokens) else []
    size = len(data)
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(size + 1, _BYTE_BASE, dtype=np.uint64))  # B^1 .. B^(size+1)
        inverse = np.cumprod(np.full(size, _BYTE_BASE_INVERSE, dtype=np.uint64))
        inverse = np.concatenate([[np.uint64(1)], inverse[:-1]])  # B^-0 .. B^-(size-1)
        weighted = (np.asarray(data, np.uint64) + np.uint64(1)) * inverse
        sums = np.concatenate([[np.uint64(0)], np.cumsum(weighted)])
    previous_power = np.concatenate([[np.uint64(0), np.uint64(1)], powers[:-2]])  # P[i] = B^(i-1)
    return bytes_before, previous_power[bytes_before], sums[bytes_before]


def top_ngram_chars(index: NgramIndex, n: int) -> np.ndarray:
    """Per doc: characters of the most frequent n-gram (words joined by spaces) × its count.

    Ties go to the n-gram seen first, as ``Counter.most_common(1)`` does: in a document without a
    repeated n-gram that is its first one. NaN when the document has fewer than n words (datatrove
    skips the rule then).
    """
    first = index.first_ngram_chars(n)
    top = np.where(first >= 0, first + (n - 1), np.nan)
    per_gram = (
        index.repeated(n)
        .group_by("key")
        .agg(
            doc=pl.col("doc").first(),
            count=pl.len(),
            first=pl.col("pos").first(),
            chars=pl.col("chars").first(),
        )
    )
    if per_gram.height:
        best = per_gram.group_by("doc").agg(
            top=(pl.col("count") * (pl.col("chars") + (n - 1)))
            .sort_by(["count", "first"], descending=[True, False])
            .first()
        )
        top[best.get_column("doc").to_numpy()] = best.get_column("top").to_numpy()
    return top


def duplicated_ngram_chars(index: NgramIndex, n: int, docs: np.ndarray) -> np.ndarray:
    """For the given docs: characters in repeated n-grams by datatrove's greedy walk (``find_all_duplicate``).

    The walk visits positions left to right; a visited n-gram already seen counts its characters
    (words concatenated) and makes the walk jump n words ahead, so the words it covers are never
    visited. An n-gram whose key occurs only once per document can never count, so the walk only
    stops at *candidates* (positions whose n-gram occurred earlier): the n-gram at a candidate was
    seen iff an earlier candidate with the same key was visited, or its first occurrence was not
    skipped. Documents without candidates (most) cost no Python work.
    """
    result = np.zeros(len(docs), dtype=np.int64)
    if not len(docs):
        return result
    repeated = index.repeated_concatenations(n, docs)
    if not repeated.height:
        return result
    repeated = repeated.with_columns(first=pl.col("pos").first().over("key")).filter(
        pl.col("pos") > pl.col("first")
    )
    slot = np.zeros(index.n_docs, dtype=np.int64)
    slot[docs] = np.arange(len(docs))
    doc = repeated.get_column("doc").to_numpy()
    columns = [repeated.get_column(c).to_list() for c in ("pos", "first", "key", "chars")]
    bounds = np.flatnonzero(np.diff(doc)) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(doc)], strict=True):
        result[slot[doc[lo]]] = _greedy_walk(*(column[lo:hi] for column in columns), n)
    return result


def _greedy_walk(positions: list[int], firsts: list[int], keys: list[int], chars: list[int], n: int) -> int:
    repeated, next_free = 0, 0
    visited_keys: set[int] = set()
    skip_starts: list[int] = []  # skipped windows [start, start + n - 2], increasing and disjoint
    for position, first, key, length in zip(positions, firsts, keys, chars, strict=True):
        if position < next_free:
            continue
        window = bisect_right(skip_starts, first) - 1
        first_skipped = window >= 0 and first <= skip_starts[window] + n - 2
        if key in visited_keys or not first_skipped:
            repeated += length
            next_free = position + n
            skip_starts.append(position + 1)
        visited_keys.add(key)
    return repeated


# --------------------------------------------------------------------------- FineWeb
def fineweb_line_stats(texts: pl.Series, stop_chars: Sequence[str] | None) -> pl.DataFrame:
    """Non-blank lines (split on \\n) as (doc, item) rows with ``ends`` (in a stop char) and ``chars``."""
    lines = explode_items(texts, pl.col("text").str.split("\n")).filter(
        pl.col("item").str.contains(r"[^\s\x1c-\x1f]")
    )
    item = pl.col("item")
    if stop_chars is None:
        ends = item.str.contains(TERMINAL_PUNCTUATION + "$")
    else:
        ends = pl.any_horizontal([item.str.ends_with(c) for c in stop_chars]) if stop_chars else pl.lit(False)
    return lines.with_columns(ends=ends, chars=item.str.len_chars())


# --------------------------------------------------------------------------- sentences (C4)
#: spaCy's sentencizer splits after these tokens (its default punct_chars; single characters).
SENTENCE_PUNCT = (
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？𐩖𐩗𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎"
    "𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑩂𑩃𑪛𑪜𑱁𑱂𖩮𖩯𖫵𖬷𖬸𖭄𛲟𝪈｡。"
)


def sentence_counts(texts: pl.Series) -> pl.Series:
    """Sentences spaCy's sentencizer finds in each text (what datatrove's ``split_into_sentences`` counts).

    A sentence starts at the first word after a sentence-ending token, once any further
    punctuation tokens are passed: with each word classed E (in ``SENTENCE_PUNCT``), P (other
    all-punctuation token) or W, the count is 1 + the matches of ``E[EP]*W``.
    """
    words = split_words(texts)
    token = pl.col("token")
    kind = (
        pl.when(token.is_in(list(SENTENCE_PUNCT)))
        .then(pl.lit("E"))
        .when(token.str.contains(r"^\p{P}+$"))
        .then(pl.lit("P"))
        .otherwise(pl.lit("W"))
    )
    shapes = words.group_by("doc", maintain_order=True).agg(shape=kind.str.join(""))
    counts = shapes.select("doc", count=pl.col("shape").str.count_matches("E[EP]*W") + 1)
    return per_doc(len(texts), counts, {"count": 0}).get_column("count")
