"""A rich progress display: rows read and rows through each step, with rates."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class BuildProgress:
    def __init__(self, step_labels: list[str], enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        # a live display only makes sense on a terminal; logs get the funnel at the end instead
        self.enabled = enabled and self.console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            TextColumn("{task.completed:>12,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.enabled,
            transient=False,
        )
        self._read = self._progress.add_task("read", total=None, rate="")
        self._steps = [self._progress.add_task(label, total=None, rate="") for label in step_labels]

    def __enter__(self) -> BuildProgress:
        if self.enabled:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._progress.__exit__(*exc)

    def read(self, rows: int) -> None:
        self._progress.advance(self._read, rows)
        self._rate(self._read)

    def advance(self, step_stats: list[dict[str, Any]]) -> None:
        for stat in step_stats:
            task = self._steps[stat["index"]]
            self._progress.advance(task, stat["rows_out"])
            self._rate(task)

    def _rate(self, task_id: int) -> None:
        task = self._progress.tasks[task_id]
        elapsed = task.elapsed or 0
        rate = f"{task.completed / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        self._progress.update(task_id, rate=rate)

    def note(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{message}[/dim]")
