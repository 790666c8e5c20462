"""The one exception type for problems a user can cause (bad files, options, names)."""


class DescgenError(Exception):
    """A user-facing error: the message names the file, line, class or key at fault.

    The CLI prints it as one line and exits with status 2; anything else is a bug and keeps
    its traceback.
    """


REFUSED = 2  # the exit status of a DescgenError's one line
INTERRUPTED = 130  # the exit status after Ctrl-C
