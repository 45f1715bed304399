"""Side-by-side report of several models' answers to the same prompts (``dsforge compare``).

Input: a built dataset folder (or a parquet/jsonl file) with one answer per row and a ``model``
column — what ``generate`` and ``base_as_instruct`` write — or preference pairs (``chosen`` /
``rejected`` with ``chosen_model``/``rejected_model``, unpivoted to one answer per row). The
answer is ``answer_column`` (default: ``completion``, else ``response``, else the last assistant
turn of ``messages``); the prompt is ``prompt_column`` (default: ``instruction``, else ``prompt``,
else the user turns of ``messages``).

Per model (columnar, over every row): answers, mean/median characters, refusal rate (the
``refusal`` phrase pack ``phrase_filter`` uses), the rates of ``ran_past_answer`` and
``echoed_format`` (base_as_instruct's flags, over the rows that carry them), flagged failures
(``generation_error``) and the mean judge ``score`` where present. Per prompt (the first
``max_prompts``): the answers side by side. Written as ``compare.md`` and ``compare.html`` (all
text escaped, inline style, no external assets).

The ``compare_report`` step writes the same report during a build, from the rows at its place
in the recipe (e.g. before ``make_pairs`` turns answers into pairs and drops the flags), into
its ``path``; the rows pass through unchanged.
"""

from __future__ import annotations

import glob
import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dsforge.errors import DsforgeError
from dsforge.io.parts import PartStore
from dsforge.registry import register_step
from dsforge.steps.base import GlobalStep
from dsforge.types import OutputPath

FLAGS = ("ran_past_answer", "echoed_format")
MISSING = "-"


