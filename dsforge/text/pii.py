"""Mask personal data (emails, public IP addresses, phone numbers) with placeholders, column-wise.

Everything runs as polars regex (Rust ``regex``: no look-around), so the patterns carry their own
context:

* **Public IPs** are decided *inside the regex*. The IPv4 pattern is generated from the list of
  non-public networks below (private, loopback, link-local, CGNAT, documentation, benchmark,
  multicast, reserved): each octet position is an alternation of the allowed number ranges, so
  ``10.1.2.3`` or ``192.168.0.1`` cannot match at all. IPv6 is public when it lies in the global
  unicast block 2000::/3 outside the documentation prefix 2001:db8::/32.
* **Boundaries**: an IP must not be glued to letters, digits or dots (``1.2.3.4.5``, ``v1.2.3.4``
  are left alone). Without look-around the pattern consumes one context character on each side
  and puts it back (``${pre}<IP>${post}``); two IPs separated by a single character would then
  share that character, so the IP rule runs twice (the second pass finds the ones the first
  skipped; two passes always suffice). A dotted quad right after a version word ("version
  1.2.3.4", "build 10.1.0.3") is not an address; other 4-part version numbers whose parts are all
  <= 255 are indistinguishable from IPs and do get masked.
* **Phones** need visible phone structure: North-American ``(555) 123-4567`` / ``555-123-4567`` /
  ``+1 555 123 4567`` (separators required), international numbers starting with ``+`` and
  2-5 digit groups, or national numbers with a trunk ``0`` and spaced groups (``020 7393 1500``).
  Bare digit runs (``5551234567``), which collide with ISBNs, order numbers and timestamps, are
  deliberately not masked.

Counts per kind are emitted as ``__metric__pii_<kind>`` so the funnel shows how much was masked.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal

import polars as pl
from pydantic import Field, field_validator

from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Transform
from dsforge.steps.columns import require_columns

PiiKind = Literal["email", "ip", "phone"]

#: IPv4 networks that are not public (never personal data): masking them would only damage text.
NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this" network
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)


def _ascii_classes(pattern: str) -> str:
    """ASCII ``\\b`` and ``\\d``: Rust regex drops to its slow engine for Unicode word boundaries on
    non-ASCII text (25x slower on Gutenberg), and phone/IP digits are ASCII anyway."""
    return pattern.replace(r"\b", r"(?-u:\b)").replace(r"\d", "[0-9]")


EMAIL_PATTERN = _ascii_classes(
    r"(?:^|\b)[A-Za-z0-9][A-Za-z0-9._%+-]*@"  # local part starts with a letter or digit
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)

_NANP = r"(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b"
_INTERNATIONAL = r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)\d{0,4}[ .-]?|\d{1,4}[ .-])?\d{2,4}(?:[ .-]\d{2,4}){1,4}\b"
_NATIONAL_TRUNK = r"\b0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}\b"  # e.g. UK "020 7393 1500", "07885 577 899"
_E164 = r"\+\d{10,14}\b"
PHONE_PATTERN = _ascii_classes(f"(?:{_INTERNATIONAL}|{_E164}|{_NANP}|{_NATIONAL_TRUNK})")

DEFAULT_PLACEHOLDERS: dict[str, str] = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>"}

_IP_LEFT = r"(^|[^\w.:])"
#: "version 1.2.3.4": a dotted number after a version word is shielded from the IP rule by a
#: temporary word-character prefix (a private-use code point + "_"), removed afterwards.
_VERSION_WORD = _ascii_classes(r"(?i)\b((?:version|ver|release|build|firmware|kernel|rev|v)\.?\s*)(\d)")
_SHIELD = "\ue000_"
_IP_RIGHT = r"(\.?(?:[^\w.:]|$))"


# --------------------------------------------------------------------------- regex generation


def _digits_range(lo: str, hi: str) -> str:
    """Regex for the digit strings from ``lo`` to ``hi`` (same length, leading zeros positional)."""
    if len(lo) == 1:
        return lo if lo == hi else f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + _digits_range(lo[1:], hi[1:])
    rest = len(lo) - 1
    parts = [lo[0] + _digits_range(lo[1:], "9" * rest)]
    if int(lo[0]) + 1 <= int(hi[0]) - 1:
        parts.append(_digits_range(str(int(lo[0]) + 1), str(int(hi[0]) - 1)) + "[0-9]" * rest)
    parts.append(hi[0] + _digits_range("0" * rest, hi[1:]))
    return "(?:" + "|".join(parts) + ")"


def number_range_regex(lo: int, hi: int) -> str:
    """Regex for decimal integers lo..hi (0..255 here) written without leading zeros."""
    parts = []
    for width in (1, 2, 3):
        first, last = max(lo, 10 ** (width - 1) if width > 1 else 0), min(hi, 10**width - 1)
        if first <= last:
            parts.append(_digits_range(str(first), str(last)))
    return "(?:" + "|".join(parts) + ")"


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    """Sorted integers → maximal runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _alternation(values: list[int]) -> str:
    return "(?:" + "|".join(number_range_regex(a, b) for a, b in _ranges(values)) + ")"


