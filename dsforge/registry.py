"""Name → class registries for steps and sinks, with lookup that suggests near names."""

from __future__ import annotations

import difflib
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


#: Packages whose modules define steps, sinks and readers; every module in them is imported
#: on first lookup, so a new step only needs its own file (modules import heavy libraries lazily).
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
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    for package_name in STEP_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name == package_name:
                continue
            raise
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            importlib.import_module(info.name)


def nearest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(choices))}"


def step_names() -> list[str]:
    _load_builtins()
    return sorted(_STEPS)


def get_step(name: str) -> type:
    _load_builtins()
    try:
        return _STEPS[name]
    except KeyError:
        raise DsforgeError(f"unknown step {name!r} ({nearest(name, list(_STEPS))})") from None


def sink_names() -> list[str]:
    _load_builtins()
    return sorted(_SINKS)


def get_sink(name: str) -> type:
    _load_builtins()
    try:
        return _SINKS[name]
    except KeyError:
        raise DsforgeError(f"unknown output format {name!r} ({nearest(name, list(_SINKS))})") from None
