"""On-disk response cache: SQLite in WAL mode, safe with concurrent writers and processes.

Keys are hashes of everything that changes an answer (see :func:`response_key`); values are
the raw answer texts and why each ended (`finish_reason`, so a truncated answer is known as one
on a cached re-run). The API key is never part of a key or a value.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from descriptor_gen.atomic import writing
from descriptor_gen.secrets import public_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    meta TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    finish_reason TEXT
)
"""


class Answer(NamedTuple):
    text: str
    finish_reason: str | None = None


def open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place.

    Switching to WAL and creating tables need a write lock that SQLite may refuse at once
    (without waiting out the busy timeout) while other connections open the same new file,
    so those first statements are retried. A file that is not a database (or not one of ours)
    is a broken cache: it is moved aside with a warning and a new one is started.
    """
    with writing(path):
        return _open_sqlite(path, schema)


def _open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    for attempt in range(100):
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(schema)
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            conn.close()
            quarantine(path, str(exc))
    raise sqlite3.OperationalError(f"{path}: database stayed locked")


def quarantine(path: Path, why: str) -> Path:
    """Move a broken cache file (and its SQLite companions) aside; caches are disposable."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, aside.with_name(aside.name + suffix))
    print(f"warning: {path}: not a usable cache ({' '.join(why.split())[:120]}); moved to"
          f" {aside.name}, starting a new one", file=sys.stderr)
    return aside


def response_key(identity: dict[str, Any], prompt: str | list[dict[str, str]], sample: int) -> str:
    """Hash of backend identity (backend, model, base URL host, api, sampling parameters),
    the full prompt or messages, and the sample index."""
    payload = json.dumps(
        {"identity": identity, "prompt": prompt, "sample": sample},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def base_url_host(base_url: str | None) -> str | None:
    """Only scheme, host and port go into keys and records: a URL's user, password, path or
    query may carry secrets. Several servers (comma-separated replicas) are named as their
    sorted set, so a re-run over the same servers hits the cache in whatever order they are
    listed and whichever of them answered."""
    urls = split_base_urls(base_url)
    if len(urls) <= 1:
        return public_url(base_url)
    return ",".join(sorted({public_url(u) or "" for u in urls}))


def split_base_urls(base_url: str | None) -> list[str]:
    """`--base-url A,B,...`: the servers, in the order given."""
    return [u.strip() for u in (base_url or "").split(",") if u.strip()]


class ResponseCache:
    """A key -> answer store in one SQLite file; one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_sqlite(self.path, _SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
            if "finish_reason" not in columns:  # a cache written before finish reasons were kept
                try:
                    conn.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise
            self._local.conn = conn
        return conn

    def get(self, key: str) -> Answer | None:
        row = self._connect().execute(
            "SELECT answer, finish_reason FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else Answer(*row)

    def get_many(self, keys: list[str]) -> dict[str, Answer]:
        found: dict[str, Answer] = {}
        conn = self._connect()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, answer, finish_reason FROM responses WHERE key IN ({marks})", chunk)
            found.update((key, Answer(text, why)) for key, text, why in rows)
        return found

    def put(self, key: str, answer: str, meta: dict[str, Any] | None = None,
            finish_reason: str | None = None) -> None:
        with writing(self.path):
            self._connect().execute(
                "INSERT OR REPLACE INTO responses (key, answer, meta, finish_reason) VALUES (?, ?, ?, ?)",
                (key, answer, json.dumps(meta or {}, sort_keys=True), finish_reason),
            )

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
