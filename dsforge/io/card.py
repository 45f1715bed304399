"""The dataset card (README.md): Hub YAML front matter, the funnel, and the recipe itself.

Nothing time- or machine-dependent goes in, so the same build writes the same card.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dsforge import __version__
from dsforge.io.atomic import write_text_atomic
from dsforge.stats import funnel_markdown

if TYPE_CHECKING:
    from dsforge.recipe import LoadedRecipe

_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


def size_category(rows: int) -> str:
    for limit, label in _SIZE_CATEGORIES:
        if rows < limit:
            return label
    return "n>1B"


def front_matter(loaded: LoadedRecipe, output_info: dict[str, Any]) -> dict[str, Any]:
    card = loaded.recipe.output.card
    meta: dict[str, Any] = {}
    if card.pretty_name or loaded.recipe.name:
        meta["pretty_name"] = card.pretty_name or loaded.recipe.name
    if card.license:
        meta["license"] = card.license
    if card.language:
        meta["language"] = list(card.language)
    if card.task_categories:
        meta["task_categories"] = list(card.task_categories)
    meta["tags"] = sorted({"dsforge", *card.tags})
    rows = sum(output_info.get("splits", {}).values())
    meta["size_categories"] = [size_category(rows)]
    data_files = output_info.get("data_files")
    if data_files:
        meta["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": pattern} for split, pattern in data_files.items()],
            }
        ]
    return meta


def render_card(loaded: LoadedRecipe, stats: dict[str, Any], output_info: dict[str, Any]) -> str:
    recipe = loaded.recipe
    meta = yaml.safe_dump(front_matter(loaded, output_info), sort_keys=False, allow_unicode=True)
    splits = output_info.get("splits", {})
    split_lines = "\n".join(f"| {name} | {rows:,} |" for name, rows in splits.items())
    columns = output_info.get("columns", {})
    column_lines = "\n".join(f"| `{name}` | {dtype} |" for name, dtype in columns.items())
    recipe_yaml = yaml.safe_dump(loaded.raw, sort_keys=False, allow_unicode=True).rstrip()
    parts = [
        f"---\n{meta}---",
        f"# {recipe.output.card.pretty_name or recipe.name}",
        recipe.description.strip() or "Built with dsforge.",
        "## Splits\n\n| split | rows |\n|---|---:|\n" + split_lines,
    ]
    if columns:
        parts.append("## Columns\n\n| column | type |\n|---|---|\n" + column_lines)
    parts += [
        "## How it was built\n\nEvery record passed through the steps below in order; each row removed is "
        "counted under the reason its step gave.\n\n" + funnel_markdown(stats),
        *metrics_section(stats),
        f"## Recipe\n\nBuilt with dsforge {__version__} from this recipe (seed {recipe.seed}):\n\n"
        f"```yaml\n{recipe_yaml}\n```",
    ]
    if output_info.get("format") == "parquet" or output_info.get("format") == "jsonl":
        parts.append(
            "## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
            'dataset = load_dataset("path/or/repo-id")\n```'
        )
    return "\n\n".join(parts) + "\n"


def metrics_section(stats: dict[str, Any]) -> list[str]:
    """What steps measured beyond drops (PII found, tokens, distributions), step by step."""
    lines = []
    for step in stats["steps"]:
        for name, value in step.get("metrics", {}).items():
            shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
            lines.append(f"| {step['index']} | {step['step']} | `{name}` | {shown} |")
    if not lines:
        return []
    header = "## Measurements\n\n| # | step | metric | value |\n|---:|---|---|---:|\n"
    return [header + "\n".join(lines)]


def write_card(
    folder: Path, loaded: LoadedRecipe, stats: dict[str, Any], output_info: dict[str, Any]
) -> None:
    write_text_atomic(folder / "README.md", render_card(loaded, stats, output_info))
