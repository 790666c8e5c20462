"""Writes that are all or nothing: a temp file beside the target, then a rename, so that an
interrupted run leaves the old file or the new one, never half of one; and a full disk, met
by any write, as one line that names the file and the space left."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from descriptor_gen.errors import DescgenError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(path: Path | str) -> DescgenError:
    """The error for a write that found its device full: the file, the space left there."""
    where = Path(path)
    folder = next((p for p in [where.parent, *where.parents] if p.is_dir()), Path("."))
    free = shutil.disk_usage(folder).free
    return DescgenError(f"{where}: no space left on its device ({free / 2**20:.1f} MiB free in"
                        f" {folder}); free some and run again (finished work is kept)")


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Around a write to `path`: a full disk or quota becomes `no_space`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise no_space(path) from exc
        raise
    except sqlite3.OperationalError as exc:
        if "disk is full" in str(exc) or "disk I/O error" in str(exc):
            raise no_space(path) from exc
        raise


def replace_atomically(path: Path, write_to: Callable[[str], None]) -> None:
    """Let `write_to` write a temp file (by name) beside `path`, then put it in its place."""
    with writing(path):
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
