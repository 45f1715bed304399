"""``chat_template``: render every conversation through the chat template the model will train with.

A conversation the template cannot render (roles that do not alternate, a system turn it
refuses, a null content) is dropped with the template's own message, before a trainer meets
it. Rendering is Jinja, one conversation at a time (a raise must cost one row, not the batch);
tokenizing the rendered texts is one batched call to the Rust tokenizer.

The assistant-only loss mask comes from transformers' ``{% generation %}`` markers when the
template has them (``apply_chat_template(return_assistant_tokens_mask=True)``, what TRL's
``assistant_only_loss`` uses); otherwise from prefixes: for each assistant turn *i* the
characters between ``render(messages[:i])`` and ``render(messages[:i+1])`` (from the turn's
content to its end-of-turn marker, role header excluded) are mapped to tokens by their offsets.
That needs a prefix-stable template (rendering a prefix gives a prefix of the full text); rows
where it does not hold are dropped (``template_error: not prefix-stable``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field, PrivateAttr, model_validator

from dsforge.chat.filters import check_messages, where
from dsforge.chat.schema import MESSAGES
from dsforge.errors import DsforgeError
from dsforge.registry import register_step
from dsforge.steps.base import METRIC_PREFIX, Filter
from dsforge.types import InputPath, PathOrHubId

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
REASON_COLUMN = "__template_reason"


def read_template(path: str) -> tuple[str, dict[str, Any]]:
    """The template text in a ``.jinja`` file, or in a tokenizer_config.json / chat_template.json
    (``chat_template`` as a string, or a list of {name, template} where ``default`` is taken);
    also returns that config (for bos/eos tokens)."""
    text = Path(path).read_text(encoding="utf-8")
    if not path.endswith(".json"):
        return text, {}
    config = json.loads(text)
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str):
        raise ValueError(f"{path} has no chat_template")
    return template, config


def compact(template: str) -> str:
    """Undo pretty-printing: drop 4-space indents and newlines (chujiezheng/chat_templates' usage)."""
    return template.replace("    ", "").replace("\n", "")


def short_error(exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:100]


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slice comparisons, done in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _token_value(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


@register_step("chat_template")
class ChatTemplate(Filter):
    """Render each conversation with a chat template, count its tokens, drop what cannot render.

    ``tokenizer`` (a folder or Hub id, loaded with AutoTokenizer) and/or ``template`` (a ``.jinja``
    file or a tokenizer_config.json with ``chat_template``; it replaces the tokenizer's own).
    ``compact_template`` strips 4-space indents and newlines from a pretty-printed template file.
    Reasons: ``template_error: <message>``, ``too_many_tokens`` (over ``max_tokens``). Adds the
    metric ``tokens`` (rendered tokens of kept rows); columns ``num_tokens``, ``input_ids`` and
    ``assistant_masks`` (0/1 per token) when asked. Token counts need a tokenizer.
    """

    column: str = MESSAGES
    tokenizer: PathOrHubId | None = None
    template: InputPath | None = None
    compact_template: bool = False
    max_tokens: int | None = Field(None, ge=1)
    num_tokens: bool = Field(False, description="add a num_tokens column")
    input_ids: bool = Field(False, description="add an input_ids column (the rendered text's token ids)")
    assistant_mask: bool = Field(False, description="add assistant_masks: 1 for tokens the assistant wrote")
    example = {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_tokens": 4096, "num_tokens": True}

    _tokenizer: Any = PrivateAttr(default=None)
    _template: str | None = PrivateAttr(default=None)
    _config: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ChatTemplate:
        if self.tokenizer is None and self.template is None:
            raise ValueError("give a tokenizer, a template, or both")
        needs = [n for n in ("max_tokens", "num_tokens", "input_ids", "assistant_mask") if getattr(self, n)]
        if self.tokenizer is None and needs:
            raise ValueError(f"{needs[0]} needs a tokenizer (token counts come from it)")
        if self.template is not None:
            try:
                read_template(self.template)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return self

    def fingerprint_extra(self) -> str:
        return Path(self.template).read_text(encoding="utf-8") if self.template else ""

    # ------------------------------------------------------------------ loading
    def setup(self) -> None:
        if self._template is not None:
            return
        template, config = read_template(self.template) if self.template else (None, {})
        if self.tokenizer is not None:
            try:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
            except Exception as exc:  # OSError, ValueError, JSON errors: all mean "cannot load"
                raise DsforgeError(
                    f"{where(self)}: cannot load tokenizer {self.tokenizer!r} ({short_error(exc)})"
                ) from None
            template = template or tokenizer.chat_template
            if not template:
                raise DsforgeError(
                    f"{where(self)}: tokenizer {self.tokenizer!r} has no chat template; give template:"
                )
            if self.compact_template:
                template = compact(template)
            tokenizer.chat_template = template
            if (self.assistant_mask or self.input_ids or self.max_tokens) and not tokenizer.is_fast:
                raise DsforgeError(
                    f"{where(self)}: tokenizer {self.tokenizer!r} has no fast version (needs tokenizer.json)"
                )
            self._tokenizer = tokenizer
        elif self.compact_template:
            template = compact(template)
        self._template, self._config = template, config

    @property
    def uses_generation_tags(self) -> bool:
        self.setup()
        return bool(GENERATION_TAG.search(self._template or ""))

    # ------------------------------------------------------------------ rendering
    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if self._tokenizer is not None:
            return self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        from transformers.utils.chat_template_utils import render_jinja_template

        special = {
            k: _token_value(self._config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
        }
        rendered, _ = render_jinja_template(
            [messages], chat_template=self._template, add_generation_prompt=add_generation_prompt, **special
        )
        return rendered[0]

    def _assistant_spans(self, messages: list[dict], text: str) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in ``text`` (content to end-of-turn marker).

        A turn ends where ``render(messages[:i+1])`` stops agreeing with the full text, so templates
        that close a *conversation* differently (phi-3's final eos) still give the turn's own end.
        """
        spans = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = common_prefix_len(self.render(messages[:i]), text) if i else 0
            end = common_prefix_len(self.render(messages[: i + 1]), text)
            content = (message.get("content") or "").strip()
            start = text.find(content, before, end) if content else before
            if start < 0:
                raise ValueError(
                    "not prefix-stable: assistant turn not found in the rendering (assistant mask)"
                )
            end = len(text[:end].rstrip())
            spans.append((start, max(end, start + len(content))))
        return spans

    def _render_all(self, conversations: list[list[dict] | None]) -> tuple[list, list, list]:
        """Rendered text, error and assistant spans (or mask from generation tags) per conversation."""
        texts: list[str | None] = []
        errors: list[str | None] = []
        masks: list[Any] = []
        generation = self.assistant_mask and self.uses_generation_tags
        for messages in conversations:
            try:
                if not messages:
                    raise ValueError("no turns")
                text = self.render(messages)
                if generation:
                    out = self._tokenizer.apply_chat_template(
                        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
                    )
                    mask = ("tags", out["assistant_masks"])
                elif self.assistant_mask:
                    mask = ("spans", self._assistant_spans(messages, text))
                else:
                    mask = None
            except Exception as exc:  # jinja's TemplateError, raise_exception(), TypeError on nulls…
                texts.append(None)
                errors.append(f"template_error: {short_error(exc)}")
                masks.append(None)
                continue
            texts.append(text)
            errors.append(None)
            masks.append(mask)
        return texts, errors, masks

    # ------------------------------------------------------------------ the step
    def annotate(self, batch: pl.DataFrame) -> pl.DataFrame:
        check_messages(self, batch, self.column)
        self.setup()
        conversations = batch.get_column(self.column).to_list()
        texts, errors, masks = self._render_all(conversations)
        columns: dict[str, pl.Series] = {REASON_COLUMN: pl.Series(errors, dtype=pl.String)}
        if self._tokenizer is not None:
            ok = [i for i, t in enumerate(texts) if t is not None]
            encoded = (
                self._tokenizer(
                    [texts[i] for i in ok],
                    add_special_tokens=False,
                    return_offsets_mapping=self.assistant_mask,
                )
                if ok
                else {}
            )
            counts: list[int | None] = [None] * len(texts)
            ids: list[list[int] | None] = [None] * len(texts)
            mask_column: list[list[int] | None] = [None] * len(texts)
            for slot, i in enumerate(ok):
                counts[i] = len(encoded["input_ids"][slot])
                ids[i] = encoded["input_ids"][slot]
                if self.assistant_mask:
                    mask_column[i] = self._token_mask(masks[i], encoded["offset_mapping"][slot], counts[i])
            count = pl.Series(counts, dtype=pl.Int64)
            too_long = count > self.max_tokens if self.max_tokens else pl.Series([False] * len(texts))
            reason = columns[REASON_COLUMN]
            reason = pl.select(
                pl.coalesce(pl.lit(reason), pl.when(pl.lit(too_long)).then(pl.lit("too_many_tokens")))
            ).to_series()
            columns[REASON_COLUMN] = reason
            columns[METRIC_PREFIX + "tokens"] = count.zip_with(
                reason.is_null(), pl.Series([None] * len(texts), dtype=pl.Int64)
            )
            if self.num_tokens:
                columns["num_tokens"] = count
            if self.input_ids:
                columns["input_ids"] = pl.Series(ids, dtype=pl.List(pl.Int64))
            if self.assistant_mask:
                columns["assistant_masks"] = pl.Series(mask_column, dtype=pl.List(pl.Int8))
        return batch.with_columns(**columns)

    @staticmethod
    def _token_mask(mask: tuple[str, Any], offsets: list[tuple[int, int]], n_tokens: int) -> list[int]:
        kind, value = mask
        if kind == "tags":
            return list(value[:n_tokens])
        bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        out = np.zeros(n_tokens, dtype=np.int8)
        for start, end in value:
            out |= (bounds[:, 0] < end) & (bounds[:, 1] > start)
        return out.tolist()

    def drop_reason(self, batch: pl.DataFrame) -> pl.Expr:
        return pl.col(REASON_COLUMN)

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        return super().process(batch).drop(REASON_COLUMN)
