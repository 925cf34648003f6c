"""What guidance and stacking cost: the guided arm against the in-fill arm, and all arms stacked against the guided arm.

For each detector, on 8 anomalous test samples of its embedded dataset (default settings, bundled
checkpoints; models loaded, start-up excluded), the repair call with each arm alone and with all arms
stacked in one batch, as `arpro repair --arms baseline,infill,guided` runs them. "one after another"
is the three single-arm medians added. Repetitions are interleaved with alternating order; medians.
Bars: guided / in-fill <= 1.3 (gaussian, gpt2), 1.15 (fastflow), 1.6 (efficientad); stacked / guided <= 1.3.

The floor of guided / in-fill: the guided arm is the in-fill arm plus one detector forward and backward
pass on the 8 inputs per guided step, and nothing less can guide. "guided steps" counts the detector's
passes with a gradient during a guided repair (one of them the probe at the first input), "detector
fwd+bwd s" times one such pass on the 8 inputs, and the floor is (in-fill + guided steps x that) / in-fill.
"""

from __future__ import annotations

import statistics
import time

import torch

import arpro

GUIDED_OVER_INFILL = {"gaussian": 1.3, "gpt2": 1.3, "fastflow": 1.15, "efficientad": 1.6}
STACKED_OVER_GUIDED = 1.3


def detector_passes(run, x) -> tuple[int, float]:
    """Guided steps of a guided repair of ``x`` (detector passes with a gradient, the 1-input probe
    excluded), and the seconds of one forward and backward pass on ``x`` (median of 3)."""
    detector, seen = run.detector, []
    plain = detector.decompose
    detector.decompose = lambda z: (seen.append(z.shape[0]) if z.requires_grad else None) or plain(z)
    try:
        run.repair(x, arms=("guided",), progress=False)
    finally:
        del detector.decompose
    times = []
    for _ in range(3):
        z = x.detach().clone().requires_grad_(True)
        started = time.perf_counter()
        with torch.enable_grad():
            torch.autograd.grad(detector.decompose(z).score.sum(), z)
        times.append(time.perf_counter() - started)
    return sum(rows == len(x) for rows in seen), statistics.median(times)


def run(quick: bool) -> dict:
    rows = []
    names = ("gaussian",) if quick else ("gaussian", "autoencoder", "gpt2", "fastflow", "efficientad")
    for name in names:
        repeats = 2 if quick else 3 if name in ("fastflow", "efficientad") else 5
        run = arpro.resolve(arpro.RunSpec(detector=name), progress=False)
        x = run.dataset.test().anomalous().x[:8]

        def seconds(arms: tuple[str, ...]) -> float:
            started = time.perf_counter()
            run.repair(x, arms=arms, progress=False)
            return time.perf_counter() - started

        variants = {arm: (arm,) for arm in arpro.ARMS} | {"stacked": arpro.ARMS}
        for arms in variants.values():  # warm-up
            seconds(arms)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(repeats):
            for variant in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
                times[variant].append(seconds(variants[variant]))
        m = {v: statistics.median(t) for v, t in times.items()}
        guided_steps, pass_s = detector_passes(run, x)
        bar = GUIDED_OVER_INFILL.get(name)
        rows.append({"detector": name, "inputs": len(x), "guided s": m["guided"], "in-fill s": m["infill"],
                     "stacked s": m["stacked"], "guided / in-fill": m["guided"] / m["infill"],
                     "floor of guided / in-fill": (m["infill"] + guided_steps * pass_s) / m["infill"],
                     "guided / in-fill bar": bar, "met": None if bar is None else m["guided"] / m["infill"] <= bar,
                     "guided steps": guided_steps, "detector fwd+bwd s": pass_s,
                     "stacked / guided": m["stacked"] / m["guided"],
                     "one after another / guided": sum(m[arm] for arm in arpro.ARMS) / m["guided"],
                     f"stacked met (<= {STACKED_OVER_GUIDED})": m["stacked"] / m["guided"] <= STACKED_OVER_GUIDED})
    return {"repetitions": "5 (images: 3)" if not quick else 2, "rows": rows}
