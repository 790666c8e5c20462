"""Language-model backends behind one small protocol: a batch of prompts in, answers out.

Caching, retries and concurrency are layers in `generate`, written once for every backend.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from descriptor_gen.models import Model
from descriptor_gen.generation.cache import base_url_host, split_base_urls
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import files_fingerprint
from descriptor_gen.machine import fit_torch_threads
from descriptor_gen.describe.parse import PARSERS
from descriptor_gen.describe.prompts import Messages
from descriptor_gen.generation.retry import MalformedResponse
from descriptor_gen.secrets import public_url, remember_secrets

ApiKind = Literal["chat", "completions"]
BACKENDS: dict[str, Callable[[GenerationParams], Backend]] = {}
_NO_KEY = "sk-no-key-required"
_CONNECT_TIMEOUT = 10.0


ParserName = Literal[tuple(PARSERS)]  # type: ignore[valid-type]


class GenerationParams(Model):
    """What the user chose for the language model; all of it (but the key) is provenance.

    `max_tokens` defaults to 512 so that seven detailed sentences (about 300 tokens) fit;
    `parser` names how answers become descriptors (`default`, or `dclip`: Menon & Vondrick's).
    """

    model_config = ConfigDict(extra="forbid")

    backend: str = "openai"
    model: str = "gpt-3.5-turbo-instruct"
    base_url: str | None = None
    api: ApiKind = "completions"
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    samples: int = Field(default=1, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=lambda: ["\nQ:", "\n\nQ"])
    parser: ParserName = "default"
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    batch_size: int = Field(default=8, ge=1)
    timeout: float = Field(default=120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _server_urls(cls, value: str | None) -> str | None:
        """Each of the comma-separated servers is an http(s) URL with a host and a valid
        port; its credentials are remembered so that no message repeats them."""
        if value is None:
            return None
        check_base_urls(value)
        return value

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r} (choose {', '.join(BACKENDS)})")
        return value


def check_base_urls(value: str) -> list[str]:
    """`--base-url A[,B...]` checked item by item (scheme, host, port, no blanks or spaces);
    the servers' user, password and query values join the secrets no message repeats."""
    from urllib.parse import parse_qsl, urlsplit

    items = value.split(",")
    for number, item in enumerate(items, start=1):
        where = f"server {number} of {len(items)}" if len(items) > 1 else "the server"
        try:
            shown = public_url(item.strip()) or "''"
        except ValueError:
            shown = "as given"
        if not item.strip():
            raise ValueError(f"{where} is empty (give URLs separated by single commas)")
        if any(c.isspace() for c in item.strip()):
            raise ValueError(f"{where} ({shown}) contains a space")
        try:
            parts = urlsplit(item.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{where} ({shown}) is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{where} ({shown}) is not an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError(f"{where} ({shown}) names no host")
        if port == 0:
            raise ValueError(f"{where} ({shown}): port 0 is not a port")
        remember_secrets(parts.username, parts.password,
                         *(v for _, v in parse_qsl(parts.query, keep_blank_values=False)))
    return [i.strip() for i in items]


@dataclass
class Completion:
    """One request's answers (one per sample asked), why each ended, and the tokens they cost.

    `finish_reasons[i]` is "length" when answer i stopped at `max_tokens`, "stop" when it ended
    by itself or at a stop string, None when the server did not say.
    """

    texts: list[str]
    tokens: int = 0
    finish_reasons: list[str | None] = field(default_factory=list)

    def reason(self, index: int) -> str | None:
        return self.finish_reasons[index] if index < len(self.finish_reasons) else None


@dataclass
class Query:
    """One request: a prompt (text or messages) and how many samples to draw."""

    prompt: str | Messages
    n: int = 1
    seed: int | None = None
    tag: Any = field(default=None, compare=False)


class Backend(Protocol):
    name: str
    chat: bool
    max_batch: int
    supports_n: bool

    def identity(self) -> dict[str, Any]:
        """Everything about the backend that changes an answer (cache keys, records)."""

    async def complete(self, queries: list[Query]) -> list[Completion]:
        """Answer a batch of at most `max_batch` queries, in order."""

    async def aclose(self) -> None:
        """Release clients and models."""


def register(name: str) -> Callable[[Callable[[GenerationParams], Backend]], Callable]:
    def wrap(factory: Callable[[GenerationParams], Backend]) -> Callable:
        BACKENDS[name] = factory
        return factory

    return wrap


def make_backend(params: GenerationParams) -> Backend:
    if params.backend not in BACKENDS:
        raise DescgenError(f"unknown backend {params.backend!r} (choose {', '.join(BACKENDS)})")
    return BACKENDS[params.backend](params)


def _sampling_identity(params: GenerationParams) -> dict[str, Any]:
    """What changes one answer besides the prompt and the sample index (seed included: sample
    i is drawn with seed + i)."""
    return {
        "model": params.model,
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "stop": params.stop,
        "seed": params.seed,
    }


def generation_identity(params: GenerationParams) -> dict[str, Any]:
    """Everything about a generation setting that can change its descriptors, known without
    loading a model or reaching a server: the answers' identity (backend, model, server host,
    api, sampling), how many samples are merged and how answers are parsed."""
    identity: dict[str, Any] = {"backend": params.backend, "api": params.api,
                                "samples": params.samples, "parser": params.parser,
                                **_sampling_identity(params)}
    if params.backend == "openai":
        url = params.base_url or os.environ.get("OPENAI_BASE_URL") or None
        identity["base_url"] = base_url_host(url) or "https://api.openai.com"
    else:
        identity.update(files=local_model_fingerprint(params.model), dtype=params.dtype,
                        device=params.device)
    return identity


def local_model_fingerprint(model: str) -> str | None:
    """For a model folder on disk: a hash of its files' names, sizes and mtimes (a retrained
    model saved in place is another model); None for a hub name."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    return files_fingerprint(sorted(str(p) for p in folder.rglob("*") if p.is_file()))


_REST_SECONDS = 30.0  # a server that failed to answer is left out of the turn this long


@register("openai")
class OpenAIBackend:
    """The `openai` SDK against OpenAI or any OpenAI-compatible server (vLLM, Ollama, ...).

    The SDK's own retries are off (`max_retries=0`): `generate` owns retries, with tenacity.
    """

    name = "openai"
    max_batch = 1

    def __init__(self, params: GenerationParams) -> None:
        from openai import AsyncOpenAI, Timeout

        self.params = params
        self.chat = params.api == "chat"
        base_url = params.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = os.environ.get("OPENAI_API_KEY")
        if not key and base_url is None:
            raise DescgenError(
                "OPENAI_API_KEY is not set (needed for the OpenAI API; for a local server give"
                " --base-url URL, in a sweep or suite spec --set generation.base_url=URL; descgen"
                " serve runs an offline one)"
            )
        if base_url is not None and params.base_url is None:
            try:
                check_base_urls(base_url)  # $OPENAI_BASE_URL: checked, its secrets remembered
            except ValueError as exc:
                raise DescgenError(f"$OPENAI_BASE_URL: {exc}") from exc
        self.base_url = base_url
        self.supports_n = True
        # A server that does not answer a connection is found out fast; a slow answer may take
        # the whole `timeout`.
        timeout = Timeout(params.timeout, connect=min(params.timeout, _CONNECT_TIMEOUT))
        # Several servers (replicas of one model): requests, retries included, go round them.
        self.clients = [AsyncOpenAI(api_key=key or _NO_KEY, base_url=url, max_retries=0,
                                    timeout=timeout)
                        for url in (split_base_urls(base_url) or [None])]
        self.client = self.clients[0]
        self._turn = itertools.cycle(range(len(self.clients)))
        self._resting = [0.0] * len(self.clients)  # a failing server sits out until then

    def _pick(self) -> int:
        """The next server in turn that is not resting after a failure (any, if all are)."""
        now = time.monotonic()
        for _ in self.clients:
            index = next(self._turn)
            if self._resting[index] <= now:
                return index
        return next(self._turn)

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": base_url_host(self.base_url) or "https://api.openai.com",
            "api": self.params.api,
            **_sampling_identity(self.params),
        }

    def _request_kwargs(self, query: Query) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.params.model,
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "n": query.n,
        }
        if query.seed is not None:
            kwargs["seed"] = query.seed
        if self.params.stop and not self.chat:
            kwargs["stop"] = self.params.stop
        return kwargs

    @property
    def endpoint(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    def request_body(self, query: Query) -> dict[str, Any]:
        """The JSON body of a query, as a Batch API request line carries it."""
        key = "messages" if self.chat else "prompt"
        return {key: query.prompt, **self._request_kwargs(query)}

    async def complete(self, queries: list[Query]) -> list[Completion]:
        return [await self._one(q) for q in queries]

    async def _one(self, query: Query) -> Completion:
        kwargs = self._request_kwargs(query)
        from openai import APIConnectionError, InternalServerError

        index = self._pick()
        client = self.clients[index]
        create = (client.chat.completions.create(messages=query.prompt, **kwargs) if self.chat
                  else client.completions.create(prompt=query.prompt, **kwargs))
        try:
            # the whole request's deadline: a server trickling its body byte by byte resets
            # every per-read timeout but not this one
            response = await asyncio.wait_for(create, self.params.timeout)
        except asyncio.TimeoutError as exc:
            raise TimeoutError(f"no whole answer within --timeout {self.params.timeout:g} s") from exc
        except json.JSONDecodeError as exc:
            raise MalformedResponse(f"the server's answer is not JSON ({exc.msg})") from exc
        except (APIConnectionError, InternalServerError):
            if len(self.clients) > 1:  # the retry goes to another server
                self._resting[index] = time.monotonic() + _REST_SECONDS
            raise
        try:
            choices = sorted(response.choices, key=lambda c: c.index)
            texts = [(c.message.content if self.chat else c.text) or "" for c in choices]
            reasons = [getattr(c, "finish_reason", None) for c in choices]
            usage = getattr(response, "usage", None)
            tokens = (usage.completion_tokens if usage else 0) or 0
        except (AttributeError, TypeError) as exc:
            shown = " ".join(str(response).split())[:80]
            raise MalformedResponse(f"the server's answer is not a completion ({shown!r})") from exc
        return Completion(texts=texts, tokens=tokens, finish_reasons=reasons)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


@register("hf")
class HFBackend:
    """A local `transformers` causal LM: batched generation with left padding.

    Uses the tokenizer's chat template when it has one and `--api chat` is asked, and plain
    completion text otherwise; greedy when the temperature is 0.
    """

    name = "hf"
    supports_n = True

    def __init__(self, params: GenerationParams) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.params = params
        self.max_batch = params.batch_size
        self.device = _pick_device(params.device, torch)
        fit_torch_threads(torch)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                params.model, trust_remote_code=params.trust_remote_code, padding_side="left"
            )
            self.model = AutoModelForCausalLM.from_pretrained(
                params.model,
                trust_remote_code=params.trust_remote_code,
                dtype=_torch_dtype(params.dtype, self.device, torch),
            ).to(self.device)
        except (OSError, ValueError) as exc:
            raise DescgenError(f"cannot load Hugging Face model {params.model!r}: {exc}") from exc
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = params.api == "chat" and bool(getattr(self.tokenizer, "chat_template", None))
        self._lock = asyncio.Lock()

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "api": "chat" if self.chat else "completions",
                "files": local_model_fingerprint(self.params.model),
                "revision": getattr(self.model.config, "_commit_hash", None),
                "dtype": str(self.model.dtype), **_sampling_identity(self.params)}

    def _render(self, prompt: str | Messages) -> str:
        if self.chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if isinstance(prompt, str):
            return prompt
        return "\n\n".join(m["content"] for m in prompt)

    async def complete(self, queries: list[Query]) -> list[Completion]:
        async with self._lock:
            return await asyncio.to_thread(self._generate, queries)

    def _generate(self, queries: list[Query]) -> list[Completion]:
        import torch

        n = max(q.n for q in queries)
        texts = [self._render(q.prompt) for q in queries]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        sample = self.params.temperature > 0
        if sample and queries[0].seed is not None:
            torch.manual_seed(queries[0].seed)
        kwargs: dict[str, Any] = {"max_new_tokens": self.params.max_tokens, "do_sample": sample,
                                  "num_return_sequences": n, "pad_token_id": self.tokenizer.pad_token_id}
        if sample:
            kwargs["temperature"] = self.params.temperature
        if self.params.stop and not self.chat:
            kwargs.update(stop_strings=self.params.stop, tokenizer=self.tokenizer)
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        new = output[:, batch["input_ids"].shape[1] :]
        decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        lengths = _generated_lengths(new, self.tokenizer.pad_token_id)
        answers = [_finish(t, self.params.stop if not self.chat else [], length,
                           self.params.max_tokens) for t, length in zip(decoded, lengths)]
        out = [Completion(texts=[a[0] for a in answers[i * n : i * n + q.n]],
                          finish_reasons=[a[1] for a in answers[i * n : i * n + q.n]])
               for i, q in enumerate(queries)]
        out[0].tokens = sum(lengths)
        return out

    async def aclose(self) -> None:
        self.model = None


def _generated_lengths(new: Any, pad_token_id: int) -> list[int]:
    """Tokens each sequence generated before it finished (finished rows are padded)."""
    lengths = []
    for row in new.tolist():
        ended = next((i for i, token in enumerate(row) if token == pad_token_id), len(row))
        lengths.append(ended)
    return lengths


def _finish(text: str, stops: list[str], generated: int, max_tokens: int) -> tuple[str, str]:
    """The answer cut at its first stop string, and why it ended."""
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    return text, "length" if generated >= max_tokens else "stop"


def _pick_device(device: str, torch: Any) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DescgenError(f"--device {device}: CUDA is not available on this machine")
    return device


def _torch_dtype(dtype: str, device: str, torch: Any) -> Any:
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in names:
        raise DescgenError(f"--dtype {dtype}: choose auto, {', '.join(names)}")
    return names[dtype]
