"""Name → class registries for steps and sinks, with lookup that suggests near names."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TypeVar

from dsforge.errors import DsforgeError

T = TypeVar("T", bound=type)

_STEPS: dict[str, type] = {}
_SINKS: dict[str, type] = {}


def register_step(name: str):
    """Class decorator: make a :class:`~dsforge.steps.base.Step` usable in recipes as ``name``."""

    def wrap(cls: T) -> T:
        if name in _STEPS and _STEPS[name] is not cls:
            raise ValueError(f"step {name!r} registered twice")
        cls.name = name
        _STEPS[name] = cls
        return cls

    return wrap


def register_sink(name: str):
    """Class decorator: make a sink usable as ``output.format: name``."""

    def wrap(cls: T) -> T:
        cls.name = name
        _SINKS[name] = cls
        return cls

    return wrap


#: Packages whose modules define steps, sinks and readers. A new step only needs its own file:
#: the registry finds ``@register_step("name")`` (and sink/reader) declarations by reading the
#: modules' source, and imports a module only when one of its names is looked up, so a build
#: pays for the steps it uses, not for every step dsforge ships.
STEP_PACKAGES = (
    "dsforge.steps",
    "dsforge.io",
    "dsforge.text",
    "dsforge.dedup",
    "dsforge.tokens",
    "dsforge.decontam",
    "dsforge.chat",
    "dsforge.prefs",
    "dsforge.generate",
)
_DECLARATION = re.compile(r"@register_(step|sink|reader)\(\s*[\"']([^\"']+)[\"']")
_index_cache: dict[tuple[str, str], str] | None = None


def _index() -> dict[tuple[str, str], str]:
    """(kind, name) → module, read from the source of every module in the step packages."""
    global _index_cache
    if _index_cache is None:
        import importlib.util

        found: dict[tuple[str, str], str] = {}
        for package_name in STEP_PACKAGES:
            spec = importlib.util.find_spec(package_name)
            if spec is None or not spec.submodule_search_locations:
                continue
            for root in spec.submodule_search_locations:
                for path in sorted(Path(root).rglob("*.py")):
                    relative = path.relative_to(root).with_suffix("")
                    module = ".".join((package_name, *relative.parts)).removesuffix(".__init__")
                    for kind, name in _DECLARATION.findall(path.read_text(encoding="utf-8")):
                        found.setdefault((kind, name), module)
        _index_cache = found
    return _index_cache


def _import_for(kind: str, name: str) -> None:
    module = _index().get((kind, name))
    if module is not None:
        import importlib

        importlib.import_module(module)


def import_all(kind: str) -> None:
    """Import every module declaring a ``kind`` (step, sink or reader)."""
    for declared_kind, name in list(_index()):
        if declared_kind == kind:
            _import_for(kind, name)


def nearest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(choices))}"


def step_names() -> list[str]:
    return sorted({n for k, n in _index() if k == "step"} | set(_STEPS))


def get_step(name: str) -> type:
    if name not in _STEPS:
        _import_for("step", name)
    try:
        return _STEPS[name]
    except KeyError:
        raise DsforgeError(f"unknown step {name!r} ({nearest(name, step_names())})") from None


def sink_names() -> list[str]:
    return sorted({n for k, n in _index() if k == "sink"} | set(_SINKS))


def get_sink(name: str) -> type:
    if name not in _SINKS:
        _import_for("sink", name)
    try:
        return _SINKS[name]
    except KeyError:
        raise DsforgeError(f"unknown output format {name!r} ({nearest(name, sink_names())})") from None
