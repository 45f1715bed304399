"""``extract_html``: the main text of web pages (boilerplate removed) with trafilatura.

Main-content extraction is a tree walk per page, so it is one library call per document; the
step makes those calls for a whole batch inside the worker process that owns the batch, so
``runtime.workers`` spreads pages over the cores. Everything else (charset choice, binary
sniffing, dropping, column housekeeping) is decided per batch.

HTML may arrive as bytes (WARC payloads, HTML dumps in parquet) or as text. Bytes are decoded
with, in order: the declared charset (a ``charset`` column, as the WARC reader emits), the
``<meta charset>`` of the page, UTF-8, and a statistical guess (charset_normalizer) when UTF-8
fails. A payload with NUL bytes or mostly control characters is binary, not a page.
"""

from __future__ import annotations

import codecs
import re
from typing import Literal

import polars as pl

from dsforge.registry import register_step
from dsforge.steps.base import Filter
from dsforge.steps.columns import require_columns

REASON_COLUMN = "__extract_html_reason__"
EMPTY = "empty_after_extraction"
BINARY = "binary_or_undecodable"
FAILED = "extraction_error"

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_SNIFF_BYTES = 4096


def _codec(name: str | None) -> str | None:
    """A Python codec name for a declared charset, or None if unknown."""
    if not name:
        return None
    name = name.strip().lower()
    if name in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
        return "cp1252"  # what browsers do: the WHATWG encoding standard maps these labels to windows-1252
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _is_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    controls = sum(
        head.count(bytes([c]))
        for c in (*range(1, 9), 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)
    )
    return controls > len(head) // 10


def decode_html(payload: bytes, declared: str | None) -> str | None:
    """Decode page bytes the way a careful browser would; None if they are not text."""
    head = payload[:_SNIFF_BYTES]
    if not head or _is_binary(head):
        return None
    if payload.startswith(codecs.BOM_UTF8):
        return payload[3:].decode("utf-8", errors="replace")
    meta = _META_CHARSET.search(head)
    for candidate in (
        _codec(declared),
        _codec(meta.group(1).decode("ascii", "ignore")) if meta else None,
        "utf-8",
    ):
        if candidate is None:
            continue
        try:
            return payload.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    from charset_normalizer import from_bytes

    guess = from_bytes(payload[: 1 << 16]).best()
    if guess is None:
        return None
    return payload.decode(guess.encoding, errors="replace")


@register_step("extract_html")
class ExtractHtml(Filter):
    """Main-content text of HTML pages (trafilatura); drops pages that are binary or yield no text.

    Rows that carry text but no HTML (plain-text sources mixed into the same recipe) pass through.
    """

    column: str = "html"
    output_column: str = "text"
    favor: Literal["precision", "recall", "balanced"] = "precision"
    include_tables: bool = True
    include_comments: bool = False
    keep_html: bool = False
    example = {"column": "html", "output_column": "text", "favor": "precision"}

    def setup(self) -> None:
        import trafilatura  # noqa: F401 - import once per worker, not per batch

    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        # rows from plain-text sources (no HTML, text already there) pass through untouched, so one
        # recipe can mix web pages with books and Wikipedia
        if self.column not in batch.columns and self.output_column in batch.columns:
            return batch.with_columns(pl.lit(None, dtype=pl.String).alias(REASON_COLUMN))
        require_columns(self, batch, [self.column])
        dtype = batch.schema[self.column]
        if dtype not in (pl.Binary, pl.String):
            from dsforge.errors import DsforgeError

            raise DsforgeError(
                f"steps.{self.context.step_index} ({self.name}): column {self.column!r} holds {dtype}, "
                "expected HTML as bytes or text"
            )
        pages = batch.get_column(self.column).to_list()
        charsets = (
            batch.get_column("charset").to_list() if "charset" in batch.columns else [None] * batch.height
        )
        urls = (
            batch.get_column("url").cast(pl.String).to_list()
            if "url" in batch.columns
            else [None] * batch.height
        )
        texts, reasons = self._extract_all(pages, charsets, urls)
        extracted = pl.Series(self.output_column, texts, dtype=pl.String)
        reason = pl.Series(REASON_COLUMN, reasons, dtype=pl.String)
        if self.output_column in batch.columns and self.output_column != self.column:
            has_text = (
                batch.get_column(self.column).is_null() & batch.get_column(self.output_column).is_not_null()
            )
            extracted = pl.select(
                pl.when(has_text).then(batch.get_column(self.output_column)).otherwise(extracted)
            )
            extracted = extracted.to_series().alias(self.output_column)
            reason = (
                pl.select(pl.when(has_text).then(None).otherwise(reason)).to_series().alias(REASON_COLUMN)
            )
        return batch.with_columns(extracted, reason)

    def _extract_all(self, pages: list, charsets: list, urls: list) -> tuple[list, list]:
        from trafilatura import extract

        options = {
            "favor_precision": self.favor == "precision",
            "favor_recall": self.favor == "recall",
            "include_tables": self.include_tables,
            "include_comments": self.include_comments,
            "output_format": "txt",
            "with_metadata": False,
        }
        texts: list[str | None] = []
        reasons: list[str | None] = []
        for page, charset, url in zip(pages, charsets, urls, strict=True):
            if not page or not page.strip():
                texts.append(None)
                reasons.append(EMPTY)
                continue
            html = decode_html(page, charset) if isinstance(page, bytes) else page
            if html is None or "\x00" in html[:_SNIFF_BYTES]:
                texts.append(None)
                reasons.append(BINARY)
                continue
            try:
                text = extract(html, url=url, **options)
            except Exception:  # lxml/trafilatura failures on hostile markup: count, never stop the build
                texts.append(None)
                reasons.append(FAILED)
                continue
            text = text.strip() if text else ""
            texts.append(text or None)
            reasons.append(None if text else EMPTY)
        return texts, reasons

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        return pl.col(REASON_COLUMN)

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        out = super().process(batch).drop(REASON_COLUMN)
        if not self.keep_html:
            extra = ["charset"] if "charset" in out.columns and self.column == "html" else []
            if self.column != self.output_column:
                out = out.drop([c for c in (self.column, *extra) if c in out.columns])
        return out
