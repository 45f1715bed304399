"""WARC / WET reader: web archive records → batches of raw HTML (or WET text) with their metadata.

* WARC ``response`` (and ``resource``) records whose payload is HTML become rows with ``html``
  (the payload **bytes**, undecoded), ``charset`` (from the HTTP ``Content-Type`` header, or
  null), ``url``, ``warc_record_id``, ``date`` and ``content_type``. Bytes stay undecoded here
  on purpose: the reader runs in the main process, decoding (and sniffing ``<meta charset>``)
  is done by ``extract_html`` in the worker processes, and the same step also reads the raw
  bytes of parquet HTML dumps.
* WET ``conversion`` records become rows with ``text`` (UTF-8) plus the same metadata.
* Records passed over are counted by kind in the funnel's ``skipped`` counts, apart from errors:
  protocol records that never hold a document (``warcinfo``, ``request``, ``metadata``…) and
  records that could but are not HTML or not a success (a PDF, a redirect, a 404).
* Corrupt or truncated records are errors, reported as ``file:record N: corrupt ...`` /
  ``truncated ...`` lines; reading goes on where it can: a truncated ``.warc.gz`` yields every
  complete record before the cut.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from dsforge.io.readers import RawBatch, register_reader

HTML_TYPES = ("text/html", "application/xhtml+xml")
PROTOCOL_RECORDS = frozenset({"warcinfo", "request", "metadata", "revisit", "continuation"})
HTML_SCHEMA = {
    "html": pl.Binary,
    "charset": pl.String,
    "url": pl.String,
    "warc_record_id": pl.String,
    "date": pl.String,
    "content_type": pl.String,
}
TEXT_SCHEMA = {
    "text": pl.String,
    "url": pl.String,
    "warc_record_id": pl.String,
    "date": pl.String,
    "content_type": pl.String,
}
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_HTML_SNIFF = re.compile(rb"<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _charset(content_type: str | None) -> str | None:
    found = _CHARSET.search(content_type or "")
    return found.group(1).lower() if found else None


def _looks_like_html(payload: bytes) -> bool:
    return _HTML_SNIFF.search(payload[:2048]) is not None


class _Batcher:
    """Collects rows of one kind (HTML or text) and errors; flushes frames of ``batch_size`` rows."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.html: dict[str, list] = {k: [] for k in HTML_SCHEMA}
        self.text: dict[str, list] = {k: [] for k in TEXT_SCHEMA}
        self.errors: list[str] = []
        self.skipped: Counter[str] = Counter()

    def add(self, kind: str, row: dict) -> None:
        columns = self.html if kind == "html" else self.text
        for key, values in columns.items():
            values.append(row[key])

    def full(self) -> bool:
        rows = len(self.html["warc_record_id"]) + len(self.text["warc_record_id"])
        return rows >= self.batch_size or len(self.errors) >= self.batch_size

    def flush(self) -> Iterator[RawBatch]:
        errors, self.errors = self.errors, []
        skipped, self.skipped = dict(self.skipped), Counter()
        for columns, schema in ((self.html, HTML_SCHEMA), (self.text, TEXT_SCHEMA)):
            if columns["warc_record_id"]:
                yield RawBatch(pl.DataFrame(columns, schema=schema), errors, skipped)
                errors, skipped = [], {}
                for values in columns.values():
                    values.clear()
        if errors or skipped:
            yield RawBatch(pl.DataFrame(), errors, skipped)


def _record_row(record) -> dict:
    headers = record.rec_headers
    return {
        "url": headers.get_header("WARC-Target-URI"),
        "warc_record_id": headers.get_header("WARC-Record-ID"),
        "date": headers.get_header("WARC-Date"),
    }


def _classify(record, payload: bytes) -> tuple[str | None, str]:
    """(kind, detail): kind is "html", "text" or None (skip, with the reason in detail)."""
    rec_type = record.rec_type
    if rec_type == "conversion":
        return "text", _mime(record.rec_headers.get_header("Content-Type")) or "text/plain"
    http = record.http_headers
    if rec_type == "response" and http is not None:
        status = http.get_statuscode()
        if not str(status or "").startswith("2"):
            return None, f"HTTP status {status}"
        content_type = http.get_header("Content-Type")
    else:  # resource records, or responses to non-HTTP (e.g. dns:) requests
        content_type = record.rec_headers.get_header("Content-Type")
    mime = _mime(content_type) or _mime(record.rec_headers.get_header("WARC-Identified-Payload-Type"))
    if mime in HTML_TYPES or (not mime and _looks_like_html(payload)):
        return "html", content_type or "text/html"
    return None, f"not HTML ({mime or 'no content type'})"


@register_reader("warc", (".warc", ".warc.gz", ".wet", ".wet.gz", ".warc.wet.gz"))
def read_warc(path: Path, batch_size: int, label: str) -> Iterator[RawBatch]:
    """Stream HTML responses (WARC) or text conversions (WET) of one archive file."""
    from warcio.archiveiterator import ArchiveIterator

    batcher = _Batcher(batch_size)
    number = 0
    with open(path, "rb") as stream:
        records = ArchiveIterator(stream, no_record_parse=False, arc2warc=True)
        while True:
            number += 1
            try:
                record = next(records)
            except StopIteration:
                leftover = path.stat().st_size - int(getattr(records, "offset", 0) or 0)
                if leftover > 0:  # a cut inside a record's header: warcio stops without a word
                    batcher.errors.append(
                        f"{label}:record {number}: truncated record ({leftover} bytes at the "
                        "end of the file do not form a complete record)"
                    )
                break
            except Exception as exc:  # corrupt gzip member, bad WARC header, cut mid-header
                batcher.errors.append(
                    f"{label}:record {number}: corrupt or truncated record, reading stops "
                    f"({type(exc).__name__}: {_first_line(exc)})"
                )
                break
            if not record.rec_type:
                batcher.errors.append(
                    f"{label}:record {number}: corrupt or truncated record (no WARC-Type), reading stops"
                )
                break
            try:
                payload = b"" if record.rec_type in PROTOCOL_RECORDS else record.content_stream().read()
                missing = _unread_bytes(record)
            except Exception as exc:
                batcher.errors.append(
                    f"{label}:record {number}: corrupt record ({type(exc).__name__}: {_first_line(exc)})"
                )
                continue
            if missing:
                batcher.errors.append(
                    f"{label}:record {number}: truncated record (file ends {missing} bytes "
                    "before its end), reading stops"
                )
                break
            if record.rec_type in PROTOCOL_RECORDS:
                batcher.skipped[f"{record.rec_type} record"] += 1
                continue
            kind, detail = _classify(record, payload)
            if kind is None:
                batcher.skipped[detail] += 1
            elif kind == "html":
                row = _record_row(record)
                row.update(html=payload, charset=_charset(detail), content_type=detail)
                batcher.add("html", row)
            else:
                row = _record_row(record)
                row.update(text=payload.decode("utf-8", errors="replace"), content_type=detail)
                batcher.add("text", row)
            if batcher.full():
                yield from batcher.flush()
    yield from batcher.flush()


def _unread_bytes(record) -> int:
    """Bytes the WARC header promised but the file did not hold (0 for a complete record)."""
    raw = record.raw_stream
    while raw.read(1 << 16):  # drain trailers after the decoded payload
        pass
    return int(getattr(raw, "limit", 0) or 0)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"
