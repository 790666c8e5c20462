"""The `descgen` command: Ctrl-C at any moment, during the seconds its imports take too, is one
line and exit status 130, at once; a refused run's one line is its last."""

from __future__ import annotations

import os
import sys

from descriptor_gen.errors import INTERRUPTED, REFUSED


def _leave_now(code: int) -> None:
    """After Ctrl-C or a one-line error every output is already whole (atomic writes, appended
    and flushed lines); skipping the interpreter's teardown keeps a half-imported library's
    exit handlers from holding the process up, and a library's threads (Ray's) from printing
    after the line that says what happened."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    try:
        from descriptor_gen.cli import main
    except KeyboardInterrupt:
        print("descgen: interrupted", file=sys.stderr)
        _leave_now(INTERRUPTED)
    code = main()
    if code in (INTERRUPTED, REFUSED):
        _leave_now(code)
    sys.exit(code)
