"""Writes that are all or nothing: a temp file beside the target, then a rename, so that an
interrupted run leaves the old file or the new one, never half of one; and a full disk, met
by any write, as one line that names the file and the space left."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

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
    """Let `write_to` write a temp file (by name) beside `path`, then put it in its place, with
    the mode the file had, or a new file's (not the temp file's private 0600)."""
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write_to(tmp)
            os.chmod(tmp, _mode_for(path))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return new_file_mode()


@functools.lru_cache(maxsize=1)
def new_file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 less the process's umask (read from
    /proc, which leaves it untouched; elsewhere set and put back at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`replace_atomically` for a writer of an open binary file."""
    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    replace_atomically(path, write_to)


def write_text_atomically(path: Path, text: str) -> None:
    """`write_atomically` for a text, as UTF-8."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def save_figure_atomically(fig: Any, path: Path, dpi: int) -> None:
    """A matplotlib figure saved all or nothing, in the format its suffix names."""
    form = path.suffix.lower().lstrip(".")
    write_atomically(path, lambda handle: fig.savefig(handle, format=form, dpi=dpi))