# --------------------------------------------------------------------------- reading
def read_rows(path: str | Path) -> pl.DataFrame:
    """Every data row of a built folder (all splits) or of one parquet/jsonl file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(glob.glob(str(path / "**" / "*.parquet"), recursive=True))
        if not files:
            raise DsforgeError(f"{path}: no parquet files (is it a built dataset folder?)")
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if not path.exists():
        raise DsforgeError(f"{path}: not found")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pl.read_ndjson(path)
    raise DsforgeError(f"{path}: give a built folder, a .parquet or a .jsonl file")


def _text(frame: pl.DataFrame, column: str, role: str | None = None, last: bool = False) -> pl.Expr:
    """A text column as is; a conversation column as its ``role`` turns (last one, or joined)."""
    dtype = frame.schema[column]
    if dtype == pl.String:
        return pl.col(column)
    if isinstance(dtype, pl.Struct):
        return pl.col(column).struct.field("content").cast(pl.String)
    turns = pl.col(column).list.eval(pl.element().filter(pl.element().struct.field("role") == role))
    contents = turns.list.eval(pl.element().struct.field("content"))
    return contents.list.last() if last else contents.list.join("\n\n")


def answers_table(
    frame: pl.DataFrame,
    *,
    answer_column: str | None = None,
    prompt_column: str | None = None,
    model_column: str = "model",
) -> pl.DataFrame:
    """One row per answer: prompt, model, answer, and score / flags / error where the data has them."""
    if {"chosen", "rejected"} <= set(frame.columns) and model_column not in frame.columns:
        return _unpivot_pairs(frame)
    if model_column not in frame.columns:
        raise DsforgeError(
            f"no column {model_column!r} naming the model (columns: {', '.join(frame.columns)})"
        )
    answer = answer_column or next((c for c in ("completion", "response") if c in frame.columns), None)
    if answer is None and "messages" not in frame.columns:
        raise DsforgeError("no answer column: give answer_column (or rows with completion / messages)")
    prompt = prompt_column or next((c for c in ("instruction", "prompt") if c in frame.columns), None)
    if prompt is None and "messages" not in frame.columns:
        raise DsforgeError("no prompt column: give prompt_column (or rows with instruction / messages)")
    for name in (answer, prompt):
        if name is not None and name not in frame.columns:
            raise DsforgeError(f"no column {name!r} (columns: {', '.join(frame.columns)})")
    answer_expr = (
        _text(frame, answer, "assistant", last=True)
        if answer
        else _text(frame, "messages", "assistant", last=True)
    )
    prompt_expr = _text(frame, prompt, "user") if prompt else _text(frame, "messages", "user")
    extra = [pl.col(c) for c in ("score", *FLAGS, "generation_error") if c in frame.columns]
    return frame.select(
        prompt_expr.alias("prompt"),
        pl.col(model_column).cast(pl.String).alias("model"),
        answer_expr.alias("answer"),
        *extra,
    )


def _unpivot_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    sides = []
    for side in ("chosen", "rejected"):
        model = pl.col(f"{side}_model") if f"{side}_model" in frame.columns else pl.lit(side)
        score = pl.col(f"{side}_score") if f"{side}_score" in frame.columns else pl.lit(None)
        sides.append(
            frame.select(
                _text(frame, "prompt", "user").alias("prompt"),
                model.cast(pl.String).fill_null(side).alias("model"),
                _text(frame, side, "assistant", last=True).alias("answer"),
                score.cast(pl.Float64).alias("score"),
            )
        )
    return pl.concat(sides)


# --------------------------------------------------------------------------- statistics
def model_stats(answers: pl.DataFrame) -> pl.DataFrame:
    """Per model: counts, lengths, refusal rate, base-model flags, failures, mean judge score."""
    from dsforge.prefs.scorers import _refusal_regex

    text = pl.col("answer")
    has_text = text.is_not_null() & (text.str.strip_chars() != "")
    chars = pl.when(has_text).then(text.str.len_chars())
    aggs = [
        pl.len().alias("answers"),
        chars.mean().alias("mean_chars"),
        chars.median().alias("median_chars"),
        (text.str.contains(_refusal_regex()).fill_null(False).sum() / has_text.sum()).alias("refusal_rate"),
    ]
    for flag in FLAGS:
        if flag in answers.columns:
            aggs.append(pl.col(flag).cast(pl.Float64).mean().alias(f"{flag}_rate"))
    if "generation_error" in answers.columns:
        aggs.append(pl.col("generation_error").is_not_null().sum().alias("failures"))
    if "score" in answers.columns:
        score = pl.col("score").cast(pl.Float64)
        aggs += [score.mean().alias("mean_score"), score.is_not_null().sum().alias("scored")]
    return answers.group_by("model", maintain_order=True).agg(aggs).sort("model")


STAT_LABELS = {
    "model": "model",
    "answers": "answers",
    "mean_chars": "mean chars",
    "median_chars": "median chars",
    "refusal_rate": "refusals",
    "ran_past_answer_rate": "ran past answer",
    "echoed_format_rate": "echoed format",
    "failures": "failed (flagged)",
    "mean_score": "judge score (mean)",
    "scored": "scored",
}


def _cell(name: str, value) -> str:
    if value is None:
        return MISSING
    if name.endswith("_rate"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}" if name == "mean_score" else f"{value:.1f}"
    return str(value)


# --------------------------------------------------------------------------- rendering
@dataclass
class Report:
    stats: pl.DataFrame
    prompts: list[tuple[str, dict[str, list[str]]]]
    total_prompts: int
    models: list[str]

    def _clip(self, text: str | None, limit: int) -> str:
        if text is None:
            return ""
        return text if len(text) <= limit else f"{text[:limit]} … [+{len(text) - limit} chars]"


def build_report(answers: pl.DataFrame, max_prompts: int = 50) -> Report:
    stats = model_stats(answers)
    models = stats.get_column("model").to_list()
    grouped = answers.group_by("prompt", maintain_order=True).agg(pl.col("model"), pl.col("answer"))
    shown = []
    for prompt, names, texts in grouped.head(max_prompts).iter_rows():
        cells: dict[str, list[str]] = {m: [] for m in models}
        for name, text in zip(names, texts, strict=True):
            cells[name].append(text)
        shown.append((prompt or "", cells))
    return Report(stats, shown, grouped.height, models)


def _md_escape(text: str) -> str:
    escaped = html.escape(text, quote=False).replace("|", "\\|")
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def to_markdown(report: Report, title: str, max_chars: int = 1500) -> str:
    columns = list(report.stats.columns)
    lines = [f"# {_md_escape(title)}", ""]
    lines += [f"{len(report.models)} models, {report.total_prompts} prompts.", "", "## Per model", ""]
    lines.append("| " + " | ".join(STAT_LABELS.get(c, c) for c in columns) + " |")
    lines.append("|" + "|".join("---" if c == "model" else "---:" for c in columns) + "|")
    for row in report.stats.iter_rows(named=True):
        lines.append("| " + " | ".join(_md_escape(_cell(c, row[c])) for c in columns) + " |")
    shown = len(report.prompts)
    lines += ["", f"## Answers side by side ({shown} of {report.total_prompts} prompts)", ""]
    for number, (prompt, cells) in enumerate(report.prompts, 1):
        lines += [f"### {number}.", "", "> " + _md_escape(report._clip(prompt, max_chars)), ""]
        lines.append("| " + " | ".join(_md_escape(m) for m in report.models) + " |")
        lines.append("|" + "|".join("---" for _ in report.models) + "|")
        row = []
        for model in report.models:
            texts = [_md_escape(report._clip(t, max_chars)) if t else "*(no answer)*" for t in cells[model]]
            row.append("<hr>".join(texts) if texts else MISSING)
        lines += ["| " + " | ".join(row) + " |", ""]
    return "\n".join(lines) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.answer { white-space: pre-wrap; width: 1%; }
blockquote { white-space: pre-wrap; background: #f5f5f5; margin: 0; padding: 0.6em; }
hr { border: 0; border-top: 1px dashed #aaa; }
"""


