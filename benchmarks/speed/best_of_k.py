"""Best-of-K (16 draws per input) against one draw: wall time ratio and what the extra draws buy.

Repairs the first 16 anomalous test rows of the autoencoder's embedded table (quick: 4) with
``samples=1`` and ``samples=16``, all three arms, interleaved, 3 repetitions (quick: 1); medians.
Draw 0 of K is the one-draw repair, so the two are paired. Bundled checkpoints, default settings.
Bar: K=16 / K=1 <= 3.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import arpro

K = 16
BAR = 3.0


def run(quick: bool) -> dict:
    run = arpro.resolve(arpro.RunSpec(detector="autoencoder"), progress=False)
    x = run.dataset.test().anomalous().x[: 4 if quick else 16]
    walls: dict[int, list[float]] = {1: [], K: []}
    results = {}
    for _ in range(1 if quick else 3):
        for k in walls:
            started = time.perf_counter()
            results[k] = run.repair(x, settings=replace(run.spec.settings, samples=k), progress=False)
            walls[k].append(time.perf_counter() - started)
    rows = []
    for k, result in results.items():
        guided = result.arms["guided"]
        draws = guided.draws
        rows.append({"K": k, "median wall s (all arms)": statistics.median(walls[k]), "guided s": guided.seconds,
                     "guided all-hold": guided.all_hold.float().mean().item(),
                     "guided P1": guided.holds["p1"].float().mean().item(),
                     "some draw feasible": None if draws is None else draws.feasible.float().mean().item(),
                     "draw violation rate": None if draws is None else draws.violation_rate.mean().item(),
                     "diversity": None if draws is None else draws.diversity.mean().item()})
    ratios = [many / one for one, many in zip(walls[1], walls[K])]
    return {"inputs": len(x), "wall ratio K=16 / K=1 (median)": statistics.median(ratios), "bar": BAR,
            "met": statistics.median(ratios) <= BAR, "rows": rows}
