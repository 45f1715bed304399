"""Execute a recipe: sources → row steps → (global step → row steps)* → sink → dataset folder.

The pipeline is cut into *stages* at each global step. Every stage writes its batches as
numbered parts into a work folder beside the output, keyed by a fingerprint of everything
the stage depends on. A rerun skips parts (and whole stages) that already exist, so an
interrupted build resumes, and the output folder appears only by a final rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from dsforge import __version__
from dsforge.errors import DsforgeError
from dsforge.execute import LocalExecutor, Task, measure, split_drops, step_stats
from dsforge.io.atomic import replace_dir, write_text_atomic
from dsforge.io.card import write_card
from dsforge.io.parts import PartStore
from dsforge.io.sources import SourceStats, iter_source
from dsforge.progress import BuildProgress
from dsforge.recipe import LoadedRecipe
from dsforge.stats import Funnel
from dsforge.steps.base import GlobalStep, Step, StepContext

STATS_FILE = "stats.json"


@dataclass
class Stage:
    """A global step (or the sources, for stage 0) followed by row steps."""

    number: int
    head: tuple[int, GlobalStep] | None
    row_steps: list[tuple[int, Step]] = field(default_factory=list)
    key: str = ""


@dataclass
class BuildResult:
    output: Path
    stats: dict[str, Any]
    reused: bool = False


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_fingerprint(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _step_fingerprint(step: Step) -> list[Any]:
    return [step.name, step.model_dump(mode="json"), step.fingerprint_extra()]


def plan_stages(steps: list[Step]) -> list[Stage]:
    stages = [Stage(0, None)]
    for index, step in enumerate(steps):
        if isinstance(step, GlobalStep):
            stages.append(Stage(len(stages), (index, step)))
        else:
            stages[-1].row_steps.append((index, step))
    return stages


class Runner:
    def __init__(
        self,
        loaded: LoadedRecipe,
        *,
        limit: int | None = None,
        force: bool = False,
        workers: int | None = None,
        progress: bool = True,
    ) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.limit = limit
        self.force = force
        self.executor = LocalExecutor(workers or self.recipe.runtime.workers)
        self.output = loaded.output_path
        self.work = self.output.parent / f".{self.output.name}.dsforge-work"
        self.progress = BuildProgress([f"{i}.{s.name}" for i, s in enumerate(loaded.steps)], enabled=progress)
        for index, step in enumerate(loaded.steps):
            step.bind(StepContext(seed=self.recipe.seed, step_index=index, work_dir=str(self.work)))
        self.stages = plan_stages(loaded.steps)
        self._assign_keys()

    # ------------------------------------------------------------------ keys
    def _assign_keys(self) -> None:
        recipe = self.recipe
        inputs = [
            [spec.model_dump(mode="json"), [_file_fingerprint(f) for f in files]]
            for spec, files in zip(recipe.sources, self.loaded.source_files, strict=True)
        ]
        previous = _digest(__version__, recipe.seed, recipe.runtime.batch_size, self.limit, inputs)
        for stage in self.stages:
            head = _step_fingerprint(stage.head[1]) if stage.head else None
            stage.key = _digest(previous, head, [_step_fingerprint(s) for _, s in stage.row_steps])
            previous = stage.key
        self.build_key = _digest(
            previous,
            recipe.name,
            recipe.description,
            recipe.output.model_dump(mode="json", exclude={"path"}),
            self.loaded.sink.model_dump(mode="json"),
        )

    # ------------------------------------------------------------------ run
    def run(self) -> BuildResult:
        previous_stats = self.output / STATS_FILE
        if self.output.exists():
            if not previous_stats.exists():
                raise DsforgeError(
                    f"output.path: {self.output} exists and is not a dsforge dataset; "
                    "remove it or choose another path"
                )
            old = json.loads(previous_stats.read_text())
            if old.get("build_key") == self.build_key and not self.force:
                return BuildResult(self.output, old, reused=True)
        if self.force:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        funnel = Funnel.for_steps([s.name for s in self.loaded.steps])
        started = time.time()
        with self.progress:
            store = None
            for stage in self.stages:
                store = self._run_stage(stage, store, funnel)
            stats = self._finish(store, funnel, time.time() - started)
        return BuildResult(self.output, stats)

    @property
    def _compression(self) -> str:
        return self.recipe.runtime.scratch_compression

    def _store(self, stage: Stage) -> PartStore:
        return PartStore(self.work / f"stage{stage.number}-{stage.key[:16]}")

    def _dropped_dir(self, stage: Stage) -> str | None:
        if not self.recipe.output.keep_dropped:
            return None
        return str(self.work / f"dropped{stage.number}-{stage.key[:16]}")

    def _run_stage(self, stage: Stage, previous: PartStore | None, funnel: Funnel) -> PartStore:
        store = self._store(stage)
        if store.is_complete:
            summary = store.summary()
            if stage.number == 0:
                funnel.sources = summary["sources"]
            for index in store.indices():
                funnel.merge_batch(store.meta(index)["steps"])
            self.progress.note(f"stage {stage.number}: reused {store.root.name}")
            return store
        if stage.head is not None:
            store.reset(self._compression)  # a global step's output cannot be resumed part by part
        else:
            store.create(self._compression)
        tasks = (
            self._source_tasks(stage, store, funnel)
            if stage.head is None
            else self._global_tasks(stage, previous, store)
        )
        for index, meta in self.executor.map(stage.row_steps, tasks):
            self._account(funnel, meta)
            del index
        summary = {"sources": funnel.sources} if stage.number == 0 else {}
        store.mark_complete(summary)
        return store

    def _account(self, funnel: Funnel, meta: dict[str, Any]) -> None:
        funnel.merge_batch(meta["steps"])
        self.progress.advance(meta["steps"])

    def _source_tasks(self, stage: Stage, store: PartStore, funnel: Funnel) -> Iterator[Task]:
        """Read every source in order; batches already in the store are accounted, not reprocessed."""
        index = 0
        funnel.sources = []
        for number, (spec, files) in enumerate(
            zip(self.recipe.sources, self.loaded.source_files, strict=True)
        ):
            stats = SourceStats(self.loaded.source_names[number])
            for frame in iter_source(
                spec,
                number,
                stats.name,
                files,
                self.recipe.runtime.batch_size,
                self.recipe.seed,
                stats,
                self.limit,
            ):
                self.progress.read(frame.height)
                if store.has(index):
                    self._account(funnel, store.meta(index))
                else:
                    yield Task(index, frame, str(store.root), self._dropped_dir(stage), [])
                index += 1
            funnel.sources.append(stats.to_dict())

    def _global_tasks(self, stage: Stage, previous: PartStore, store: PartStore) -> Iterator[Task]:
        step_index, step = stage.head
        rows_in = previous.num_rows()
        produced = self._run_global(stage, step, previous)
        index = 0
        first = True
        while True:
            start = time.perf_counter()
            try:
                frame = next(produced)
            except StopIteration:
                break
            seconds = time.perf_counter() - start
            before = measure(frame)
            kept, dropped, counts, metrics = split_drops(frame, step_index, step.name)
            head = step_stats(step_index, step.name, before, kept, seconds, counts, metrics)
            # the global step reads every stored row, whatever it yields: count them once
            head["rows_in"] = rows_in if first else 0
            first = False
            dropped_dir = self._dropped_dir(stage)
            if dropped_dir is not None and dropped is not None and dropped.height:
                PartStore(Path(dropped_dir)).create(self._compression).write(10**7 + index, dropped)
            yield Task(index, kept, str(store.root), dropped_dir, [head])
            index += 1

    def _run_global(self, stage: Stage, step: GlobalStep, previous: PartStore) -> Iterator[pl.DataFrame]:
        """The global step over the stored rows, or, with ``apply_to``, over its sources' rows only
        (the other rows follow unchanged)."""
        if step.apply_to is None:
            yield from step.run(previous)
            return
        matching = PartStore(self.work / f"apply{stage.number}-match").reset(self._compression)
        others = PartStore(self.work / f"apply{stage.number}-other").reset(self._compression)
        for index, batch in enumerate(previous.iter_batches()):
            if batch.height and "source" not in batch.columns:
                raise DsforgeError(
                    f"steps.{step.context.step_index} ({step.name}): apply_to needs the 'source' column"
                )
            mask = (
                batch.get_column("source").is_in(step.apply_to)
                if batch.height
                else pl.Series([], dtype=pl.Boolean)
            )
            matching.write(index, batch.filter(mask))
            others.write(index, batch.filter(~mask))
        yield from step.run(matching)
        yield from (batch for batch in others.iter_batches() if batch.height)

    # ------------------------------------------------------------------ finish
    def _finish(self, store: PartStore, funnel: Funnel, seconds: float) -> dict[str, Any]:
        staging = self.work / "output"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.progress.note("writing output")
        output_info = self.loaded.sink.write(store, staging)
        stats = {
            "dsforge_version": __version__,
            "recipe": self.recipe.name,
            "build_key": self.build_key,
            "seed": self.recipe.seed,
            "seconds": round(seconds, 3),
            **funnel.to_dict(),
            "output": output_info,
        }
        write_card(staging, self.loaded, stats, output_info)
        write_text_atomic(staging / STATS_FILE, json.dumps(stats, indent=2, sort_keys=False) + "\n")
        if self.recipe.output.keep_dropped:
            self._publish_dropped()
        replace_dir(staging, self.output)
        if not self.recipe.runtime.keep_cache:
            shutil.rmtree(self.work, ignore_errors=True)
        return stats

    def _publish_dropped(self) -> None:
        target = Path(self.recipe.output.dropped_path or f"{self.output}.dropped")
        staging = self.work / "dropped-output"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for stage in self.stages:
            folder = Path(self.work / f"dropped{stage.number}-{stage.key[:16]}")
            for number, part in enumerate(PartStore(folder).files()):
                frame = pl.read_parquet(part)
                frame.write_parquet(staging / f"stage{stage.number}-{number:06d}.parquet", compression="zstd")
        replace_dir(staging, target)


def build(
    recipe: str | Path | LoadedRecipe,
    *,
    overrides: list[str] | None = None,
    output: str | None = None,
    limit: int | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> BuildResult:
    """Build a dataset from a recipe (what ``dsforge build`` does)."""
    from dsforge.recipe import load_recipe

    loaded = (
        recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe, overrides, output_override=output)
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' per-sequence warnings ("longer than the maximum length") would flood the log
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return Runner(loaded, limit=limit, force=force, workers=workers, progress=progress).run()
