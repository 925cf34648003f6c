"""One progress helper, so every long loop looks and behaves the same.

On a terminal it is a rich live bar. When stderr is not a terminal (a log file, a
background job, CI) it prints a plain line at the first step, every ``PLAIN_INTERVAL``
seconds and at the end: step, the loop's own fields (e.g. loss), rate and time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
PLAIN_INTERVAL = 30.0  # seconds between plain progress lines


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(**fields)``; shows progress on stderr when enabled."""
    if not enabled:
        yield lambda **fields: None
    elif not sys.stderr.isatty():
        with _plain_lines(description, total) as advance:
            yield advance
    else:
        with _live_bar(description, total) as advance:
            yield advance


@contextmanager
def _live_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(**fields: object) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=1, info=info)

        yield advance


@contextmanager
def _plain_lines(description: str, total: int) -> Iterator[Callable[..., None]]:
    started = time.monotonic()
    done, shown, last, info = 0, 0, started, ""

    def line() -> None:
        nonlocal shown, last
        shown, last = done, time.monotonic()
        elapsed = last - started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f"{(total - done) / rate:.0f}s left" if 0 < rate and done < total else f"{elapsed:.0f}s"
        print(f"{description}: {done}/{total} {info}{rate:.3g}/s {left}", file=sys.stderr, flush=True)

    def advance(**fields: object) -> None:
        nonlocal done, info
        done += 1
        info = "".join(f"{k}={v} " for k, v in fields.items())
        if done == 1 or time.monotonic() - last >= PLAIN_INTERVAL:
            line()

    yield advance
    if done != shown:
        line()
