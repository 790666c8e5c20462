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
# The credentials of the servers this process was given (their URLs' user, password and query
# values): like the environment's key, known secrets, cut from any text whatever its source (a
# server that echoes them in an error body). Only ever added to.
_KNOWN: set[str] = set()


def remember_secrets(*values: str | None) -> None:
    """Add a configured URL's credentials to the texts `redact` cuts."""
    _KNOWN.update(v for v in values if v)


def redact(text: str) -> str:
    """`text` with API keys (the environment's own, and anything shaped like one), bearer
    tokens, `key=`/`token=` values, URL user:password parts and the configured servers'
    credentials (`remember_secrets`) replaced by `[redacted]`."""
    for name in _KEY_ENVS:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "[redacted]")
    for value in sorted(_KNOWN, key=len, reverse=True):
        text = re.sub(rf"(?<![\w]){re.escape(value)}(?![\w])", "[redacted]", text)
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
