"""Start-up of the arpro command line, as multiples of `python -c "import torch"` in the same run.

Each command runs in a fresh process, interleaved: every repetition runs all of them once, in
the same order, so a change in the machine's load hits them alike (7 repetitions; quick: 3).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARS = {"arpro --version": 0.1, "arpro list-plugins": 0.5, "arpro repair --detector gaussian": 2.5}


def commands(out: Path) -> dict[str, list[str]]:
    """What is timed, by label; ``arpro`` is the console script beside this Python."""
    arpro = str(Path(sys.executable).with_name("arpro"))
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "arpro --version": [arpro, "--version"],
        "arpro --help": [arpro, "--help"],
        "arpro list-plugins": [arpro, "list-plugins"],
        "arpro repair --detector gaussian": [arpro, "repair", "--detector", "gaussian", "--out", str(out),
                                             "--overwrite", "--quiet"],
    }


def wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(quick: bool) -> dict:
    repeats = 3 if quick else 7
    out = Path(tempfile.mkdtemp(prefix="arpro-startup-"))
    try:
        timed = commands(out / "repair")
        for command in timed.values():  # warm the file cache once, untimed
            wall_seconds(command)
        times: dict[str, list[float]] = {label: [] for label in timed}
        for _ in range(repeats):
            for label, command in timed.items():
                times[label].append(wall_seconds(command))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    torch_s = statistics.median(times["python -c 'import torch'"])
    rows = []
    for label, values in times.items():
        ratio = statistics.median(values) / torch_s
        bar = BARS.get(label)
        rows.append({"command": label, "median s": statistics.median(values), "min s": min(values),
                     "max s": max(values), "× import torch": ratio, "bar": bar,
                     "met": None if bar is None else ratio <= bar})
    return {"repetitions": repeats, "rows": rows}
