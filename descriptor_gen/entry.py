"""The `descgen` command: Ctrl-C at any moment, during the seconds its imports take too, is one
line and exit status 130, at once; a refused run's one line is its last."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

from descriptor_gen.errors import INTERRUPTED, REFUSED

_AGAIN_S = 0.01
_GIVE_UP_AFTER = 50  # interrupts swallowed: half a second or more of sending again


class CtrlC:
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, and is remembered.

    A library may catch it where it cannot pass it on: pydantic-core, interrupted while it
    builds a validator, reports it as "Exception ignored" and goes on with a broken validator.
    Such an interrupt prints no traceback and is sent again a moment later; where every one
    sent is swallowed (a loop that spends its time in `__del__`), the run stops as `kill -9`
    would, whose leftovers every command resumes from. An error that ends the run after Ctrl-C
    is reported as the interruption it follows. A SIGINT ignored at start (a job started with
    `&` by a non-interactive shell) stays ignored."""

    def __init__(self) -> None:
        self.pressed = False
        self.swallowed = 0
        self._unraisable = sys.unraisablehook

    def install(self) -> CtrlC:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._raise)
            sys.unraisablehook = self._swallowed
        return self

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def _swallowed(self, info: sys.UnraisableHookArgs) -> None:
        """Sent again from another thread, a moment later (raised here, it would be swallowed
        again with this hook's own traceback), as a real signal to the main thread, so that a
        wait there (a lock, a queue) is woken as by Ctrl-C itself."""
        if issubclass(info.exc_type, KeyboardInterrupt):
            self.swallowed += 1
            again = threading.Timer(_AGAIN_S, self._send_again
                                    if self.swallowed < _GIVE_UP_AFTER else _interrupted)
            again.daemon = True
            again.start()
        else:
            self._unraisable(info)

    def _send_again(self) -> None:
        if hasattr(signal, "pthread_kill"):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        else:  # Windows: no signal to a thread; the flag alone
            _thread.interrupt_main()


def _leave_now(code: int) -> NoReturn:
    """After Ctrl-C or a one-line error every output is already whole (atomic writes, appended
    and flushed lines); skipping the interpreter's teardown keeps a half-imported library's
    exit handlers from holding the process up, and a library's threads (Ray's) from printing
    after the line that says what happened."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _interrupted() -> NoReturn:
    print("descgen: interrupted", file=sys.stderr)
    _leave_now(INTERRUPTED)


def run() -> None:
    ctrl_c = CtrlC().install()
    try:
        from descriptor_gen.cli import main
        code = main()
    except KeyboardInterrupt:
        _interrupted()
    except BaseException as exc:  # pydantic-core's PanicException is not an Exception
        if not ctrl_c.pressed or isinstance(exc, SystemExit):
            raise
        _interrupted()
    if code in (INTERRUPTED, REFUSED):
        _leave_now(code)
    sys.exit(code)
