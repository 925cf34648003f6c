"""All three arms stacked in one batch, as `arpro repair` runs them, against the guided arm alone.

For each detector, on 8 anomalous test samples of its embedded dataset (default settings, bundled
checkpoints; models loaded, start-up excluded), the repair call with the guided arm alone, with
all arms stacked, and with the arms one after another (what the stacking replaced). Repetitions
are interleaved with alternating order; medians (bar: stacked <= 1.3x guided alone).
"""

from __future__ import annotations

import statistics
import time

import arpro

BAR = 1.3


def run(quick: bool) -> dict:
    repeats = 2 if quick else 7
    rows = []
    for name in ("gaussian",) if quick else ("gaussian", "autoencoder", "gpt2"):
        run = arpro.resolve(arpro.RunSpec(detector=name), progress=False)
        x = run.dataset.test().anomalous().x[:8]

        def seconds(arms: tuple[str, ...]) -> float:
            started = time.perf_counter()
            run.repair(x, arms=arms, progress=False)
            return time.perf_counter() - started

        variants = {"guided": lambda: seconds(("guided",)), "stacked": lambda: seconds(arpro.ARMS),
                    "sequential": lambda: sum(seconds((arm,)) for arm in arpro.ARMS)}
        for measure in variants.values():  # warm-up
            measure()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(repeats):
            for variant in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
                times[variant].append(variants[variant]())
        m = {v: statistics.median(t) for v, t in times.items()}
        rows.append({"detector": name, "inputs": len(x), "guided alone s": m["guided"], "stacked s": m["stacked"],
                     "one after another s": m["sequential"], "stacked / guided": m["stacked"] / m["guided"],
                     "one after another / guided": m["sequential"] / m["guided"],
                     f"met (<= {BAR})": m["stacked"] / m["guided"] <= BAR})
    return {"repetitions": repeats, "rows": rows}
