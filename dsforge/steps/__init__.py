"""Built-in steps. Importing this package registers them (modules import heavy libraries lazily)."""

from dsforge.steps import columns, global_ops, split  # noqa: F401
