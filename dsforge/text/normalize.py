"""``normalize``: repair and tidy text columns (mojibake, Unicode form, whitespace, control chars).

Everything but the mojibake repair is a chain of polars string expressions over the whole
column. ftfy (the repair) is Python per document and slow, so a polars regex first picks the
rows that carry a mojibake signature (UTF-8 read as Latin-1/cp1252/cp1251, C1 controls,
terminal escapes) and only those go through ftfy: on clean text that is nearly free.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Transform
from dsforge.steps.columns import require_columns

# cp1252 characters of the bytes 0x80-0x9F, the continuation bytes of UTF-8 read as cp1252
_CP1252_HIGH = (
    r"\u0152\u0153\u0160\u0161\u0178\u017D\u017E\u0192\u02C6\u02DC"
    r"\u2013\u2014\u2018-\u201E\u2020-\u2022\u2026\u2030\u2039\u203A\u20AC\u2122"
)
#: rows matching this may hold mojibake (or C1 controls / ANSI escapes): only they go through ftfy
MOJIBAKE_GATE = (
    rf"[\u00C2-\u00F4][\u0080-\u00BF{_CP1252_HIGH}]"  # UTF-8 lead byte + continuation, read as Latin-1/cp1252
    # ... and Cyrillic UTF-8 read as cp1251
    rf"|[\u0420\u0421][\u0400-\u040F\u0450-\u045F\u0490\u0491\u00A0-\u00BF\u2116{_CP1252_HIGH}]"
    r"|[\u00C2\u00C3] |[\u0080-\u009F]|\x1B|\u00EF\u00BB\u00BF"  # NBSP byte lost to a space, C1, ANSI, BOM
)
_CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F\u0080-\u009F\uFEFF]"
_HSPACE = r"[ \u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]"
_HSPACE_TAB = r"[ \t\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]"
_LINE_BREAKS = r"\r\n?|[\u2028\u2029]"


def _ftfy_config():
    """Encoding repairs only: quotes, widths, ligatures and Unicode form are left to the other options."""
    from ftfy import TextFixerConfig

    return TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=True,
        fix_encoding=True,
        restore_byte_a0=True,
        replace_lossy_sequences=True,
        decode_inconsistent_utf8=True,
        fix_c1_controls=True,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=True,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )


@register_step("normalize")
class Normalize(Transform):
    """Repair mojibake (ftfy), apply a Unicode form, drop control characters, tidy whitespace."""

    column: str = "text"
    fix_mojibake: bool = True
    #: run ftfy on every row instead of the rows the mojibake regex picks (slow; for comparison)
    ftfy_all_rows: bool = False
    form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = "NFC"
    remove_control_chars: bool = True
    collapse_spaces: bool = True
    trim_lines: bool = True
    max_blank_lines: int | None = Field(1, ge=0)
    example = {"column": "text", "form": "NFC", "max_blank_lines": 1}

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        require_columns(self, batch, [self.column])
        text = batch.get_column(self.column)
        if text.dtype != pl.String:
            from dsforge.errors import DsforgeError

            raise DsforgeError(
                f"steps.{self.context.step_index} ({self.name}): column {self.column!r} holds {text.dtype}, "
                "expected text"
            )
        changed = None
        if self.fix_mojibake:
            text, changed = self._repair(text)
        out = batch.with_columns(self._tidy(pl.lit(text)).alias(self.column))
        if changed is not None:
            out = out.with_columns(changed.alias(f"{METRIC_PREFIX}mojibake_fixed"))
        return out

    def _repair(self, text: pl.Series) -> tuple[pl.Series, pl.Series]:
        """ftfy on the suspicious rows only; returns the column and a 0/1 "changed" flag per row."""
        import ftfy

        if self.ftfy_all_rows:
            suspicious = text.is_not_null()
        else:
            suspicious = text.str.contains(MOJIBAKE_GATE).fill_null(False)
        rows = suspicious.arg_true()
        changed = pl.zeros(text.len(), dtype=pl.Int8, eager=True)
        if rows.len() == 0:
            return text, changed
        config = _ftfy_config()
        before = text.gather(rows).to_list()
        after = [ftfy.fix_text(value, config) for value in before]
        flags = pl.Series([int(a != b) for a, b in zip(after, before, strict=True)], dtype=pl.Int8)
        return text.scatter(rows, pl.Series(after, dtype=pl.String)), changed.scatter(rows, flags)

    def _tidy(self, text: pl.Expr) -> pl.Expr:
        text = text.str.replace_all(_LINE_BREAKS, "\n")
        if self.remove_control_chars:
            text = text.str.replace_all(_CONTROL, "")
        if self.form is not None:
            text = text.str.normalize(self.form)
        if self.collapse_spaces:
            text = text.str.replace_all(rf"{_HSPACE}{{2,}}", " ")
        if self.trim_lines:
            text = text.str.replace_all(rf"(?m)^{_HSPACE_TAB}+|{_HSPACE_TAB}+$", "")
        if self.max_blank_lines is not None:
            text = text.str.replace_all(
                rf"\n{{{self.max_blank_lines + 2},}}", "\n" * (self.max_blank_lines + 1)
            )
        return text.str.strip_chars()
