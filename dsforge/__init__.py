"""dsforge: build pretraining, SFT and preference datasets from one recipe format."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load_recipe"]


def __getattr__(name: str):
    # Lazy: `import dsforge` (and `dsforge --help`) must not pull polars/pyarrow/transformers.
    if name == "build":
        from dsforge.runner import build

        return build
    if name == "load_recipe":
        from dsforge.recipe import load_recipe

        return load_recipe
    raise AttributeError(name)
