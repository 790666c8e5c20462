"""Generation: prompts -> language model -> parsed descriptors -> the store, class by class.

A class has one prompt (the few-shot style) or several (CuPL's questions, comparative pairs);
each prompt is asked for `samples` answers and the class's record merges all of them. Around
any backend: the response cache (a re-run sends no request), tenacity retries (rate limits
honour Retry-After), bounded concurrency over every prompt of every class, and an append-only
output that a restarted run resumes from. An answer that stopped at the token limit is parsed
as truncated (its cut last item dropped) and its record says so; a class without descriptors
is asked again (one new sample per prompt) only when sampling (temperature > 0): a greedy
answer asked again is the same.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from descriptor_gen.models import Model
from descriptor_gen.generation.backends import (
    Backend,
    Completion,
    GenerationParams,
    OpenAIBackend,
    Query,
    make_backend,
)
from descriptor_gen.generation.batch import BatchItem, load_manifest, request_line, run_batches, submit
from descriptor_gen.generation.cache import Answer, ResponseCache, base_url_host, response_key
from descriptor_gen.errors import DescgenError
from descriptor_gen.locks import exclusive
from descriptor_gen.describe.parse import PARSERS
from descriptor_gen.describe.prompts import Prompt, PromptLibrary, PromptOptions, prompt_sha256
from descriptor_gen.describe.styles import DclipStyle, Style
from descriptor_gen.generation.retry import RequestFailed, with_retries
from descriptor_gen.describe.store import DescriptorRecord, StoreAppender, read_store_for_resume



class GenerationSummary(Model):
    classes: int
    already_done: int
    written: int
    with_descriptors: int
    failed: list[str]
    unanswered: list[str] = []
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
        if self.unanswered:
            out.append(f"{len(self.unanswered)} classes not written; run again without --batch-api"
                       " to ask them live: " + ", ".join(self.unanswered))
        return out


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    tokens: int = 0
    done: int = 0
    failed: int = 0


# A prompt asked twice for one class (CuPL's aircraft questions) draws other samples: its
# cache keys and seeds are offset by this much per earlier copy.
REPEAT_STRIDE = 10_000


@dataclass
class ClassState:
    """One class's prompts and, per prompt, its answers so far."""

    index: int
    name: str
    prompts: list[Prompt]
    answers: list[list[Answer]] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self.answers = [[] for _ in self.prompts]
        self.offsets = [REPEAT_STRIDE * sum(1 for q in self.prompts[:j] if q.text == p.text)
                        for j, p in enumerate(self.prompts)]

    def all_answers(self) -> list[Answer]:
        return [a for answers in self.answers for a in answers]

    def sha256(self, chat: bool) -> str:
        return prompts_sha256(self.prompts, chat)


def prompts_sha256(prompts: list[Prompt], chat: bool) -> str:
    """The hash of what a class was asked: its prompt's, or of all its prompts' in order."""
    if len(prompts) == 1:
        return prompts[0].sha256(chat)
    return prompt_sha256("\n".join(p.sha256(chat) for p in prompts))


Unit = tuple[ClassState, int]  # a class and one of its prompts


@dataclass
class GenerationJob:
    """One `descgen generate` run. See :func:`generate`."""

    classes: list[str]
    out: Path
    options: PromptOptions
    params: GenerationParams
    library: PromptLibrary
    cache: ResponseCache
    style: Style = field(default_factory=DclipStyle)
    neighbours: list[list[int]] | None = None
    concurrency: int = 4
    max_attempts: int = 4
    overwrite: bool = False
    retry_failed: bool = True
    wait: bool = False
    backoff: float = 0.5
    progress: bool = True
    backend: Backend | None = None
    batch_api: bool = False
    resume_batch: str | None = None
    poll_seconds: float = 30.0
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))

    @property
    def live(self) -> bool:
        return not (self.batch_api or self.resume_batch)

    @property
    def record_options(self) -> PromptOptions | None:
        """The few-shot options a record keeps (other styles say theirs in `style`)."""
        return self.style.prompt_options(self.options)

    def prompts(self) -> list[list[Prompt]]:
        return self.style.prompts(self.classes, self.options, self.library, self.neighbours)

    def style_record(self, index: int) -> dict[str, Any] | None:
        named = None
        if self.neighbours is not None:
            named = [self.classes[j] for j in self.neighbours[index]]
        return self.style.record(named)


def generate(job: GenerationJob) -> GenerationSummary:
    """Generate descriptors for every class not yet in `job.out`, appending records as they finish.

    Returns:
        A summary with counts; `failed` names the classes left without descriptors.
    """
    if job.concurrency < 1 or job.max_attempts < 1:
        raise DescgenError("--concurrency and --max-attempts must be at least 1")
    if not job.classes:
        raise DescgenError("no classes to describe")
    job.prompts()  # a bad bank, instruction or question set stops here
    with exclusive(job.out, wait=job.wait):
        return asyncio.run(_generate(job))


