"""The ``llm:`` block shared by generation steps, and the backends that answer it.

Backends are built on distilabel's LLM classes (``TransformersLLM``, ``OpenAILLM``, ``vLLM``):
they load the model or client and render chat prompts. Where those classes cannot say what we
must know, we go one level down, through the object distilabel loaded:

* transformers: distilabel's ``generate`` takes neither stop strings nor a seed and does not say
  whether a generation hit ``max_new_tokens``; so ``model.generate`` of the pipeline distilabel
  built is called directly (greedy requests batched, sampled ones one at a time under their own
  seed, so each completion is reproducible alone). Raw prompts skip the chat template.
* openai: ``OpenAILLM.agenerate`` sends chat prompts to ``/v1/chat/completions`` and raw strings
  to ``/v1/completions``, but drops ``stop`` for raw strings and never sends a seed: both go in
  ``extra_body``. "Truncated" is read from the usage counts (``completion_tokens`` reaching
  ``max_new_tokens``), since distilabel does not return ``finish_reason``.

The API key is read from the environment variable *named* by ``api_key_env`` when the backend
loads (in the worker), and is never part of the step's parameters, the cache key or any output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsforge.errors import DsforgeError
from dsforge.types import InputPath, PathOrHubId

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HIDDEN = "<hidden: not an environment variable name>"
#: Reasons a single call can fail with (the steps add their own: empty, truncated, unparseable).
LLM_ERROR = "llm_error"
PROMPT_TOO_LONG = "prompt_too_long"


class LLMConfig(BaseModel):
    """One model and how to call it: the ``llm:`` block (or one entry of ``models:``) of a step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    #: a local folder or Hub id (transformers, vllm); the served model's name (openai)
    model: PathOrHubId
    #: the name written in the ``model`` column (default: the folder name or model id)
    label: str | None = None
    base_url: str | None = None
    #: NAME of the environment variable that holds the API key (never the key itself)
    api_key_env: str | None = None
    tokenizer: PathOrHubId | None = None
    #: a .jinja file or tokenizer_config.json whose template replaces the model's own
    chat_template: InputPath | None = None
    compact_template: bool = False
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    #: default: the recipe's seed; completion k of a prompt uses a seed derived from it and k
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    #: apply the chat template (instruct models) or send the raw prompt (base models)
    chat: bool = True
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(4, ge=1)
    timeout: float = Field(120, gt=0)
    retries: int = Field(3, ge=0)
    #: first retry waits this many seconds, then twice as long each time
    backoff: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _hide_keys(cls, data: Any) -> Any:
        """A pasted key in ``api_key_env`` must not be echoed by the validation message."""
        if isinstance(data, dict):
            value = data.get("api_key_env")
            if isinstance(value, str) and not ENV_NAME.match(value):
                data = {**data, "api_key_env": HIDDEN}
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("give the NAME of an environment variable holding the key, e.g. OPENAI_API_KEY")
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @model_validator(mode="after")
    def _backend_fields(self) -> LLMConfig:
        if self.backend == "openai" and (self.tokenizer or self.chat_template):
            raise ValueError("tokenizer/chat_template do not apply to backend openai (the server templates)")
        return self

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        path = Path(self.model)
        return path.name if self.backend != "openai" and path.is_dir() else self.model

    def identity(self, seed: int) -> dict[str, Any]:
        """What decides the model's answers: the cache key part (no key, no throughput knobs)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "model_files": _folder_fingerprint(self.model) if self.backend != "openai" else None,
            "base_url": self.base_url if self.backend == "openai" else None,
            "tokenizer": self.tokenizer,
            "chat_template": _file_digest(self.chat_template),
            "compact_template": self.compact_template,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": seed,
            "stop": self.stop,
            "chat": self.chat,
        }


def _folder_fingerprint(model: str) -> list[Any] | None:
    """Names, sizes and mtimes of a local model's files: retraining in place changes the key."""
    path = Path(model)
    if not path.is_dir():
        return None
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()]


