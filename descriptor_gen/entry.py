"""The `descgen` command: Ctrl-C at any moment, during the seconds its imports take too, is one
line and exit status 130, at once."""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130


def _leave_now() -> None:
    """After Ctrl-C every output is already whole (atomic writes, appended lines); skipping the
    interpreter's teardown keeps a half-imported library's exit handlers from holding it up."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def run() -> None:
    try:
        from descriptor_gen.cli import main
    except KeyboardInterrupt:
        print("descgen: interrupted", file=sys.stderr)
        _leave_now()
    code = main()
    if code == INTERRUPTED:
        _leave_now()
    sys.exit(code)
