"""``base_as_instruct``: answers from a *base* model, prompted URIAL-style (Lin et al. 2023).

A base model has no chat template; it continues text. URIAL (arXiv:2312.01552) makes it answer
like an assistant with a system preamble and a few restyled examples::

    <preamble>

    # Query:
    ```
    <example query>
    ```

    # Answer:
    ```
    <example answer>
    ```

    # Query:
    ```
    <the prompt>
    ```

    # Answer:
    ```

The raw completion stops at the next ``# Query``. Clean-up takes the text up to the closing
fence; a continuation after it (the model writing on past its answer) or a new ``# Query:`` /
``# Answer:`` / ``# Instruction`` header is cut and flags ``ran_past_answer``; format markers
echoed at the start (``# Answer:``, an extra opening fence) are removed and flag
``echoed_format``. Defaults ship in ``dsforge/resources/urial/``; both are editable in a recipe.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field

from dsforge.chat.schema import MESSAGES
from dsforge.generate.backends import LLMConfig
from dsforge.generate.base import CACHED, CALLED, REASON, Call, LLMStep, was_called
from dsforge.generate.prompts import NOT_ENDING_ON_USER, original_turns, read_prompts, turns_series
from dsforge.registry import register_step
from dsforge.types import InputPath

STOP = ["# Query"]
FENCE = "```"
LEADING_ECHO = re.compile(r"\A\s*(?:#+\s*Answer\s*:?[ \t]*\n?)?\s*(?:```[A-Za-z]*[ \t]*\n)?")
RESTART = re.compile(r"^[ \t]*#+[ \t]*(?:Query|Answer|Instruction)\b", re.MULTILINE)
CLOSING_FENCE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str
    answer: str


def resource(name: str) -> Path:
    return Path(str(files("dsforge").joinpath("resources", "urial", name)))


def load_examples(path: str | Path) -> list[Example]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    return [Example.model_validate(item) for item in data]


def block(header: str, text: str) -> str:
    return f"# {header}:\n{FENCE}\n{text.strip()}\n{FENCE}\n\n"


def urial_prompt(preamble: str, examples: list[Example], turns: list[dict[str, str]]) -> str:
    """The whole raw prompt; earlier turns of a conversation become Query/Answer pairs too."""
    parts = [preamble.strip() + "\n\n"]
    system = [t["content"] for t in turns if t["role"] == "system"]
    if system:
        parts[0] = preamble.strip() + "\n" + "\n".join(system) + "\n\n"
    for example in examples:
        parts += [block("Query", example.query), block("Answer", example.answer)]
    for turn in turns:
        if turn["role"] in ("user", "assistant"):
            parts.append(block("Query" if turn["role"] == "user" else "Answer", turn["content"]))
    parts.append(f"# Answer:\n{FENCE}\n")
    return "".join(parts)


def clean_answer(text: str) -> tuple[str, bool, bool]:
    """(answer, ran_past_answer, echoed_format) from a raw completion after the open fence."""
    echo = LEADING_ECHO.match(text)
    echoed = bool(echo and echo.group(0).strip())
    body = text[echo.end() :] if echo else text
    ran_past = False
    restart = RESTART.search(body)
    if restart:
        body, ran_past = body[: restart.start()], True
    fence = CLOSING_FENCE.search(body)
    if fence is None and body.rstrip().endswith(FENCE):  # closing fence on the answer's last line
        body = body.rstrip()[: -len(FENCE)]
    elif fence is not None:
        ran_past = ran_past or bool(body[fence.end() :].strip())
        body = body[: fence.start()]
    return body.strip(), ran_past, echoed


@register_step("base_as_instruct")
class BaseAsInstruct(LLMStep):
    """Instruction-style answers from a base model via a URIAL prompt and raw completion."""

    example: ClassVar[dict] = {
        "step": "base_as_instruct",
        "llm": {"model": "./models/my-base-model", "max_new_tokens": 512, "temperature": 0},
    }

    #: its ``chat`` is ignored (raw prompts always); "# Query" is added to its stop strings
    llm: LLMConfig
    n: int = Field(1, ge=1)
    preamble: str | None = None
    preamble_file: InputPath | None = None
    examples: list[Example] | None = None
    examples_file: InputPath | None = None
    column: str = MESSAGES
    prompt_column: str | None = None
    completion_column: str | None = None
    model_column: str = "model"

    NOT_IN_CALL_KEY: ClassVar[frozenset[str]] = LLMStep.NOT_IN_CALL_KEY | {
        "n",
        "preamble",
        "preamble_file",
        "examples",
        "examples_file",
        "column",
        "prompt_column",
        "completion_column",
        "model_column",
    }  # the preamble and examples reach the key through the exact prompt text

    def llm_configs(self) -> list[LLMConfig]:
        return [self.llm]

    def effective(self, config: LLMConfig) -> LLMConfig:
        stop = [*config.stop, *(s for s in STOP if s not in config.stop)]
        return config.model_copy(update={"chat": False, "stop": stop})

    def _preamble(self) -> str:
        if self.preamble is not None:
            return self.preamble
        return Path(self.preamble_file or resource("preamble.txt")).read_text(encoding="utf-8")

    def _examples(self) -> list[Example]:
        if self.examples is not None:
            return list(self.examples)
        return load_examples(self.examples_file or resource("examples.yaml"))

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        prompts = read_prompts(self, batch, self.column, self.prompt_column, None)
        preamble, examples = self._preamble(), self._examples()
        rows, slots, calls = [], [], []
        for r, turns in enumerate(prompts):
            for k in range(self.n if turns is not None else 1):
                rows.append(r)
                slots.append(len(calls) if turns is not None else None)
                if turns is not None:
                    calls.append(Call(0, urial_prompt(preamble, examples, turns), k))
        outcomes = self.call(calls)
        columns: dict[str, list] = {
            k: [] for k in ("turns", "answer", "past", "echo", REASON, CALLED, CACHED)
        }
        for r, slot in zip(rows, slots, strict=True):
            turns = prompts[r]
            if slot is None:
                columns["turns"].append(original_turns(batch, self.column, self.prompt_column, r))
                for name in ("answer", "past", "echo"):
                    columns[name].append(None)
                columns[REASON].append(NOT_ENDING_ON_USER)
                columns[CALLED].append(0)
                columns[CACHED].append(0)
                continue
            outcome = outcomes[slot]
            answer, past, echo = (
                clean_answer(outcome.text) if outcome.text is not None else (None, None, None)
            )
            columns[REASON].append(self.outcome_reason(outcome, answer))
            columns[CALLED].append(int(was_called(outcome)))
            columns[CACHED].append(int(outcome.cached))
            columns["answer"].append(answer)
            columns["past"].append(past)
            columns["echo"].append(echo)
            keep_prompt = self.completion_column is not None or answer is None
            columns["turns"].append(
                turns if keep_prompt else [*turns, {"role": "assistant", "content": answer}]
            )
        out = batch.select(pl.all().gather(rows)) if rows else batch.clear()
        new = [
            turns_series(self.column, columns["turns"]),
            pl.Series(self.model_column, [self.llm.display_name] * len(rows), dtype=pl.String),
            pl.Series("ran_past_answer", columns["past"], dtype=pl.Boolean),
            pl.Series("echoed_format", columns["echo"], dtype=pl.Boolean),
            *(
                pl.Series(c, columns[c], dtype=pl.String if c == REASON else pl.Int64)
                for c in (REASON, CALLED, CACHED)
            ),
        ]
        if self.completion_column is not None:
            new.append(pl.Series(self.completion_column, columns["answer"], dtype=pl.String))
        return self.finish(out.with_columns(new))

    def fingerprint_extra(self) -> str:
        return super().fingerprint_extra() + self._preamble() + repr(self._examples())
