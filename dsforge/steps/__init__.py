"""Built-in generic steps (every module here is imported by the registry on first lookup)."""
