"""The thread policy's choice against 1 and 2 threads, on the machine as found and with a second process loading it.

    OMP_NUM_THREADS=1 python benchmarks/threads.py [--detector gpt2] [--repeats 5]

In each phase (the machine as found, with whatever else runs on it; then with one busy-looping
process of ours started beside this one), it times the
guided repair of `arpro repair --detector NAME`'s default inputs at 1 thread, 2 threads and the
count `arpro.runtime.threads.choose_threads` picks then (with no thread variable set: the free cores),
interleaved, medians. The policy reads the one-minute load average, so the loaded phase waits
--settle seconds after starting the loader before it asks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from arpro import RunSpec, resolve
from arpro.io.run_spec import read_inputs
from arpro.runtime.threads import choose_threads
from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="gpt2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds for the load average to see the loader")
    args = parser.parse_args()
    for variable in ("ARPRO_NUM_THREADS", "OMP_NUM_THREADS"):  # the policy's own default, not a variable's
        os.environ.pop(variable, None)
    torch.set_num_threads(1)
    run = resolve(RunSpec(detector=args.detector), progress=False)
    batch, truth = read_inputs(run.dataset, None, 8)

    def seconds(threads: int) -> float:
        torch.set_num_threads(threads)
        started = time.perf_counter()
        run.repair(batch.x, truth=truth, ids=batch.ids, arms=("guided",), progress=False)
        return time.perf_counter() - started

    print(f"guided repair, {args.detector}, {len(batch.x)} inputs; {describe()}")
    print("| phase | load average (1 min) at start | policy picks | 1 thread s | 2 threads s | policy s | policy / best of 1, 2 |")
    print("|---|---|---|---|---|---|---|")
    for phase in ("as found", "plus one busy process"):
        loader = None
        if phase != "as found":
            loader = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(args.settle)
        try:
            load = os.getloadavg()[0]
            policy, reason = choose_threads()
            variants = {"1": 1, "2": 2, "policy": policy}
            seconds(1)  # warm-up
            times: dict[str, list[float]] = {v: [] for v in variants}
            for repeat in range(args.repeats):
                for variant in (list(variants) if repeat % 2 == 0 else list(variants)[::-1]):
                    times[variant].append(seconds(variants[variant]))
        finally:
            if loader is not None:
                loader.kill()
                loader.wait()
        m = {v: statistics.median(t) for v, t in times.items()}
        print(f"| {phase} | {load:.2f} | {policy} ({reason}) | {m['1']:.2f} | {m['2']:.2f} | {m['policy']:.2f} | "
              f"{m['policy'] / min(m['1'], m['2']):.2f} |", flush=True)
    print(f"{args.repeats} interleaved repetitions, medians; at the end: {describe()}")


if __name__ == "__main__":
    main()
