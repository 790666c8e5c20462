"""Hashes that identify inputs: texts, files by content, and file lists by name, size and date."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(paths: Iterable[str]) -> str:
    """Hash of a file list with sizes and mtimes: an edited or replaced file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()
