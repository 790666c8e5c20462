"""Generation: prompts -> language model -> parsed descriptors -> the store, class by class.

Around any backend: the response cache (a re-run sends no request), tenacity retries (rate
limits honour Retry-After), bounded concurrency, and an append-only output that a restarted
run resumes from.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tqdm import tqdm

from descriptor_gen.backends import Backend, Completion, GenerationParams, Query, make_backend
from descriptor_gen.cache import ResponseCache, base_url_host, response_key
from descriptor_gen.errors import DescgenError
from descriptor_gen.parse import dedupe, parse_descriptors
from descriptor_gen.prompts import Prompt, PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.store import DescriptorRecord, StoreAppender, read_store_for_resume

T = TypeVar("T")
_RETRY_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER = 120.0


class GenerationSummary(BaseModel):
    classes: int
    already_done: int
    written: int
    with_descriptors: int
    failed: list[str]
    requests: int
    cache_hits: int
    tokens: int
    seconds: float

    def lines(self) -> list[str]:
        out = [
            f"classes: {self.classes} ({self.already_done} already in the output, {self.written} written now)",
            f"with descriptors: {self.with_descriptors}; without: {len(self.failed)}",
            f"requests sent: {self.requests}; cache hits: {self.cache_hits}; tokens: {self.tokens}",
            f"time: {self.seconds:.1f} s",
        ]
        if self.failed:
            out.append("classes without descriptors: " + ", ".join(self.failed))
        return out


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    tokens: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class ClassState:
    index: int
    name: str
    prompt: Prompt
    answers: list[str] = field(default_factory=list)
    error: str | None = None


class RequestFailed(Exception):
    """A request that will not succeed by asking again (4xx) or ran out of attempts."""


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, 408/409, 5xx, timeouts and connection errors are worth another try."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (TimeoutError, ConnectionError))


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or HTTP date, or retry-after-ms), if it sent one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _wait_strategy(backoff: float) -> Callable[[Any], float]:
    jitter = wait_random_exponential(multiplier=backoff, max=30 * max(backoff, 0.01) * 2)

    def wait(state: Any) -> float:
        after = retry_after_seconds(state.outcome.exception())
        return min(after, _MAX_RETRY_AFTER) if after is not None else jitter(state)

    return wait


async def with_retries(call: Callable[[], Awaitable[T]], max_attempts: int, backoff: float) -> T:
    """Run `call`, retrying what is retryable with jittered exponential backoff."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=_wait_strategy(backoff),
        retry=retry_if_exception(is_retryable),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except Exception as exc:
        raise RequestFailed(_describe_error(exc, max_attempts)) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _describe_error(exc: BaseException, attempts: int) -> str:
    body = getattr(exc, "body", None)
    server_message = body.get("message") if isinstance(body, dict) else None
    message = server_message or getattr(exc, "message", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    prefix = f"HTTP {status}: " if status else f"{type(exc).__name__}: "
    suffix = f" (after {attempts} attempts)" if is_retryable(exc) else ""
    return " ".join(f"{prefix}{message}{suffix}".split())


@dataclass
class GenerationJob:
    """One `descgen generate` run. See :func:`generate`."""

    classes: list[str]
    out: Path
    options: PromptOptions
    params: GenerationParams
    library: PromptLibrary
    cache: ResponseCache
    concurrency: int = 4
    max_attempts: int = 4
    overwrite: bool = False
    backoff: float = 0.5
    progress: bool = True
    backend: Backend | None = None


def generate(job: GenerationJob) -> GenerationSummary:
    """Generate descriptors for every class not yet in `job.out`, appending records as they finish.

    Returns:
        A summary with counts; `failed` names the classes left without descriptors.
    """
    if job.concurrency < 1 or job.max_attempts < 1:
        raise DescgenError("--concurrency and --max-attempts must be at least 1")
    return asyncio.run(_generate(job))


async def _generate(job: GenerationJob) -> GenerationSummary:
    started = time.perf_counter()
    stats = Stats()
    written: list[DescriptorRecord] = []
    backend = job.backend or make_backend(job.params)
    try:
        existing = read_store_for_resume(job.out, job.classes, overwrite=job.overwrite)
        _check_same_setting(existing, job, record_params(job.params, backend))
        done = {r.class_index for r in existing}
        states = [
            ClassState(i, name, build_prompt(name, job.options, job.library))
            for i, name in enumerate(job.classes)
            if i not in done
        ]
        with StoreAppender(job.out) as appender, _progress(job, len(states)) as bar:
            runner = _Runner(job, backend, stats, appender, bar, written)
            await runner.run(states)
    finally:
        if job.backend is None:
            await backend.aclose()
    everything = existing + written
    failed = [r.class_name for r in sorted(everything, key=lambda r: r.class_index) if r.error]
    return GenerationSummary(
        classes=len(job.classes),
        already_done=len(existing),
        written=len(written),
        with_descriptors=sum(1 for r in everything if not r.error),
        failed=failed,
        requests=stats.requests,
        cache_hits=stats.cache_hits,
        tokens=stats.tokens,
        seconds=time.perf_counter() - started,
    )


def _progress(job: GenerationJob, total: int) -> tqdm:
    return tqdm(total=total, unit="class", disable=not job.progress or total == 0, dynamic_ncols=True,
                mininterval=0.5, desc="generate")


def record_params(params: GenerationParams, backend: Backend) -> dict[str, Any]:
    """The generation parameters a record keeps (never the API key)."""
    return {
        "api": "chat" if backend.chat else "completions",
        "base_url": base_url_host(getattr(backend, "base_url", None)),
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "samples": params.samples,
        "seed": params.seed,
        "stop": params.stop,
    }


def _check_same_setting(
    existing: list[DescriptorRecord], job: GenerationJob, params: dict[str, Any]
) -> None:
    for record in existing:
        same = (record.backend, record.model, record.options, record.params) == (
            job.params.backend, job.params.model, job.options, params
        )
        if not same:
            raise DescgenError(
                f"{job.out}: class {record.class_index} ({record.class_name!r}) was generated with"
                " another setting (backend, model, prompt options or parameters);"
                " use --overwrite or another --out"
            )


class _Runner:
    """Rounds of requests: round 0 asks `samples` answers a class, each later round one more
    for the classes still without descriptors, up to `max_attempts` rounds."""

    def __init__(self, job: GenerationJob, backend: Backend, stats: Stats,
                 appender: StoreAppender, bar: tqdm, written: list[DescriptorRecord]) -> None:
        self.job, self.backend, self.stats = job, backend, stats
        self.appender, self.bar, self.written = appender, bar, written
        self.identity = backend.identity()
        self.params = record_params(job.params, backend)
        self.semaphore = asyncio.Semaphore(job.concurrency)

    async def run(self, states: list[ClassState]) -> None:
        samples = self.job.params.samples
        pending = states
        for round_no in range(self.job.max_attempts):
            wanted = list(range(samples)) if round_no == 0 else [samples + round_no - 1]
            last = round_no == self.job.max_attempts - 1
            chunks = [pending[i : i + self.backend.max_batch]
                      for i in range(0, len(pending), self.backend.max_batch)]
            retry: list[ClassState] = []
            tasks = [asyncio.create_task(self._chunk(c, wanted)) for c in chunks]
            try:
                for finished in asyncio.as_completed(tasks):
                    for state in await finished:
                        if not self._settle(state, last):
                            retry.append(state)
            finally:
                for task in tasks:
                    task.cancel()
            pending = sorted(retry, key=lambda s: s.index)
            if not pending:
                return

    def _settle(self, state: ClassState, last: bool) -> bool:
        """Write the class's record if it is finished; False when it should be asked again."""
        descriptors = dedupe(d for a in state.answers for d in parse_descriptors(a, state.name))
        if not descriptors and state.error is None and not last:
            return False
        error = state.error if not descriptors else None
        if not descriptors and error is None:
            error = f"no descriptors in {len(state.answers)} answers"
        record = DescriptorRecord(
            class_index=state.index,
            class_name=state.name,
            descriptors=descriptors,
            options=self.job.options,
            prompt_sha256=state.prompt.sha256(self.backend.chat),
            backend=self.job.params.backend,
            model=self.job.params.model,
            params=self.params,
            raw=state.answers,
            error=error,
        )
        self.appender.append(record)
        self.written.append(record)
        self.stats.done += 1
        self.stats.failed += error is not None
        self.bar.update(1)
        self.bar.set_postfix(failed=self.stats.failed, requests=self.stats.requests,
                             cached=self.stats.cache_hits, tokens=self.stats.tokens, refresh=False)
        return True

    def _prompt_of(self, state: ClassState) -> str | list[dict[str, str]]:
        return state.prompt.messages if self.backend.chat else state.prompt.text

    async def _chunk(self, chunk: list[ClassState], wanted: list[int]) -> list[ClassState]:
        keys = {(s.index, i): response_key(self.identity, self._prompt_of(s), i)
                for s in chunk for i in wanted}
        cached = self.job.cache.get_many(list(keys.values()))
        missing: dict[int, list[int]] = {}
        for state in chunk:
            for i in wanted:
                answer = cached.get(keys[(state.index, i)])
                if answer is None:
                    missing.setdefault(state.index, []).append(i)
                else:
                    self.stats.cache_hits += 1
                    state.answers.append(answer)
        asking = [s for s in chunk if s.index in missing]
        if asking:
            try:
                await self._ask(asking, missing, keys)
            except RequestFailed as exc:
                for state in asking:
                    state.error = str(exc)
        return chunk

    async def _ask(self, asking: list[ClassState], missing: dict[int, list[int]],
                   keys: dict[tuple[int, int], str]) -> None:
        """Ask for the missing samples; a server that returns fewer than `n` is asked again."""
        while asking:
            queries = [Query(self._prompt_of(s), n=len(missing[s.index]),
                             seed=self._seed(missing[s.index][0])) for s in asking]
            completions = await self._send(queries)
            still: list[ClassState] = []
            for state, completion in zip(asking, completions):
                todo = missing[state.index]
                for sample, text in zip(todo, completion.texts):
                    self.job.cache.put(keys[(state.index, sample)], text,
                                       {"class": state.name, "sample": sample})
                    state.answers.append(text)
                missing[state.index] = todo[len(completion.texts):]
                if missing[state.index] and completion.texts:
                    still.append(state)
            asking = still

    def _seed(self, sample: int) -> int | None:
        seed = self.job.params.seed
        return None if seed is None else seed + sample

    async def _send(self, queries: list[Query]) -> list[Completion]:
        async def call() -> list[Completion]:
            self.stats.requests += len(queries)
            return await self.backend.complete(queries)

        async with self.semaphore:
            completions = await with_retries(call, self.job.max_attempts, self.job.backoff)
        self.stats.tokens += sum(c.tokens for c in completions)
        return completions
