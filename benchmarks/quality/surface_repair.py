"""Guided repair against baseline and in-fill on the embedded surface set (seed 1), patchnn's defaults.

Runs the CLI's path (`arpro.resolve` of a `RunSpec`: the bundled patchnn and DDPM, the
detector's repair defaults, chosen on seed 0) on the first 16 defective test pictures (quick: 4)
taken in turn from each kind; batch b draws its noise from seed b x 8, the same for every arm.
Per arm: medians of Ms and Momega_bar, and the shares of pictures where P1 and all of P1-P4 hold.
"""

from __future__ import annotations

import statistics

import arpro

BATCH = 8


def run(quick: bool) -> dict:
    run = arpro.resolve(arpro.RunSpec(detector="patchnn", dataset="surface", dataset_options={"seed": 1}),
                        progress=False)
    bad = run.dataset.test().anomalous()
    x = bad.x[bad.spread(4 if quick else 16)]
    values: dict[str, dict[str, list]] = {}
    for start in range(0, len(x), BATCH):
        result = run.repair(x[start:start + BATCH], seed=start, progress=False)
        for arm, outcome in result.arms.items():
            into = values.setdefault(arm, {"Ms": [], "Momega_bar": [], "P1": [], "all": []})
            into["Ms"] += outcome.metrics["Ms"].tolist()
            into["Momega_bar"] += outcome.metrics["Momega_bar"].tolist()
            into["P1"] += outcome.holds["p1"].tolist()
            into["all"] += outcome.all_hold.tolist()
    rows = [{"arm": arm, "n": len(x), "median Ms": statistics.median(v["Ms"]),
             "median Momega_bar": statistics.median(v["Momega_bar"]), "P1 holds": statistics.fmean(v["P1"]),
             "all hold": statistics.fmean(v["all"])} for arm, v in values.items()]
    return {"settings": run.spec.settings.to_dict(), "rows": rows}
