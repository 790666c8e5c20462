"""Retries for requests to language-model servers, with tenacity.

The `openai` SDK's own retries are turned off (`max_retries=0`) so that retries do not multiply;
this module decides what is worth another try and how long to wait.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from descriptor_gen.secrets import redact

T = TypeVar("T")
_RETRY_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER = 120.0


class RequestFailed(Exception):
    """A request that will not succeed by asking again (4xx) or ran out of attempts."""


class MalformedResponse(Exception):
    """A 200 whose body is not a completion (not JSON, HTML, another shape): worth another try."""


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, 408/409, 5xx, timeouts and connection errors are worth another try."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (TimeoutError, ConnectionError, MalformedResponse,
                            openai.APIResponseValidationError))


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
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # neither seconds nor a date: the backoff schedule decides
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
    return redact(" ".join(f"{prefix}{message}{suffix}".split()))
