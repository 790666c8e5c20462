"""One run at a time on an output: an exclusive lock beside each file a run appends to.

The lock is `fcntl.flock` on `<output>.lock`, which holds the owner's pid, host and start time
for the message. The kernel releases it when its process ends, however it ends, so the lock
left by a killed run is simply taken by the next one; the file stays (removing it would race
with a run that has just opened it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from descriptor_gen.atomic import writing
from descriptor_gen.errors import DescgenError


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


@contextmanager
def exclusive(output: Path, wait: bool = False) -> Iterator[None]:
    """Hold the output's lock for the block; another holder is an error naming it (or, with
    `wait`, is waited for)."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise DescgenError(f"{output}: another run is writing it ({_holder(fd)});"
                               " wait for it to finish, or run again with --wait") from exc
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner).encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not said who it is"
