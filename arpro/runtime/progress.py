"""One progress helper, so every long loop and every long silent phase looks and behaves the same.

On a terminal: a rich live display, a bar per loop and a pulsing line per phase, shared when nested.
Else (a log, CI): plain lines, a loop's at its first step, every ``interval()`` seconds and at the
end; a phase's once it has run 2 s, every ``interval()`` seconds and when it ends. Time left comes from
the steps after the first, whose warm-up once made one step's pace predict 2,368 s for a 42 s loop
(rich's estimate on a terminal also starts at the second step).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
PLAIN_INTERVAL = 30.0  # seconds between plain progress lines; ARPRO_PROGRESS_INTERVAL overrides it
QUIET_SECONDS = 2.0  # a phase over sooner prints nothing in a log
_live: Progress | None = None  # the terminal's live display, shared by nested loops and phases


def interval() -> float:
    """Seconds between plain progress lines: ``ARPRO_PROGRESS_INTERVAL``, else ``PLAIN_INTERVAL``."""
    try:
        return max(0.0, float(os.environ["ARPRO_PROGRESS_INTERVAL"]))
    except (KeyError, ValueError):
        return PLAIN_INTERVAL


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(**fields)``; shows progress on stderr when enabled."""
    if not enabled:
        yield lambda **fields: None
    elif not sys.stderr.isatty():
        with _plain_lines(description, total) as advance:
            yield advance
    else:
        with _live_task(description, total) as (bar, task):
            yield lambda **fields: bar.update(task, advance=1, info=" ".join(f"{k}={v}" for k, v in fields.items()))


@contextmanager
def progress_phase(description: str, enabled: bool = True) -> Iterator[None]:
    """A stretch of work with no steps to count (a coreset search, a library's fit), so that none is silent."""
    if not enabled:
        yield
    elif not sys.stderr.isatty():
        with _heartbeat(description):
            yield
    else:
        with _live_task(description, None):
            yield


@contextmanager
def _live_task(description: str, total: int | None) -> Iterator[tuple[Progress, int]]:
    """A task on the terminal's live display, started here unless an enclosing loop or phase holds it."""
    global _live
    owner = _live is None
    if owner:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        _live = Progress(*columns, console=console, transient=True)
        _live.start()
    bar = _live
    task = bar.add_task(description, total=total, info="")
    try:
        yield bar, task
    finally:
        bar.remove_task(task)
        if owner:
            bar.stop()
            _live = None


@contextmanager
def _heartbeat(description: str) -> Iterator[None]:
    """Lines for a phase that lasts: none for one over within ``QUIET_SECONDS`` (a quick failure's
    ``error:`` line stays the only line), then started, every ``interval()`` seconds, and done."""
    started = time.monotonic()
    done, announced = threading.Event(), threading.Event()

    def beat() -> None:
        if done.wait(min(QUIET_SECONDS, interval())):
            return
        print(f"{description}: started", file=sys.stderr, flush=True)
        announced.set()
        while not done.wait(max(interval(), 0.05)):
            print(f"{description}: {time.monotonic() - started:.0f}s so far", file=sys.stderr, flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if announced.is_set():  # not if it failed
        print(f"{description}: done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


@contextmanager
def _plain_lines(description: str, total: int) -> Iterator[Callable[..., None]]:
    started = time.monotonic()
    done, shown, last, info = 0, 0, started, ""
    first = started  # when the first step ended: the rate is measured from there

    def line() -> None:
        nonlocal shown, last
        shown, last = done, time.monotonic()
        if done >= 2 and last > first:
            rate = (done - 1) / (last - first)
            left = f"{(total - done) / rate:.0f}s left" if done < total else f"{last - started:.0f}s"
            print(f"{description}: {done}/{total} {info}{rate:.3g}/s {left}", file=sys.stderr, flush=True)
        else:  # one step: its time, but no estimate from it alone
            print(f"{description}: {done}/{total} {info}first step {last - started:.1f}s", file=sys.stderr, flush=True)

    def advance(**fields: object) -> None:
        nonlocal done, info, first
        done += 1
        info = "".join(f"{k}={v} " for k, v in fields.items())
        if done == 1:
            first = time.monotonic()
        if done == 1 or time.monotonic() - last >= interval():
            line()

    yield advance
    if done != shown:
        line()