async def _generate(job: GenerationJob) -> GenerationSummary:
    started = time.perf_counter()
    stats = Stats()
    written: list[DescriptorRecord] = []
    backend = job.backend or make_backend(job.params)
    try:
        existing = read_store_for_resume(job.out, job.classes, overwrite=job.overwrite,
                                         retry_failed=job.retry_failed)
        _check_same_setting(existing, job, record_params(job.params, backend), backend.chat,
                            job.prompts())
        done = {r.class_index for r in existing}
        prompts = job.prompts()
        states = [ClassState(i, name, prompts[i]) for i, name in enumerate(job.classes)
                  if i not in done]
        if not job.live:
            await _fill_cache_by_batch(job, backend, states, stats)
        with StoreAppender(job.out) as appender, _progress(job, len(states)) as bar:
            runner = _GenerationRun(job, backend, stats, appender, bar, written)
            await runner.run(states)
    finally:
        if job.backend is None:
            await backend.aclose()
    everything = existing + written
    written_indices = {r.class_index for r in written}
    failed = [r.class_name for r in sorted(everything, key=lambda r: r.class_index) if r.error]
    return GenerationSummary(
        classes=len(job.classes),
        already_done=len(existing),
        written=len(written),
        with_descriptors=sum(1 for r in everything if not r.error),
        failed=failed,
        unanswered=[s.name for s in states if s.index not in written_indices],
        requests=stats.requests,
        cache_hits=stats.cache_hits,
        tokens=stats.tokens,
        seconds=time.perf_counter() - started,
    )


async def _fill_cache_by_batch(job: GenerationJob, backend: Backend, states: list[ClassState],
                               stats: Stats) -> None:
    """Send every uncached first-round answer through the Batch API (or finish a batch)."""
    if not isinstance(backend, OpenAIBackend):
        raise DescgenError("--batch-api and --resume-batch need --backend openai")
    if len(backend.clients) > 1:
        raise DescgenError("--batch-api and --resume-batch use one server: give one --base-url")
    if job.resume_batch:
        manifests = [load_manifest(job.cache, job.resume_batch)]
    else:
        lines, items = _batch_requests(job, backend, states)
        if not lines:
            job.log("every answer is already cached; no batch needed")
            return
        manifests = await submit(backend.client, job.cache, backend.endpoint, lines, items,
                                 job.log)
    outcome = await run_batches(backend.client, job.cache, manifests, backend.chat,
                                job.poll_seconds, job.log)
    stats.requests += outcome.answered + len(outcome.failed)


def _batch_requests(job: GenerationJob, backend: OpenAIBackend,
                    states: list[ClassState]) -> tuple[list[str], dict[str, BatchItem]]:
    identity = backend.identity()
    lines: list[str] = []
    items: dict[str, BatchItem] = {}
    for state in states:
        for j, one in enumerate(state.prompts):
            prompt = one.sent(backend.chat)
            samples = [state.offsets[j] + i for i in range(job.params.samples)]
            keys = {i: response_key(identity, prompt, i) for i in samples}
            cached = job.cache.get_many(list(keys.values()))
            missing = [i for i, key in keys.items() if key not in cached]
            if not missing:
                continue
            seed = None if job.params.seed is None else job.params.seed + missing[0]
            body = backend.request_body(Query(prompt, n=len(missing), seed=seed))
            custom_id = f"class-{state.index}" + (f"-p{j}" if len(state.prompts) > 1 else "")
            items[custom_id] = BatchItem(class_index=state.index, class_name=state.name,
                                         keys=[keys[i] for i in missing])
            lines.append(request_line(custom_id, backend.endpoint, body))
    return lines, items


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
        "parser": params.parser,
    }


def _check_same_setting(
    existing: list[DescriptorRecord], job: GenerationJob, params: dict[str, Any], chat: bool,
    prompts: list[list[Prompt]],
) -> None:
    """Refuse to resume a store whose records another setting or another prompt made."""
    for record in existing:
        same = (record.backend, record.model, record.options, record.style, record.params) == (
            job.params.backend, job.params.model, job.record_options,
            job.style_record(record.class_index), params
        )
        if not same:
            raise DescgenError(
                f"{job.out}: class {record.class_index} ({record.class_name!r}) was generated with"
                " another setting (backend, model, prompt style or options, or parameters);"
                " use --overwrite or another --out"
            )
        if record.prompt_sha256 != prompts_sha256(prompts[record.class_index], chat):
            raise DescgenError(
                f"{job.out}: class {record.class_index} ({record.class_name!r}) was generated from"
                " another prompt text (an edited example bank, instruction or frame);"
                " use --overwrite or another --out"
            )


