"""Finds the benchmarks, runs one, and records with its figures what a reader needs to trust them.

A benchmark is a module ``benchmarks/<group>/<name>.py`` with a docstring (its first line is the
description) and ``run(quick: bool) -> dict`` returning JSON-able figures (a table as a list of row
dicts, under ``"rows"`` or a name of its own). Nothing else: the harness adds the revision, machine, threads, versions,
command and wall time, and writes ``benchmarks/results/<group>/<name>.json``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("speed", "quality")
RESULTS = Path(__file__).resolve().parent / "results"
# where ../shared/data lives: beside the repository unless the variable says otherwise
SHARED_DATA = Path(os.environ.get("ARPRO_SHARED_DATA", ROOT.parent / "shared" / "data"))
PACKAGES = ("torch", "torchvision", "anomalib", "diffusers", "transformers")
UNAVAILABLE = 3  # the exit status of a benchmark that cannot run here: `run all` goes on without it


class BenchmarkError(Exception):
    """A benchmark that cannot run here (missing data, no GPU): one line, no traceback."""


def shared_data(name: str) -> Path:
    """``../shared/data/NAME``, or a BenchmarkError saying where it was looked for."""
    path = SHARED_DATA / name
    if not path.is_dir():
        raise BenchmarkError(f"needs {path} (set ARPRO_SHARED_DATA to the folder holding {name}/)")
    return path


def discover() -> dict[str, tuple[str, str]]:
    """Every benchmark: name -> (group, description), in group order, then by name."""
    found = {}
    for group in GROUPS:
        for path in sorted((Path(__file__).parent / group).glob("*.py")):
            if path.stem != "__init__":  # read, not imported: listing needs no torch
                docstring = ast.get_docstring(ast.parse(path.read_text())) or "(no description)"
                found[path.stem] = (group, docstring.splitlines()[0])
    return found


def revision() -> tuple[str, bool]:
    """The commit checked out, and whether the tree had uncommitted changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short=12", "HEAD") or "unknown", dirty


def machine() -> dict:
    """CPU model, cores, memory and GPU: what the figures depend on; the load average says how busy it was."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        ram_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    except (OSError, StopIteration):  # not Linux
        ram_kb = 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "ram_gb": round(ram_kb / 2**20, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def versions() -> dict[str, str | None]:
    """Python and the libraries the figures depend on, arpro and every installed arpro plugin."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    plugins = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()
                      if (d.metadata["Name"] or "").lower().startswith("arpro")})
    return {"python": platform.python_version(), **{name: version(name) for name in (*PACKAGES, *plugins)}}


def command(name: str, quick: bool) -> str:
    """The command that reproduces this run, with the thread variable it ran under."""
    threads = os.environ.get("OMP_NUM_THREADS")
    words = ["python", "-m", "benchmarks", "run", name, *(["--quick"] if quick else [])]
    return " ".join([*([f"OMP_NUM_THREADS={threads}"] if threads else []), *map(shlex.quote, words)])


def run(name: str, quick: bool, results: Path = RESULTS, note: str | None = None) -> Path:
    """Run one benchmark and write its result; returns the file written."""
    import torch

    group, description = discover()[name]
    module = importlib.import_module(f"benchmarks.{group}.{name}")
    rev, dirty = revision()
    record = {"name": name, "group": group, "description": description, "command": command(name, quick),
              "quick": quick, "revision": rev, "dirty": dirty, "machine": machine(),
              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "versions": versions(), "note": note, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    started = time.perf_counter()
    record["measurements"] = module.run(quick)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out = results / group / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return out


def run_all(quick: bool, results: Path, note: str | None) -> int:
    """Each benchmark in a fresh process (so none inherits another's thread count); how many failed,
    not counting those that cannot run here (no GPU, no shared data), which have said why."""
    failed = 0
    for name in discover():
        args = [sys.executable, "-m", "benchmarks", "run", name, "--results", str(results),
                *(["--quick"] if quick else []), *(["--note", note] if note else [])]
        failed += subprocess.run(args, cwd=ROOT, check=False).returncode not in (0, UNAVAILABLE)
    return failed
