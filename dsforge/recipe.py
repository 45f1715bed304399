"""Recipe models and loading: YAML → ${VAR} interpolation → --set overrides → typed, validated.

Every problem is collected and reported at once, each naming its field path, the bad value
and what is allowed, so ``dsforge validate`` can list them all.
"""

from __future__ import annotations

import copy
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsforge.errors import DsforgeError, RecipeError
from dsforge.registry import get_sink, get_step
from dsforge.steps.base import Step


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Model):
    """One input: local files (path or glob) or a Hugging Face dataset (``hf``)."""

    name: str | None = None
    path: str | None = None
    hf: str | None = Field(None, description="Hub dataset id, read with datasets.load_dataset")
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    format: str = "auto"
    text_mode: Literal["line", "paragraph", "file"] = "line"
    text_field: str = "text"
    fields: dict[str, str] = Field(default_factory=dict, description="new column name → input field")
    columns: list[str] | None = None
    weight: float = Field(1.0, ge=0)
    max_rows: int | None = Field(None, ge=1)
    on_error: Literal["skip", "fail"] = "skip"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from dsforge.io.readers import reader_names

        if value not in reader_names():
            raise ValueError(f"unknown format (allowed: {', '.join(reader_names())})")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> SourceSpec:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' (local files) or 'hf' (a Hub dataset id)")
        return self


class CardSpec(_Model):
    """Dataset-card metadata (the Hub's YAML front matter)."""

    pretty_name: str | None = None
    license: str | None = None
    language: list[str] = Field(default_factory=list)
    task_categories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class OutputSpec(BaseModel):
    """Where and how to write; keys beyond these are the chosen sink's own parameters."""

    model_config = ConfigDict(extra="allow")

    path: str
    format: str = "parquet"
    card: CardSpec = Field(default_factory=CardSpec)
    keep_dropped: bool = False
    dropped_path: str | None = None

    def sink_params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RuntimeSpec(_Model):
    batch_size: int = Field(2000, ge=1)
    workers: int | None = Field(None, ge=1, description="processes for row steps; default: all cores")
    keep_cache: bool = False
    scratch_compression: Literal["none", "lz4", "zstd"] = Field(
        "none",
        description="compression of the work folder's parts: none is fastest; lz4/zstd use 2-4x less "
        "scratch disk (the work folder is removed once a build succeeds)",
    )


class Recipe(_Model):
    name: str
    description: str = ""
    seed: int = 0
    sources: list[SourceSpec] = Field(min_length=1)
    steps: list[Any] = Field(default_factory=list)
    output: OutputSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_are_mappings(cls, value: Any) -> Any:
        if value is None:
            return []
        return value


@dataclass
class LoadedRecipe:
    """A validated recipe with its steps and sink built and paths resolved."""

    recipe: Recipe
    steps: list[Step]
    sink: Any
    base_dir: Path
    raw: dict[str, Any]
    source_files: list[list[Path]] = field(default_factory=list)
    output_path: Path = Path()

    @property
    def source_names(self) -> list[str]:
        return [source_name(s, i) for i, s in enumerate(self.recipe.sources)]


def source_name(spec: SourceSpec, index: int) -> str:
    if spec.name:
        return spec.name
    origin = spec.hf or Path(spec.path or f"source{index}").name
    stem = re.split(r"[.*?\[]", origin.split("/")[-1], maxsplit=1)[0]
    return stem or f"source{index}"


# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(node: Any, env: dict[str, str], where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, naming the field if unset."""
    if isinstance(node, dict):
        return {
            k: interpolate(v, env, f"{where}.{k}" if where else str(k), problems) for k, v in node.items()
        }
    if isinstance(node, list):
        return [interpolate(v, env, f"{where}.{i}", problems) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(match: re.Match) -> str:
            var, default = match.group(1), match.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {var} is not set (use ${{{var}:-default}})")
            return match.group(0)

        return _VAR.sub(sub, node)
    return node


# --------------------------------------------------------------------------- overrides


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set a.b.2.c=value`` (value parsed as YAML) to the raw recipe."""
    if "=" not in assignment:
        raise DsforgeError(f"--set {assignment}: expected KEY=VALUE, e.g. output.path=out/x")
    key, _, text = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise DsforgeError(f"--set {assignment}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise DsforgeError(f"--set {key}: {here} is not an index of a list of {len(node)}")
            index = int(part)
            if last:
                if index == len(node):
                    node.append(value)
                else:
                    node[index] = value
            else:
                if index == len(node):
                    node.append({})
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise DsforgeError(f"--set {key}: {'.'.join(parts[:depth])} is a value, not a mapping or list")


# --------------------------------------------------------------------------- validation


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(error: ValidationError, prefix: str, model: type[BaseModel] | None) -> list[str]:
    problems = []
    for item in error.errors():
        loc = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = sorted(model.model_fields) if model else []
            problems.append(f"{loc}: unknown field (allowed: {', '.join(allowed)})")
        elif kind == "missing":
            problems.append(f"{loc}: required field is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {message} (got {_show(item.get('input'))})")
    return problems


def _expand_source(spec: SourceSpec, base_dir: Path, where: str, problems: list[str]) -> list[Path]:
    if spec.path is None:
        return []
    pattern = os.path.expanduser(spec.path)
    if not os.path.isabs(pattern):
        pattern = str(base_dir / pattern)
    if any(ch in pattern for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not files:
            problems.append(f"{where}.path: no file matches {spec.path!r} (looked in {base_dir})")
        return files
    path = Path(pattern)
    if not path.exists():
        problems.append(f"{where}.path: file not found: {path}")
        return []
    if path.is_dir() and spec.format != "hf_disk" and not (path / "dataset_info.json").exists():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            problems.append(f"{where}.path: folder {path} has no files")
        return files
    return [path]


def build_step(entry: Any, index: int, base_dir: Path, problems: list[str]) -> Step | None:
    where = f"steps.{index}"
    if not isinstance(entry, dict) or "step" not in entry:
        problems.append(
            f"{where}: expected a mapping with 'step: NAME' and its parameters (got {_show(entry)})"
        )
        return None
    params = dict(entry)
    name = params.pop("step")
    try:
        cls = get_step(str(name))
    except DsforgeError as exc:
        problems.append(f"{where}.step: {exc}")
        return None
    try:
        return cls.model_validate(params, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        problems.extend(format_validation_error(exc, where, cls))
        return None


def _check_parts(
    resolved: dict[str, Any], base_dir: Path, problems: list[str], recipe: Recipe | None = None
) -> tuple[list[Step | None], list[list[Path]], Any]:
    """Validate steps, source files and the sink, appending problems (also when the top level failed)."""
    steps = [build_step(entry, i, base_dir, problems) for i, entry in enumerate(resolved.get("steps") or [])]
    source_files: list[list[Path]] = []
    raw_sources = resolved.get("sources") if isinstance(resolved.get("sources"), list) else []
    for i, raw_source in enumerate(raw_sources):
        if recipe is not None:
            spec = recipe.sources[i]
        else:
            try:
                spec = SourceSpec.model_validate(raw_source)
            except ValidationError:
                continue  # already reported by the top-level validation
        source_files.append(_expand_source(spec, base_dir, f"sources.{i}", problems))
    sink = None
    output = resolved.get("output")
    if isinstance(output, dict):
        params = {k: v for k, v in output.items() if k not in OutputSpec.model_fields}
        sink_cls = None
        try:
            sink_cls = get_sink(str(output.get("format", "parquet")))
            sink = sink_cls.model_validate(params, context={"base_dir": str(base_dir)})
        except DsforgeError as exc:
            problems.append(f"output.format: {exc}")
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, "output", sink_cls))
    if recipe is not None:
        names = [source_name(s, i) for i, s in enumerate(recipe.sources)]
        for i, name in enumerate(names):
            if names.index(name) != i:
                problems.append(
                    f"sources.{i}.name: duplicate source name {name!r} (give each source a 'name')"
                )
    return steps, source_files, sink


def load_raw(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DsforgeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DsforgeError(f"{path}{line}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise DsforgeError(f"{path}: a recipe is a YAML mapping with name, sources, steps and output")
    return raw


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
    output_override: str | None = None,
) -> LoadedRecipe:
    """Load, interpolate, override and validate a recipe; raise RecipeError listing every problem."""
    path = Path(path).resolve()
    base_dir = path.parent
    raw = load_raw(path)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    card_raw = copy.deepcopy(raw)
    problems: list[str] = []
    resolved = interpolate(raw, dict(os.environ if env is None else env), "", problems)
    if output_override:
        resolved.setdefault("output", {})
        if isinstance(resolved["output"], dict):
            resolved["output"]["path"] = str(Path(output_override).resolve())
    try:
        recipe = Recipe.model_validate(resolved)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc, "", Recipe))
        _check_parts(resolved, base_dir, problems)
        raise RecipeError(problems) from None
    steps, source_files, sink = _check_parts(resolved, base_dir, problems, recipe)
    if problems:
        raise RecipeError(problems)
    output_path = Path(os.path.expanduser(recipe.output.path))
    if not output_path.is_absolute():
        output_path = base_dir / output_path
    return LoadedRecipe(
        recipe=recipe,
        steps=[s for s in steps if s is not None],
        sink=sink,
        base_dir=base_dir,
        raw=card_raw,
        source_files=source_files,
        output_path=output_path.resolve(),
    )
