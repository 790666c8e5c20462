"""The `descgen` command: Ctrl-C at any moment, during the seconds its imports take too, is one
line and exit status 130."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from descriptor_gen.cli import main
    except KeyboardInterrupt:
        print("descgen: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