def _file_digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def completion_seed(seed: int, index: int) -> int:
    """The seed of completion ``index`` of a prompt: independent streams per completion."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def load_template(config: LLMConfig) -> str | None:
    if not config.chat_template:
        return None
    from dsforge.chat.template import compact, read_template

    template, _ = read_template(config.chat_template)
    return compact(template) if config.compact_template else template


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (servers and ``stop_strings`` may include it)."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


@dataclass
class Request:
    """One call: a chat (list of turns) when ``chat`` is on, else the raw prompt text."""

    prompt: str | list[dict[str, str]]
    seed: int


@dataclass
class Reply:
    text: str | None
    #: "stop" (ended by itself, EOS or a stop string) or "length" (hit max_new_tokens)
    finish: str | None = None
    error: str | None = None


OnReply = Callable[[int, Reply], None]


class Backend:
    """Answers requests; calls ``on_reply(i, reply)`` as each finishes (so it can be cached)."""

    def __init__(self, config: LLMConfig, where: str) -> None:
        self.config = config
        self.where = where

    def load(self) -> None:
        raise NotImplementedError

    def complete(self, requests: list[Request], on_reply: OnReply) -> None:
        raise NotImplementedError


class TransformersBackend(Backend):
    def load(self) -> None:
        from distilabel.models import TransformersLLM

        config = self.config
        try:
            self._llm = TransformersLLM(
                model=config.model, tokenizer=config.tokenizer, chat_template=load_template(config)
            )
            self._llm.load()
        except Exception as exc:
            raise DsforgeError(
                f"{self.where}: cannot load {config.model}: {str(exc).splitlines()[0]}"
            ) from exc
        self._model = self._llm._pipeline.model
        self._tok = self._llm._pipeline.tokenizer
        self._tok.padding_side = "left"
        if config.chat and not self._tok.chat_template:
            raise DsforgeError(
                f"{self.where}: {config.model} has no chat template; give llm.chat_template "
                "or set chat: false (raw prompts)"
            )
        self._max_positions = getattr(self._model.config, "max_position_embeddings", None)
        eos = self._model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    def complete(self, requests: list[Request], on_reply: OnReply) -> None:
        config = self.config
        encoded: list[tuple[int, list[int], int]] = []
        for i, request in enumerate(requests):
            text = self._llm.prepare_input(request.prompt) if config.chat else request.prompt
            # a rendered chat carries its own BOS; a raw prompt gets the tokenizer's
            ids = self._tok(text, add_special_tokens=not config.chat)["input_ids"]
            if self._max_positions and len(ids) + config.max_new_tokens > self._max_positions:
                on_reply(i, Reply(None, error=PROMPT_TOO_LONG))
            else:
                encoded.append((i, ids, request.seed))
        size = config.batch_size if config.temperature == 0 else 1
        for start in range(0, len(encoded), size):
            group = encoded[start : start + size]
            try:
                replies = self._generate([ids for _, ids, _ in group], group[0][2])
            except Exception:
                if len(group) == 1:
                    replies = [Reply(None, error=LLM_ERROR)]
                else:  # isolate the request that broke the batch
                    replies = [self._generate_or_fail(ids, seed) for _, ids, seed in group]
            for (i, _, _), reply in zip(group, replies, strict=True):
                on_reply(i, reply)

    def _generate_or_fail(self, ids: list[int], seed: int) -> Reply:
        try:
            return self._generate([ids], seed)[0]
        except Exception:
            return Reply(None, error=LLM_ERROR)

    def _generate(self, batch: list[list[int]], seed: int) -> list[Reply]:
        import torch

        config, tok = self.config, self._tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(self._eos), 0)
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "pad_token_id": pad}
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
            torch.manual_seed(seed)
        else:
            kwargs.update(do_sample=False)
        if config.stop:
            kwargs.update(stop_strings=config.stop, tokenizer=tok)
        with torch.inference_mode():
            out = self._model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        replies = []
        for row in out[:, width:].tolist():
            ended = next((k for k, t in enumerate(row) if t in self._eos), None)
            tokens = row if ended is None else row[:ended]
            text, hit = cut_at_stop(tok.decode(tokens, skip_special_tokens=True), config.stop)
            finish = "length" if ended is None and not hit and len(row) >= config.max_new_tokens else "stop"
            replies.append(Reply(text, finish))
        return replies


class OpenAIBackend(Backend):
    def load(self) -> None:
        from distilabel.models import OpenAILLM
        from pydantic import SecretStr

        config = self.config
        key = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise DsforgeError(f"{self.where}: environment variable {config.api_key_env} is not set")
        self._key = key
        self._llm = OpenAILLM(
            model=config.model,
            base_url=config.base_url or "https://api.openai.com/v1",
            api_key=SecretStr(key or "no-key"),  # local servers want some key
            max_retries=0,  # retries (with backoff) are ours, so they are counted the same everywhere
            timeout=max(1, round(config.timeout)),
        )
        self._llm.load()
        self._loop = asyncio.new_event_loop()

    def complete(self, requests: list[Request], on_reply: OnReply) -> None:
        async def run_all() -> None:
            gate = asyncio.Semaphore(self.config.concurrency)

            async def one(i: int, request: Request) -> None:
                async with gate:
                    reply = await self._call(request)
                on_reply(i, reply)

            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

        self._loop.run_until_complete(run_all())

    def _hide(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def _call(self, request: Request) -> Reply:
        import openai

        config = self.config
        extra: dict[str, Any] = {"seed": request.seed}
        kwargs: dict[str, Any] = {
            "num_generations": 1,
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.chat:
            kwargs["stop"] = config.stop or None
        elif config.stop:
            extra["stop"] = config.stop  # distilabel's completions path drops `stop`
        retryable = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
        fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
        for attempt in range(config.retries + 1):
            try:
                out = await self._llm.agenerate(input=request.prompt, extra_body=extra, **kwargs)
                break
            except fatal as exc:  # every call would fail the same way: a setup mistake
                message = self._hide(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise DsforgeError(f"{self.where}: {type(exc).__name__}: {message[:200]}") from None
            except retryable:
                if attempt == config.retries:
                    return Reply(None, error=LLM_ERROR)
                await asyncio.sleep(config.backoff * 2**attempt)
            except Exception:  # a bad request, a malformed answer: this call only
                return Reply(None, error=LLM_ERROR)
        text = out["generations"][0]
        if text is None:
            return Reply(None, error=LLM_ERROR)
        text, hit = cut_at_stop(text, config.stop)
        used = (out.get("statistics") or {}).get("output_tokens") or [0]
        finish = "length" if not hit and used[0] >= config.max_new_tokens else "stop"
        return Reply(text, finish)


class VLLMBackend(Backend):
    """vLLM through distilabel's ``vLLM`` (prompts rendered by it, sampling params per request)."""

    def load(self) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise DsforgeError(
                f"{self.where}: backend vllm needs the vllm package, which is not installed "
                "(pip install vllm; GPU machines), or use backend: transformers"
            ) from None
        from distilabel.models import vLLM

        config = self.config
        self._llm = vLLM(model=config.model, tokenizer=config.tokenizer, chat_template=load_template(config))
        self._llm.load()

    def complete(self, requests: list[Request], on_reply: OnReply) -> None:
        from vllm import SamplingParams

        config = self.config
        for start in range(0, len(requests), config.batch_size):
            group = requests[start : start + config.batch_size]
            texts = [self._llm.prepare_input(r.prompt) if config.chat else r.prompt for r in group]
            params = [
                SamplingParams(
                    n=1,
                    max_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    seed=r.seed,
                    stop=config.stop or None,
                )
                for r in group
            ]
            try:
                outs = self._llm._model.generate(texts, params, use_tqdm=False)
            except Exception:
                for k in range(len(group)):
                    on_reply(start + k, Reply(None, error=LLM_ERROR))
                continue
            for k, out in enumerate(outs):
                choice = out.outputs[0]
                finish = "length" if choice.finish_reason == "length" else "stop"
                on_reply(start + k, Reply(choice.text, finish))


BACKENDS: dict[str, type[Backend]] = {
    "transformers": TransformersBackend,
    "openai": OpenAIBackend,
    "vllm": VLLMBackend,
}


def make_backend(config: LLMConfig, where: str) -> Backend:
    backend = BACKENDS[config.backend](config, where)
    backend.load()
    return backend


def canonical(value: Any) -> str:
    """Stable JSON text of a prompt or parameters, for cache keys."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
