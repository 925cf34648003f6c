"""The thread policy's choice against 1 and 2 threads, for a guided repair, on the machine as found.

Times the guided arm of `arpro repair --detector gpt2`'s inputs (8 anomalous windows, bundled
checkpoints) at 1 thread, 2 threads and the count `arpro.choose_threads` picks with no thread
variable set (the free cores: usable CPUs less the one-minute load average), interleaved with
alternating order, 5 repetitions (quick: 2); medians. The machine's load is part of the figure:
on a busy machine the policy should pick fewer threads and lose nothing by it.
"""

from __future__ import annotations

import os
import statistics
import time
import torch

import arpro


def run(quick: bool) -> dict:
    run = arpro.resolve(arpro.RunSpec(detector="gpt2"), progress=False)
    x = run.dataset.test().anomalous().x[:8]
    before = torch.get_num_threads()
    saved = {v: os.environ.pop(v) for v in ("ARPRO_NUM_THREADS", "OMP_NUM_THREADS") if v in os.environ}
    load = os.getloadavg()[0]
    policy, reason = arpro.choose_threads()  # the policy's own default, not a variable's
    os.environ.update(saved)

    def seconds(threads: int) -> float:
        torch.set_num_threads(threads)
        started = time.perf_counter()
        run.repair(x, arms=("guided",), progress=False)
        return time.perf_counter() - started

    variants = {"1": 1, "2": 2, "policy": policy}
    try:
        seconds(1)  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(2 if quick else 5):
            for variant in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
                times[variant].append(seconds(variants[variant]))
    finally:
        torch.set_num_threads(before)
    m = {v: statistics.median(t) for v, t in times.items()}
    return {"load average (1 min) at the start": load, "policy picks": f"{policy} ({reason})",
            "1 thread s": m["1"], "2 threads s": m["2"], "policy s": m["policy"],
            "policy / best of 1 and 2": m["policy"] / min(m["1"], m["2"])}
