"""The `dsforge` command: a thin typer shell over the Python API. Parse, call, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build pretraining, SFT and preference datasets from YAML recipes.",
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    # piped output (logs, CI) gets wide lines instead of tables squeezed to 80 columns
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=200)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for errors")] = False) -> None:
    _state["debug"] = debug


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: key.path=value")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="output folder (overrides output.path)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="read at most N rows from each source", min=1)] = None,
    force: Annotated[
        bool, typer.Option("--force", help="rebuild from scratch, ignoring cached work")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="worker processes for row steps", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Build the dataset a recipe describes and print its funnel."""
    from dsforge.runner import build as run_build
    from dsforge.stats import print_funnel

    result = run_build(
        recipe,
        overrides=set_ or [],
        output=output,
        limit=limit,
        force=force,
        workers=workers,
        progress=not quiet,
    )
    console = _console()
    if result.reused:
        console.print(f"up to date: {result.output} (use --force to rebuild)")
    print_funnel(result.stats, console)
    splits = ", ".join(f"{k} {v:,}" for k, v in result.stats["output"].get("splits", {}).items())
    console.print(f"wrote {result.output} ({splits})")


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
) -> None:
    """Check a recipe and report every problem at once."""
    from dsforge.recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    names = ", ".join(s.name for s in loaded.steps) or "no steps"
    _console().print(f"ok: {loaded.recipe.name}: {len(loaded.recipe.sources)} source(s), steps: {names}")


@app.command()
def steps(name: Annotated[str | None, typer.Argument(help="show one step's parameters")] = None) -> None:
    """List the registered steps, or describe one."""
    from dsforge.docs import describe_step, list_steps

    print(describe_step(name) if name else list_steps())


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="a built dataset folder or a data file")],
    rows: Annotated[int, typer.Option(help="sample rows to show", min=0)] = 3,
) -> None:
    """Show schema, row counts, build stats and a few rows of a dataset or file."""
    from dsforge.inspect import inspect_path

    inspect_path(path, rows, _console())


@app.command()
def new(
    kind: Annotated[str, typer.Argument(help="pretrain, sft or dpo")],
    path: Annotated[Path, typer.Argument(help="where to write the recipe")],
    source: Annotated[str | None, typer.Option(help="input file for the recipe's first source")] = None,
) -> None:
    """Write a commented starter recipe."""
    from dsforge.templates import write_template

    write_template(kind, path, source)
    _console().print(f"wrote {path}; edit it, then: dsforge validate {path}")


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="a built dataset folder")],
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo, e.g. user/name")],
    private: Annotated[bool, typer.Option("--private")] = False,
    revision: Annotated[str | None, typer.Option(help="branch to push to")] = None,
    message: Annotated[str | None, typer.Option(help="commit message")] = None,
) -> None:
    """Upload a built dataset folder to the Hugging Face Hub (token from env or login)."""
    from dsforge.io.hub import push_folder

    url = push_folder(folder, repo_id, private=private, revision=revision, message=message)
    _console().print(f"pushed {folder} to {url}")


@app.command()
def verify(
    shards: Annotated[Path, typer.Argument(help="Megatron prefix or folder, or packed_parquet folder")],
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer folder or Hub id")] = None,
    samples: Annotated[int, typer.Option(help="documents to decode and show (with --tokenizer)", min=0)] = 2,
    eos: Annotated[bool, typer.Option("--eos/--no-eos", help="require EOS at document boundaries")] = True,
) -> None:
    """Check token shards (dtype, counts, index pointers, EOS at boundaries); exit 1 on any inconsistency."""
    from dsforge.tokens.verify import verify_shards

    report = verify_shards(shards, tokenizer=tokenizer, samples=samples, require_eos=eos)
    console = _console()
    for line in report.lines:
        console.print(line, markup=False)
    report.raise_if_failed()


@app.command()
def compare(
    path: Annotated[
        Path, typer.Argument(help="a built dataset folder (or .parquet/.jsonl) of answers by model")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="report folder (default: <path>-compare beside it)")
    ] = None,
    answer_column: Annotated[str | None, typer.Option(help="answer text column")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="prompt text column")] = None,
    model_column: Annotated[str, typer.Option(help="column naming the model")] = "model",
    max_prompts: Annotated[int, typer.Option(help="prompts shown side by side", min=0)] = 50,
    max_chars: Annotated[int, typer.Option(help="characters shown per answer", min=1)] = 1500,
) -> None:
    """Write a side-by-side report (compare.md, compare.html) of several models' answers."""
    from dsforge.generate.compare import compare as run_compare

    md, page, report = run_compare(
        path,
        output,
        answer_column=answer_column,
        prompt_column=prompt_column,
        model_column=model_column,
        max_prompts=max_prompts,
        max_chars=max_chars,
    )
    console = _console()
    console.print(report.stats, markup=False)
    console.print(f"wrote {md} and {page} ({len(report.models)} models, {report.total_prompts} prompts)")


def main() -> None:
    """Entry point: user mistakes end in one line and exit code 2, never a traceback."""
    from dsforge.errors import DsforgeError

    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except DsforgeError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