def to_html(report: Report, title: str, max_chars: int = 1500) -> str:
    esc = html.escape
    columns = list(report.stats.columns)
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{len(report.models)} models, {report.total_prompts} prompts.</p>",
        "<h2>Per model</h2><table><tr>",
        "".join(f"<th>{esc(STAT_LABELS.get(c, c))}</th>" for c in columns) + "</tr>",
    ]
    for row in report.stats.iter_rows(named=True):
        cells = "".join(
            f"<td{'' if c == 'model' else ' class=num'}>{esc(_cell(c, row[c]))}</td>" for c in columns
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</table>")
    parts.append(f"<h2>Answers side by side ({len(report.prompts)} of {report.total_prompts} prompts)</h2>")
    for number, (prompt, cells) in enumerate(report.prompts, 1):
        parts.append(f"<h3>{number}.</h3><blockquote>{esc(report._clip(prompt, max_chars))}</blockquote>")
        parts.append("<table><tr>" + "".join(f"<th>{esc(m)}</th>" for m in report.models) + "</tr><tr>")
        for model in report.models:
            texts = [esc(report._clip(t, max_chars)) if t else "<em>(no answer)</em>" for t in cells[model]]
            parts.append(f'<td class="answer">{"<hr>".join(texts) if texts else MISSING}</td>')
        parts.append("</tr></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    answers: pl.DataFrame, out_dir: str | Path, title: str, max_prompts: int = 50, max_chars: int = 1500
) -> tuple[Path, Path, Report]:
    """Write compare.md and compare.html into ``out_dir``; returns their paths and the report."""
    from dsforge.io.atomic import write_text_atomic

    report = build_report(answers, max_prompts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "compare.md", out / "compare.html"
    write_text_atomic(md, to_markdown(report, title, max_chars))
    write_text_atomic(page, to_html(report, title, max_chars))
    return md, page, report


def compare(
    source: str | Path,
    out_dir: str | Path | None = None,
    *,
    answer_column: str | None = None,
    prompt_column: str | None = None,
    model_column: str = "model",
    max_prompts: int = 50,
    max_chars: int = 1500,
) -> tuple[Path, Path, Report]:
    """What ``dsforge compare`` does: read a built folder or file, write the report beside it."""
    source = Path(source)
    answers = answers_table(
        read_rows(source), answer_column=answer_column, prompt_column=prompt_column, model_column=model_column
    )
    target = Path(out_dir) if out_dir else source.parent / f"{source.name.split('.')[0]}-compare"
    return write_report(answers, target, f"Model comparison: {source.name}", max_prompts, max_chars)


# --------------------------------------------------------------------------- as a recipe step
@register_step("compare_report")
class CompareReport(GlobalStep):
    """Write compare.md / compare.html from the rows at this point of the build; rows pass unchanged."""

    example = {"step": "compare_report", "path": "../out/base-vs-instruct-compare"}

    path: OutputPath
    answer_column: str | None = None
    prompt_column: str | None = None
    model_column: str = "model"
    max_prompts: int = 50
    max_chars: int = 1500
    title: str = "Model comparison"

    def run(self, store: PartStore) -> Iterator[pl.DataFrame]:
        tables = []
        for batch in store.iter_batches():
            if batch.height:
                tables.append(
                    answers_table(
                        batch,
                        answer_column=self.answer_column,
                        prompt_column=self.prompt_column,
                        model_column=self.model_column,
                    )
                )
        if tables:
            answers = pl.concat(tables, how="diagonal_relaxed")
            write_report(answers, self.path, self.title, self.max_prompts, self.max_chars)
        yield from (batch for batch in store.iter_batches() if batch.height)
