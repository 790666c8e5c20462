"""Secrets never leave the process: API keys, bearer tokens and URL credentials are cut from
every message that is written to a record or printed."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

_PATTERNS = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-[redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]+=*"), r"\1 [redacted]"),
    (re.compile(r"(?i)(api[_-]?key|token|access_token|password)(\"?\s*[:=]\s*\"?)[^\s\"&,;]+"),
     r"\1\2[redacted]"),
    (re.compile(r"(://)[^/\s@:]+(:[^/\s@]*)?@"), r"\1[redacted]@"),
]
_KEY_ENVS = ("OPENAI_API_KEY",)


def redact(text: str) -> str:
    """`text` with API keys (the environment's own, and anything shaped like one), bearer
    tokens, `key=`/`token=` values and URL user:password parts replaced by `[redacted]`."""
    for name in _KEY_ENVS:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "[redacted]")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def public_url(url: str | None) -> str | None:
    """A URL as it may be written down: scheme, host and port only (no user, password, path
    or query, any of which may carry a secret)."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.netloc:
        return redact(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, "", "", ""))
