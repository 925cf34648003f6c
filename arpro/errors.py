"""The one exception type that means "the user gave us something we cannot use"."""


class ArproError(Exception):
    """A problem with the user's input, options or files.

    The CLI prints its message as a single line on stderr and exits non-zero, so
    the message must say what was wrong and, where possible, what to do instead.
    """