class _GenerationRun:
    """Rounds of requests: round 0 asks `samples` answers of every prompt, each later round one
    more of every prompt of the classes still without descriptors, up to `max_attempts` rounds
    (one round when greedy: temperature 0 gives the same answer again). Requests for all
    prompts of all classes share the concurrency limit; a class is written when its last
    prompt is answered."""

    def __init__(self, job: GenerationJob, backend: Backend, stats: Stats,
                 appender: StoreAppender, bar: tqdm, written: list[DescriptorRecord]) -> None:
        self.job, self.backend, self.stats = job, backend, stats
        self.appender, self.bar, self.written = appender, bar, written
        self.identity = backend.identity()
        self.params = record_params(job.params, backend)
        self.parser = PARSERS[job.params.parser]
        self.semaphore = asyncio.Semaphore(job.concurrency)

    async def run(self, states: list[ClassState]) -> None:
        samples = self.job.params.samples
        sampling = self.job.params.temperature > 0
        rounds = self.job.max_attempts if self.job.live and sampling else 1
        pending = states
        for round_no in range(rounds):
            wanted = list(range(samples)) if round_no == 0 else [samples + round_no - 1]
            last = round_no == rounds - 1
            units: list[Unit] = [(s, j) for s in pending for j in range(len(s.prompts))]
            left = {s.index: len(s.prompts) for s in pending}
            chunks = [units[i : i + self.backend.max_batch]
                      for i in range(0, len(units), self.backend.max_batch)]
            retry: list[ClassState] = []
            tasks = [asyncio.create_task(self._chunk(c, wanted)) for c in chunks]
            try:
                for finished in asyncio.as_completed(tasks):
                    for state, _ in await finished:
                        left[state.index] -= 1
                        if not left[state.index] and not self._settle(state, last):
                            retry.append(state)
            finally:
                for task in tasks:
                    task.cancel()
            pending = sorted(retry, key=lambda s: s.index)
            if not pending:
                return

    def _settle(self, state: ClassState, last: bool) -> bool:
        """Write the class's record if it is finished; False when it should be asked again."""
        answers = state.all_answers()
        truncated = any(a.finish_reason == "length" for a in answers)
        descriptors = self.parser.merge(
            self.parser.parse(a.text, state.name, truncated=a.finish_reason == "length",
                              dangling=prompt.dangling and not self.backend.chat)
            for prompt, prompt_answers in zip(state.prompts, state.answers)
            for a in prompt_answers)
        if not descriptors and state.error is None and not last:
            return False
        if not descriptors and not self.job.live:
            return True
        error = state.error if not descriptors else None
        if not descriptors and error is None:
            cut = f" (cut at max_tokens {self.job.params.max_tokens})" if truncated else ""
            error = f"no descriptors in {len(answers)} answers{cut}"
        record = DescriptorRecord(
            class_index=state.index,
            class_name=state.name,
            descriptors=descriptors,
            options=self.job.record_options,
            style=self.job.style_record(state.index),
            prompt_sha256=state.sha256(self.backend.chat),
            backend=self.job.params.backend,
            model=self.job.params.model,
            params=self.params,
            raw=[a.text for a in answers],
            finish_reasons=[a.finish_reason for a in answers],
            truncated=truncated,
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

    def _key(self, unit: Unit, sample: int) -> str:
        state, j = unit
        return response_key(self.identity, state.prompts[j].sent(self.backend.chat),
                            state.offsets[j] + sample)

    async def _chunk(self, chunk: list[Unit], wanted: list[int]) -> list[Unit]:
        keys = {(s.index, j, i): self._key((s, j), i) for s, j in chunk for i in wanted}
        cached = self.job.cache.get_many(list(keys.values()))
        missing: dict[tuple[int, int], list[int]] = {}
        for state, j in chunk:
            for i in wanted:
                answer = cached.get(keys[(state.index, j, i)])
                if answer is None:
                    missing.setdefault((state.index, j), []).append(i)
                else:
                    self.stats.cache_hits += 1
                    state.answers[j].append(answer)
        asking = [u for u in chunk if (u[0].index, u[1]) in missing]
        if asking and self.job.live:
            try:
                await self._ask(asking, missing, keys)
            except RequestFailed as exc:
                for state, _ in asking:
                    state.error = str(exc)
        return chunk

    async def _ask(self, asking: list[Unit], missing: dict[tuple[int, int], list[int]],
                   keys: dict[tuple[int, int, int], str]) -> None:
        """Ask for the missing samples; a server that returns fewer than `n` is asked again."""
        while asking:
            queries = [Query(s.prompts[j].sent(self.backend.chat), n=len(missing[(s.index, j)]),
                             seed=self._seed(s.offsets[j] + missing[(s.index, j)][0]))
                       for s, j in asking]
            completions = await self._send(queries)
            still: list[Unit] = []
            for (state, j), completion in zip(asking, completions):
                todo = missing[(state.index, j)]
                for offset, (sample, text) in enumerate(zip(todo, completion.texts)):
                    why = completion.reason(offset)
                    self.job.cache.put(keys[(state.index, j, sample)], text,
                                       {"class": state.name, "prompt": j,
                                        "sample": state.offsets[j] + sample}, why)
                    state.answers[j].append(Answer(text, why))
                missing[(state.index, j)] = todo[len(completion.texts):]
                if missing[(state.index, j)] and completion.texts:
                    still.append((state, j))
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
