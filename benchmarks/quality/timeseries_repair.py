"""Guided against unguided repair on the embedded plant (seed 2), in the spirit of the paper's Tables 2 and 3.

Takes 32 anomalous test windows of `process` (evenly spaced; quick: 8, gpt2 only), the bundled
gpt2 / llama2 detectors and diffusion-ts repairer (trained on the seed-0 plant) and repairs them
at the detector's default settings, all arms with the same seeds. Per arm: means and medians of
Ms, Md, Momega, Momega_bar (lower is better), TNR (repairs scoring below the 95% split-conformal
threshold of the held-out normal windows), the shares where P1 and all properties hold, and
seconds per input. Bars: guided P1 >= 0.95, TNR >= 0.9, guided Momega < infill's in >= 70% of windows.
"""

from __future__ import annotations

import statistics

import torch

import arpro

METRICS = ("Ms", "Md", "Momega", "Momega_bar")
BATCH = 8


def run(quick: bool) -> dict:
    dataset = arpro.get("dataset", "process")(seed=2)
    trained_on = arpro.get("dataset", "process")()  # the bundled models are those of the seed-0 plant
    repairer = arpro.obtain_model("repairer", "diffusion-ts", trained_on, progress=False)
    anomalous = dataset.test().anomalous()
    pick = torch.linspace(0, len(anomalous) - 1, min(8 if quick else 32, len(anomalous))).round().long().unique()
    x = anomalous.x[pick].contiguous()
    rows, paired = [], {}
    for name in ("gpt2",) if quick else ("gpt2", "llama2"):
        detector = arpro.obtain_model("detector", name, trained_on, progress=False)
        threshold = arpro.conformal_threshold(arpro.scores(detector, dataset.validation().x), 0.95)
        settings = arpro.RepairSettings.for_detector(detector)
        per_arm: dict[str, dict[str, list]] = {}
        seconds = {arm: 0.0 for arm in arpro.ARMS}
        for start in range(0, len(x), BATCH):
            result = arpro.repair(x[start:start + BATCH], detector, repairer, settings=settings, seed=start,
                                  progress=False)
            for arm, r in result.arms.items():
                into = per_arm.setdefault(arm, {m: [] for m in (*METRICS, "score", "p1", "all")})
                for m in METRICS:
                    into[m] += r.metrics[m].tolist()
                into["score"] += r.score.tolist()
                into["p1"] += r.holds["p1"].float().tolist()
                into["all"] += r.all_hold.float().tolist()
                seconds[arm] += r.seconds
        for arm, v in per_arm.items():
            rows.append({"detector": name, "arm": arm, "windows": len(x),
                         **{f"{m} mean": statistics.fmean(v[m]) for m in METRICS},
                         **{f"{m} median": statistics.median(v[m]) for m in METRICS},
                         "TNR": statistics.fmean(s < threshold for s in v["score"]),
                         "P1 holds": statistics.fmean(v["p1"]), "all hold": statistics.fmean(v["all"]),
                         "s per input (arms in one batch)": seconds[arm] / len(x)})
        guided, infill = torch.tensor(per_arm["guided"]["Momega"]), torch.tensor(per_arm["infill"]["Momega"])
        paired[name] = (guided < infill).double().mean().item()
    return {"guided Momega < infill's, share of windows": paired, "rows": rows}
