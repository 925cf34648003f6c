"""The exceptions a command ends with: one line on stderr, and its exit status."""


class ArproError(Exception):
    """A problem with the user's input, options or files (exit status 2).

    The CLI prints its message as a single line on stderr and exits non-zero, so
    the message must say what was wrong and, where possible, what to do instead.
    """

    exit_code = 2


class RunFailed(ArproError):
    """The run finished and wrote its results, but they cannot be used as asked (exit status 1):
    repairs that ended non-finite, or a calibration that certified no setting."""

    exit_code = 1
