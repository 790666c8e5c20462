"""A dataset's high-level concept from the language model: WaffleCLIP's one question per dataset
("what do these classes have in common?"), through the response cache like any answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from descriptor_gen.describe.prompts import Prompt
from descriptor_gen.describe.styles import concept_from_answer, concept_prompt
from descriptor_gen.errors import DescgenError
from descriptor_gen.generation.backends import Backend, GenerationParams, Query, make_backend
from descriptor_gen.generation.cache import ResponseCache, response_key
from descriptor_gen.generation.retry import RequestFailed, with_retries

# WaffleCLIP's generate_concepts.py: greedy, max_tokens 300, no stop sequence, one answer.
CONCEPT_SAMPLING = {"temperature": 0.0, "max_tokens": 300, "stop": [], "samples": 1, "seed": None}


def concept_params(params: GenerationParams) -> GenerationParams:
    return params.model_copy(update=CONCEPT_SAMPLING)


def ask_concept(classes: list[str], params: GenerationParams, cache: ResponseCache,
                prompts_dir: Path, max_attempts: int = 4, backend: Backend | None = None,
                send: bool = True) -> tuple[str | None, int]:
    """The concept and the requests it took (0 when the answer was cached). `send=False`: only
    from the cache (None when it is not there)."""
    if not classes:
        raise DescgenError("no classes to find a concept for")
    sent_prompt = concept_prompt(classes, prompts_dir)
    return asyncio.run(_ask(sent_prompt, params, cache, max_attempts, backend, send))


async def _ask(prompt: Prompt, params: GenerationParams, cache: ResponseCache, max_attempts: int,
               backend: Backend | None, send: bool) -> tuple[str | None, int]:
    own = backend is None
    try:
        backend = backend or make_backend(concept_params(params))
    except DescgenError:
        if send:
            raise
        return None, 0
    try:
        sent = prompt.sent(backend.chat)
        key = response_key(backend.identity(), sent, 0)
        cached = cache.get(key)
        if cached is not None:
            return concept_from_answer(cached.text), 0
        if not send:
            return None, 0
        try:
            completion = (await with_retries(lambda: backend.complete([Query(sent)]),
                                             max_attempts, 0.5))[0]
        except RequestFailed as exc:
            raise DescgenError(f"concept: {exc}") from exc
        if not completion.texts:
            raise DescgenError("concept: the language model gave no answer")
        cache.put(key, completion.texts[0], {"concept": True}, completion.reason(0))
        return concept_from_answer(completion.texts[0]), 1
    finally:
        if own:
            await backend.aclose()
