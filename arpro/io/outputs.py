"""Writing results whole or not at all, and leaving nothing behind.

Everything is written first to a staging path beside its target, ``.NAME.partial-XXXXXXXX``,
that the writing process holds an exclusive ``flock`` on, then moved into place. A run
killed with SIGKILL leaves its staging behind, unlocked; the next write of the same target
removes the unlocked leftovers that are arpro's own: a staging folder holds the marker file
``.arpro-staging``, a staging file has the exact name ``mkstemp`` gave it, and neither is ever
a symbolic link. Anything else that merely looks like staging (a user's ``.out.partial-notes``
folder) is left alone, and no lock is ever opened through a symbolic link. Missing parent
folders are created, with a note on stderr once the write succeeded; a write that fails removes them.
"""

from __future__ import annotations

import fcntl
import glob
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager
from pathlib import Path

from arpro.errors import ArproError

PARTIAL = ".partial-"
LOCK_FILE = ".arpro.lock"  # in a folder a run holds (arpro evaluate's --out)
STAGING_MARKER = ".arpro-staging"  # written into every staging folder arpro makes: only those are ever removed
STAGED_FILE = re.compile(r"[a-z0-9_]{8}\.tmp")  # what follows PARTIAL in a name mkstemp gave a staging file


def _try_lock(path: Path, flags: int = os.O_RDONLY, wait: bool = False) -> tuple[int, bool]:
    """An open descriptor of ``path`` (never through a symbolic link: ``O_NOFOLLOW``) and whether it
    holds the exclusive lock (False: another process holds it). The caller closes the descriptor either way."""
    fd = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return fd, False
    return fd, True


def is_own_staging(path: Path, target_name: str) -> bool:
    """Whether ``path`` is staging arpro made for ``target_name``: a real folder holding the marker
    file, or a real file with the name mkstemp gave it; never a symbolic link."""
    if path.is_symlink():
        return False
    if path.is_dir():
        marker = path / STAGING_MARKER
        return marker.is_file() and not marker.is_symlink()
    suffix = path.name.removeprefix(f".{target_name}{PARTIAL}")
    return path.is_file() and STAGED_FILE.fullmatch(suffix) is not None


def clear_stale_staging(target: Path) -> None:
    """Remove the staging of ``target`` left by killed runs: arpro's own (:func:`is_own_staging`),
    and only where no process holds its lock."""
    name = Path(target).name
    for leftover in Path(target).parent.glob(f".{glob.escape(name)}{PARTIAL}*"):
        if not is_own_staging(leftover, name):
            continue
        try:
            fd, locked = _try_lock(leftover)
        except OSError:
            continue
        try:
            if locked:  # else a live run is writing it
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        finally:
            os.close(fd)


@contextmanager
def staging(target: Path, *, directory: bool) -> Iterator[Path]:
    """A locked staging folder or file beside ``target``; it is removed afterwards unless the
    caller moved it (or its contents) into place."""
    target = Path(target).absolute()
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]  # deepest first
    try:
        if created:
            target.parent.mkdir(parents=True)
        clear_stale_staging(target)
        prefix = f".{target.name}{PARTIAL}"
        if directory:
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
            (path / STAGING_MARKER).write_text(f"{os.getpid()}\n")
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
            os.close(fd)
            path = Path(name)
        make_ordinary(path)
        lock, _ = _try_lock(path, wait=True)
    except OSError as error:
        raise ArproError(f"cannot write to {target}: {error.strerror or error}") from None
    try:
        yield path
        if created:  # only now: an error leaves no note, nor the folders made for it (below)
            print(f"note: created folder {target.parent}", file=sys.stderr)
        created = []
    finally:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        os.close(lock)
        for folder in (f for f in created if not any(f.iterdir())):  # deepest first: each emptied by the one before
            folder.rmdir()


def unmark(staged_folder: Path) -> None:
    """Take the marker out of a staging folder that is about to become the target itself."""
    (Path(staged_folder) / STAGING_MARKER).unlink(missing_ok=True)


@contextmanager
def staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a staging directory; on success move its files into ``out``, on failure discard it.

    Files of ``out`` that the new results do not name are left alone, so ``--overwrite``
    replaces results and never deletes anything else a user keeps there.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArproError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(p for p in out.iterdir() if p.name != LOCK_FILE) and not overwrite:
        raise ArproError(f"{out} already holds results; pass --overwrite to replace them")
    with staging(out, directory=True) as stage:
        yield stage
        out.mkdir(exist_ok=True)
        for item in sorted(p for p in stage.iterdir() if p.name != STAGING_MARKER):
            target = out / item.name
            if target.is_dir() and not item.is_dir():
                raise ArproError(f"cannot replace directory {target} with a file")
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)


def make_ordinary(path: Path) -> None:
    """Give a staged file or folder the permissions ``open``/``mkdir`` would (0666/0777 less the
    umask): mkstemp and mkdtemp make 0600/0700, and an output is an ordinary file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a staging file renamed into place)."""
    with staging(path, directory=False) as tmp:
        tmp.write_text(text)
        os.replace(tmp, path)


@contextmanager
def exclusive(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock (``.arpro.lock`` in it, naming the holder's process) while one
    run writes there; a second run gets an error naming that process. A lock path that is a
    symbolic link or not a regular file is refused, never opened through or truncated."""
    path = Path(folder) / LOCK_FILE
    try:
        fd, locked = _try_lock(path, os.O_RDWR | os.O_CREAT)
    except OSError as error:
        what = "a symbolic link" if path.is_symlink() else error.strerror or str(error)
        raise ArproError(f"cannot lock {folder}: {path} is {what}; arpro never writes through one, "
                         "remove it or choose another --out") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArproError(f"cannot lock {folder}: {path} is not a regular file; remove it or choose another --out")
    if not locked:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ArproError(f"{folder} is being written by another arpro {command} (process {holder}); "
                         "wait for it to finish or choose another --out")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def strict_json(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON (``allow_nan=False``): a NaN or infinite number is written as ``null``,
    and a top-level object lists where under ``"non_finite"`` (e.g. ``"inputs[0].score_bad"``), so a
    reader can tell a missing figure from one that overflowed."""
    where: list[str] = []

    def clean(item: Any, path: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            where.append(path or "value")
            return None
        if isinstance(item, dict):
            return {key: clean(v, f"{path}.{key}" if path else str(key)) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(item)]
        return item

    cleaned = clean(value, "")
    if where and isinstance(cleaned, dict):
        cleaned["non_finite"] = where
    return json.dumps(cleaned, indent=indent, allow_nan=False)
