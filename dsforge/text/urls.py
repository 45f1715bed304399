"""Drop documents whose URL is on a block list: domains (with their subdomains), URLs, banned words.

Matching is column-wise. The host is cut out of each URL with one polars regex; for every label
count ``k`` that occurs in the block list, the host's last ``k`` labels are extracted (so
``a.b.example.com`` yields ``com``, ``example.com``, ``b.example.com`` …) and hashed with xxh3.
A host is blocked when any of these suffixes is in the sorted array of blocked-domain hashes
(``np.searchsorted``), so blocking ``example.com`` blocks ``a.example.com`` but not
``notexample.com``. Memory: 8 bytes per blocked domain or URL (hash collisions between 64-bit
hashes are negligible at block-list sizes of millions).

Block-list files hold one entry per line; ``#`` starts a comment; a line with a path (``/``) or
a scheme is a URL entry, matched exactly after normalization (scheme, ``www.``, fragment and a
trailing ``/`` removed; host lower-cased). Hosts-file lines (``0.0.0.0 ads.example.com``) are
read as their domain.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field, PrivateAttr, field_validator, model_validator

from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import Filter
from dsforge.steps.columns import require_columns
from dsforge.steps.hashing import stable_hash
from dsforge.types import InputPath

#: scheme (optional) · user-info (optional) · host · port/path/query/fragment
_HOST = r"(?i)^\s*(?:[a-z][a-z0-9+.-]*:)?(?://)?(?:[^@/?#\s]*@)?([^:/?#\s\[\]]+)"
_SCHEME = r"(?i)^\s*(?:[a-z][a-z0-9+.-]*:)?//"


def normalize_host(host: pl.Expr) -> pl.Expr:
    return host.str.to_lowercase().str.strip_chars_end(".")


def normalize_url(url: pl.Expr) -> pl.Expr:
    """``https://www.Example.com/a/#x`` → ``example.com/a``: the form URL entries are compared in."""
    bare = url.str.replace(_SCHEME, "").str.replace(r"#.*$", "").str.strip_chars().str.strip_chars_end("/")
    host = normalize_host(bare.str.extract(r"^([^/?]+)", 1)).str.replace(r"^www\.", "")
    rest = bare.str.replace(r"^[^/?]+", "")
    return pl.concat_str([host, rest])


def read_blocklist(path: str) -> tuple[list[str], list[str]]:
    """One file → (domains, urls), comments and blank lines skipped."""
    domains, urls = [], []
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 2 and _is_ip(fields[0]):  # hosts-file format
            line = fields[1]
        (urls if "/" in line else domains).append(line)
    return domains, urls


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _clean_domain(domain: str) -> str:
    return domain.strip().lower().removeprefix("*.").strip(".")


def _sorted_hashes(values: list[str]) -> np.ndarray:
    if not values:
        return np.zeros(0, dtype=np.uint64)
    hashes = pl.DataFrame({"v": values}, schema={"v": pl.String}).select(stable_hash(pl.col("v"))).to_series()
    return np.unique(hashes.to_numpy())


def _member(hashes: pl.Series, table: np.ndarray) -> np.ndarray:
    """Membership of u64 hashes (nulls are never members) in a sorted unique array."""
    values = hashes.fill_null(0).to_numpy()
    if table.size == 0:
        return np.zeros(len(values), dtype=bool)
    position = np.minimum(np.searchsorted(table, values), table.size - 1)
    return (table[position] == values) & hashes.is_not_null().to_numpy()


@register_step("url_filter")
class UrlFilter(Filter):
    """Drop rows whose URL's domain (or a parent domain), exact URL or a banned word is blocked."""

    column: str = "url"
    blocklist_files: list[InputPath] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    substrings: list[str] = Field(default_factory=list, description="banned words, case-insensitive")
    drop_missing: bool = False
    example = {"column": "url", "blocklist_files": ["blocklists/adult.txt"], "substrings": ["casino"]}

    _domain_hashes: np.ndarray | None = PrivateAttr(default=None)
    _url_hashes: np.ndarray | None = PrivateAttr(default=None)
    _label_counts: list[int] = PrivateAttr(default_factory=list)

    @field_validator("substrings")
    @classmethod
    def _no_empty(cls, words: list[str]) -> list[str]:
        if any(not w for w in words):
            raise ValueError("an empty substring would block every URL")
        return [w.lower() for w in words]

    @model_validator(mode="after")
    def _something_to_block(self) -> UrlFilter:
        if not (self.blocklist_files or self.domains or self.substrings or self.drop_missing):
            raise ValueError("give at least one of blocklist_files, domains, substrings (or drop_missing)")
        return self

    def fingerprint_extra(self) -> str:
        return repr([(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in self.blocklist_files])

    def setup(self) -> None:
        if self._domain_hashes is not None:
            return
        domains, urls = [], []
        for path in self.blocklist_files:
            file_domains, file_urls = read_blocklist(path)
            domains += file_domains
            urls += file_urls
        domains = sorted({_clean_domain(d) for d in [*domains, *self.domains] if _clean_domain(d)})
        url_frame = pl.DataFrame({"u": urls}, schema={"u": pl.String})
        normalized = url_frame.select(normalize_url(pl.col("u"))).to_series().to_list()
        self._domain_hashes = _sorted_hashes(domains)
        self._url_hashes = _sorted_hashes(sorted(set(normalized)))
        self._label_counts = sorted({d.count(".") + 1 for d in domains})

    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        if batch.schema[self.column] != pl.String:
            raise DsforgeError(
                f"steps.{self.context.step_index} ({self.name}): column {self.column!r} must be text, "
                f"not {batch.schema[self.column]}"
            )
        return batch

    def drop_reason(self, batch: pl.DataFrame) -> pl.Series:
        self.setup()
        url = pl.col(self.column)
        host = normalize_host(url.str.extract(_HOST, 1))
        suffixes = [
            stable_hash(host.str.extract(rf"(?:^|\.)((?:[^.]+\.){{{k - 1}}}[^.]+)$", 1)).alias(f"s{k}")
            for k in self._label_counts
        ]
        probes = batch.select(
            (url.is_null() | (url.str.strip_chars() == "")).alias("missing"),
            stable_hash(normalize_url(url)).alias("url_hash"),
            url.str.to_lowercase()
            .str.contains_any(self.substrings, ascii_case_insensitive=True)
            .alias("banned")
            if self.substrings
            else pl.lit(False).alias("banned"),
            *suffixes,
        )
        missing = probes.to_series(0).to_numpy()
        domain_hit = np.zeros(batch.height, dtype=bool)
        for k in self._label_counts:
            domain_hit |= _member(probes.get_column(f"s{k}"), self._domain_hashes)
        url_hit = _member(probes.get_column("url_hash"), self._url_hashes) & ~missing
        banned = probes.to_series(2).fill_null(False).to_numpy()
        rules = [
            ("url_missing", missing if self.drop_missing else np.zeros_like(missing)),
            ("url_blocked_domain", domain_hit),
            ("url_blocked_url", url_hit),
            ("url_blocked_substring", banned),
        ]
        reason = pl.lit(None, dtype=pl.String)
        for label, mask in reversed(rules):  # the first rule that applies names the reason
            reason = pl.when(pl.lit(pl.Series(mask, dtype=pl.Boolean))).then(pl.lit(label)).otherwise(reason)
        return batch.select(reason.alias("reason")).to_series()
