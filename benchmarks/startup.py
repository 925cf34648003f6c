"""Start-up cost of the ``arpro`` command line, against the cost of ``import torch`` (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 7]

Runs each command in a fresh process, interleaved: every repetition runs all of them once,
in the same order, so a change in the machine's load hits them alike. Prints the median wall
time of each, its ratio to ``python -c "import torch"``, and the issue's bar where it sets one.
Run it on an idle machine; the thread count it ran with is printed with the results.
"""

from __future__ import annotations

import argparse
import os
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
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="paired repetitions (at least 5)")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix="arpro-startup-"))
    try:
        timed = commands(out / "repair")
        for command in timed.values():  # warm the file cache once, untimed
            wall_seconds(command)
        times: dict[str, list[float]] = {label: [] for label in timed}
        for _ in range(args.repeats):
            for label, command in timed.items():
                times[label].append(wall_seconds(command))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    medians = {label: statistics.median(values) for label, values in times.items()}
    torch_seconds = medians["python -c 'import torch'"]
    print(f"{args.repeats} interleaved repetitions; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"torch.get_num_threads()={threads}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'command':36s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'x import torch':>15s} {'bar':>6s}")
    for label, median in medians.items():
        bar = BARS.get(label)
        verdict = "" if bar is None else f"{'<=' if median / torch_seconds <= bar else '> '}{bar}"
        print(f"{label:36s} {median:9.3f} {min(times[label]):7.3f} {max(times[label]):7.3f} "
              f"{median / torch_seconds:15.2f} {verdict:>6s}")


if __name__ == "__main__":
    main()
