"""Writes that are all or nothing: a temp file beside the target, then a rename, so that an
interrupted run leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_atomically(path: Path, write_to: Callable[[str], None]) -> None:
    """Let `write_to` write a temp file (by name) beside `path`, then put it in its place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`replace_atomically` for a writer of an open binary file."""
    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    replace_atomically(path, write_to)
