"""User-facing errors: one clear line each, never a traceback (unless --debug)."""

from __future__ import annotations


class DsforgeError(Exception):
    """A mistake the user can fix: bad recipe field, malformed input, missing file.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class RecipeError(DsforgeError):
    """The recipe is invalid; carries every problem found, each with its field path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems) if len(problems) == 1 else f"{len(problems)} problems in recipe")

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems in recipe:\n" + "\n".join(f"  {p}" for p in self.problems)


class InputError(DsforgeError):
    """An input file is missing, empty, unreadable or has a malformed record (names file:line)."""


class VerifyError(DsforgeError):
    """An output artefact failed verification."""

    exit_code = 1