def _v4_level(prefix: tuple[int, ...], networks: tuple[ipaddress.IPv4Network, ...]) -> str | None:
    """Regex for the allowed remainder of an address starting with the octets in ``prefix``."""
    octet = number_range_regex(0, 255)
    depth = len(prefix)
    full, partial = [], []
    for value in range(256):
        octets = (*prefix, value)
        block = ipaddress.IPv4Network(
            ".".join(map(str, octets + (0,) * (4 - len(octets)))) + f"/{8 * len(octets)}"
        )
        if any(block.subnet_of(n) for n in networks):
            continue  # entirely non-public
        if any(n.subnet_of(block) for n in networks):
            partial.append(value)  # part of it is non-public: descend one octet
        else:
            full.append(value)
    tail = r"\." + r"\.".join([octet] * (3 - depth)) if depth < 3 else ""
    options = [_alternation(full) + tail] if full else []
    for value in partial:
        below = _v4_level((*prefix, value), networks)
        if below is not None:
            options.append(f"{value}\\.{below}")
    return "(?:" + "|".join(options) + ")" if options else None


@lru_cache(maxsize=1)
def public_ipv4_regex() -> str:
    """IPv4 addresses outside :data:`NON_PUBLIC_V4`, built octet by octet from the network list."""
    pattern = _v4_level((), NON_PUBLIC_V4)
    assert pattern is not None
    return pattern


@lru_cache(maxsize=1)
def public_ipv6_regex() -> str:
    """IPv6 addresses in 2000::/3 except 2001:db8::/32, in full or ``::``-compressed notation."""
    group = r"[0-9a-f]{1,4}"
    not_db8 = (
        r"(?:[0-9a-f]{1,2}|[0-9ace-f][0-9a-f]{2}|d[0-9ac-f][0-9a-f]|db[0-79a-f]"
        r"|[1-9a-f][0-9a-f]{3}|0[0-9ace-f][0-9a-f]{2}|0d[0-9ac-f][0-9a-f]|0db[0-79a-f])"
    )
    first_not_2001 = r"(?:200[02-9a-f]|20[1-9a-f][0-9a-f]|2[1-9a-f][0-9a-f]{2}|3[0-9a-f]{3})"
    # heads: (regex, number of explicit groups it spells, may it stand alone before "::" only)
    heads = [(first_not_2001, 1), (f"2001:{not_db8}", 2)]
    options = []
    for head, used in heads:
        options.append(head + f"(?::{group}){{{8 - used}}}")
        for before in range(0, 7 - used + 1):
            after = 7 - used - before
            tail = f"(?:{group}(?::{group}){{0,{after - 1}}})?" if after > 0 else ""
            middle = f"(?::{group}){{{before}}}" if before else ""
            options.append(f"{head}{middle}::{tail}")
    options.append(f"2001::(?:{group}(?::{group}){{0,5}})?")
    return "(?i:" + "|".join(options) + ")"


def _escape_replacement(text: str) -> str:
    return text.replace("$", "$$")


# --------------------------------------------------------------------------- the step


@register_step("pii")
class Pii(Transform):
    """Replace emails, public IP addresses and phone numbers in a text column with placeholders."""

    column: str = "text"
    kinds: list[PiiKind] = Field(default_factory=lambda: ["email", "ip", "phone"], min_length=1)
    email_placeholder: str = DEFAULT_PLACEHOLDERS["email"]
    ip_placeholder: str = DEFAULT_PLACEHOLDERS["ip"]
    phone_placeholder: str = DEFAULT_PLACEHOLDERS["phone"]
    example = {"column": "text", "kinds": ["email", "ip", "phone"], "email_placeholder": "<EMAIL>"}

    @field_validator("kinds")
    @classmethod
    def _unique(cls, kinds: list[str]) -> list[str]:
        return list(dict.fromkeys(kinds))

    @field_validator("email_placeholder", "ip_placeholder", "phone_placeholder")
    @classmethod
    def _no_digits(cls, text: str) -> str:
        # later rules run on the already-masked text: a placeholder must not look like PII itself
        if any(c.isdigit() for c in text) or "@" in text:
            raise ValueError("a placeholder may not contain digits or '@'")
        return text

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        text = pl.col(self.column)
        metrics: dict[str, pl.Expr] = {}
        # order matters: emails first (they contain digits and dots), then IPs, then phones
        if "email" in self.kinds:
            metrics["email"] = text.str.count_matches(EMAIL_PATTERN)
            text = text.str.replace_all(EMAIL_PATTERN, _escape_replacement(self.email_placeholder))
        out = batch.with_columns(
            text.alias(self.column), *(m.alias(f"{METRIC_PREFIX}pii_{k}") for k, m in metrics.items())
        )
        if "ip" in self.kinds:
            out = self._mask_ips(out)
        if "phone" in self.kinds:
            text = pl.col(self.column)
            out = out.with_columns(
                text.str.replace_all(PHONE_PATTERN, _escape_replacement(self.phone_placeholder)),
                text.str.count_matches(PHONE_PATTERN).alias(f"{METRIC_PREFIX}pii_phone"),
            )
        return out

    def _mask_ips(self, batch: pl.DataFrame) -> pl.DataFrame:
        replacement = "${1}" + _escape_replacement(self.ip_placeholder) + "${2}"
        count = pl.lit(0, dtype=pl.UInt32)
        batch = batch.with_columns(
            pl.col(self.column).str.replace_all(_VERSION_WORD, "${1}" + _SHIELD + "${2}")
        )
        for pattern in (public_ipv4_regex(), public_ipv6_regex()):
            full = f"{_IP_LEFT}{pattern}{_IP_RIGHT}"
            for _ in range(2):  # see the module docstring: the second pass finds neighbours
                batch = batch.with_columns(
                    pl.col(self.column).str.replace_all(full, replacement),
                    (count + pl.col(self.column).str.count_matches(full)).alias("__pii_ip_count"),
                )
                count = pl.col("__pii_ip_count")
        batch = batch.with_columns(pl.col(self.column).str.replace_all(_SHIELD, "", literal=True))
        return batch.rename({"__pii_ip_count": f"{METRIC_PREFIX}pii_ip"})
