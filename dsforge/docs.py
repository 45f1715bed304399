"""Text for `dsforge steps`: one line per step, or one step's parameters with an example."""

from __future__ import annotations

import inspect
import re

import yaml
from pydantic_core import PydanticUndefined

from dsforge.registry import get_step, step_names


def summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_steps() -> str:
    names = step_names()
    width = max(len(n) for n in names)
    lines = []
    for name in names:
        cls = get_step(name)
        kind = "global" if getattr(cls, "run", None) and "run" in vars(cls) else "row"
        lines.append(f"{name:<{width}}  {kind:<6}  {summary(cls)}")
    return "\n".join(lines)


def _type_name(annotation) -> str:
    """`int`, `list[str] | None`, `Literal['a', 'b']`: the annotation as a user reads it."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    text = re.sub(r"\b(?:[a-z_]+\.)+([A-Z]\w*)", r"\1", str(annotation)).replace("NoneType", "None")
    text = re.sub(r"Annotated\[str, AfterValidator\(func=<function _resolve_existing[^)]*\)\]", "path", text)
    text = re.sub(
        r"Annotated\[str, AfterValidator\(func=<function _resolve_if_local[^)]*\)\]", "path-or-hub-id", text
    )
    if text.startswith("Optional[") and text.endswith("]"):
        text = f"{text[len('Optional[') : -1]} | None"
    return text


def describe_step(name: str) -> str:
    cls = get_step(name)
    lines = [f"{name}: {inspect.getdoc(cls) or ''}".rstrip(), "", "parameters:"]
    common = ["apply_to"]  # every step takes these; listed after the step's own parameters
    fields = [n for n in cls.model_fields if n not in common] + common
    for field_name in fields:
        info = cls.model_fields[field_name]
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = f"default {info.default_factory()!r}"
        elif info.default is PydanticUndefined:
            default = "required"
        else:
            default = f"default {info.default!r}"
        note = f"  {info.description}" if info.description else ""
        lines.append(f"  {field_name}: {_type_name(info.annotation)} ({default}){note}")

    example = {"step": name, **getattr(cls, "example", {})}
    lines += ["", "example:", yaml.safe_dump([example], sort_keys=False).rstrip()]
    return "\n".join(lines)
