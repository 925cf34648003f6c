"""How a command's run becomes an exit status: one ``error:`` line and 2 for a user error, one
``interrupted`` line and 128 + the signal for Ctrl-C or SIGTERM (after every staging folder and lock
was cleaned up on the way out), one line for a full disk, and the command's own status otherwise."""

from __future__ import annotations

import errno
import signal
import sys
import warnings
from collections.abc import Callable

from arpro.errors import ArproError

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_signalled: list[int] = []  # the signal that interrupted the run (typer turns Ctrl-C into a bare exit 130)


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that every ``finally`` on the way out runs."""
    _signalled.append(signum)
    raise KeyboardInterrupt


def fail(message: str, code: int = 2) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return code


def exit_code(run: Callable[[], object]) -> int:
    """Call ``run`` (the command line) and return its exit status, printing what ended it."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    # numpy's floating-point warnings ("overflow encountered in reduce") name its internals, not the user's data;
    # what overflowed is refused by the finiteness checks with one error naming the column instead
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    try:
        code = run()
    except ArproError as error:
        code = fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        _signalled.append(signal.SIGINT)
        code = None
    except OSError as error:
        if error.errno not in DISK_ERRORS:
            raise
        where = f" writing {error.filename}" if error.filename else ""  # staged writes were removed on the way out
        code = fail(f"{error.strerror or error}{where}: nothing was half-written; free space and run again")
    except Exception as error:  # typer's (click's) usage errors carry format_message and exit_code
        if not hasattr(error, "format_message"):
            raise
        ctx, message = getattr(error, "ctx", None), error.format_message()  # no message: help was printed
        code = fail(message + (f" (see `{ctx.command_path} --help`)" if ctx else "")) if message else error.exit_code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if _signalled:
        print("interrupted", file=sys.stderr)
        code = 128 + _signalled.pop(0)
        _signalled.clear()
    return code if isinstance(code, int) else 0
