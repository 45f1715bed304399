"""The funnel: rows and bytes in/out per step, drops per reason, summed metrics, time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepStats:
    index: int
    name: str
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)
    metrics: Counter = field(default_factory=Counter)
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_by_source: Counter = field(default_factory=Counter)

    def merge(self, other: dict[str, Any]) -> None:
        self.rows_in += other["rows_in"]
        self.rows_out += other["rows_out"]
        self.bytes_in += other["bytes_in"]
        self.bytes_out += other["bytes_out"]
        self.seconds += other["seconds"]
        self.dropped.update(other.get("dropped", {}))
        self.metrics.update(other.get("metrics", {}))
        if "tokens_out" in other:
            self.tokens_in = (self.tokens_in or 0) + other["tokens_in"]
            self.tokens_out = (self.tokens_out or 0) + other["tokens_out"]
            self.tokens_by_source.update(other.get("tokens_by_source", {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step": self.name,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
            "metrics": {k: _number(v) for k, v in sorted(self.metrics.items())},
            "seconds": round(self.seconds, 3),
            **(
                {
                    "tokens_in": self.tokens_in,
                    "tokens_out": self.tokens_out,
                    "tokens_by_source": dict(sorted(self.tokens_by_source.items())),
                }
                if self.tokens_out is not None
                else {}
            ),
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


@dataclass
class Funnel:
    steps: list[StepStats]
    sources: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_steps(cls, names: list[str]) -> Funnel:
        return cls([StepStats(i, n) for i, n in enumerate(names)])

    def merge_batch(self, batch_steps: list[dict[str, Any]]) -> None:
        for stat in batch_steps:
            self.steps[stat["index"]].merge(stat)

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "steps": [s.to_dict() for s in self.steps]}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in dropped.items())


def funnel_markdown(stats: dict[str, Any]) -> str:
    """The funnel as a Markdown table (used in the dataset card; no timings, so it is reproducible)."""
    lines = ["| source | rows read | malformed | rows emitted |", "|---|---:|---:|---:|"]
    for source in stats["sources"]:
        counts = (source["rows_read"], source["malformed"], source["rows_emitted"])
        lines.append(f"| {source['name']} | " + " | ".join(f"{n:,}" for n in counts) + " |")
    lines += [
        "",
        "| # | step | rows in | rows out | kept | tokens out | dropped (reason count) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for step in stats["steps"]:
        kept = f"{100 * step['rows_out'] / step['rows_in']:.1f}%" if step["rows_in"] else "-"
        lines.append(
            f"| {step['index']} | {step['step']} | {step['rows_in']:,} | {step['rows_out']:,} | {kept} | "
            f"{_tokens(step)} | {_reasons(step['dropped']) or '-'} |"
        )
    return "\n".join(lines)


def _tokens(step: dict[str, Any]) -> str:
    return f"{step['tokens_out']:,}" if step.get("tokens_out") is not None else "-"


def print_funnel(stats: dict[str, Any], console) -> None:
    """Print the funnel as rich tables."""
    from rich.markup import escape
    from rich.table import Table

    sources = Table(title="sources", title_justify="left")
    for column in ("source", "rows read", "malformed", "rows emitted"):
        sources.add_column(column, justify="left" if column == "source" else "right")
    for source in stats["sources"]:
        sources.add_row(
            source["name"],
            f"{source['rows_read']:,}",
            f"{source['malformed']:,}",
            f"{source['rows_emitted']:,}",
        )
    console.print(sources)
    for source in stats["sources"]:
        for reason, count in source.get("skipped", {}).items():
            console.print(f"  [dim]passed over[/dim] {source['name']}: {count:,} {reason}", highlight=False)
        for example in source["malformed_examples"][:5]:
            console.print(f"  [yellow]skipped[/yellow] {example}", highlight=False)
    table = Table(title="funnel", title_justify="left")
    for column in ("#", "step", "rows in", "rows out", "kept", "bytes out", "tokens out", "time", "dropped"):
        table.add_column(column, justify="left" if column in ("step", "dropped") else "right")
    for step in stats["steps"]:
        kept = f"{100 * step['rows_out'] / step['rows_in']:.1f}%" if step["rows_in"] else "-"
        metrics = ", ".join(f"{k}={v:,}" for k, v in step["metrics"].items())
        detail = _reasons(step["dropped"]) + (f" [{metrics}]" if metrics else "")
        table.add_row(
            str(step["index"]),
            step["step"],
            f"{step['rows_in']:,}",
            f"{step['rows_out']:,}",
            kept,
            human_bytes(step["bytes_out"]),
            _tokens(step),
            f"{step['seconds']:.2f}s",
            escape(detail) or "-",
        )
    console.print(table)
