"""Parameter types shared by steps: paths in a recipe are relative to the recipe file.

The recipe loader validates step parameters with ``context={"base_dir": <recipe folder>}``;
these annotated types use it to resolve relative paths, so a step receives absolute paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir") or ".")


def _resolve_existing(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(info) / path
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return str(path.resolve())


def _resolve_if_local(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(info) / path
    return str(path.resolve()) if path.exists() else value


def _resolve_output(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(info) / path
    return str(path.resolve())


#: A file or folder that must exist; relative paths are taken from the recipe's folder.
InputPath = Annotated[str, AfterValidator(_resolve_existing)]
#: A local path if one exists there (relative to the recipe), else a Hugging Face Hub id.
PathOrHubId = Annotated[str, AfterValidator(_resolve_if_local)]
#: A path to write; relative paths are taken from the recipe's folder.
OutputPath = Annotated[str, AfterValidator(_resolve_output)]
