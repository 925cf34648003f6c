"""Seconds per repair on the embedded tabular default: paper settings vs arpro's fast defaults.

    python benchmarks/repair_speed.py [--rows 32] [--detector gaussian]

Prints, side by side in one run, the wall time of each arm (baseline, infill, guided) for
the paper's sampler (DDPM, all 1000 steps, from pure noise, gradient at x_t) and for the
default (DDIM, 50 steps, SDEdit from t0 = 0.6), and the guided/baseline and paper/default
ratios. Uses the bundled checkpoints, so nothing is trained.
"""

from __future__ import annotations

import argparse
import time

import torch

import arpro
from arpro.plugin_api import registry
from machine import describe

CONFIGS = {
    "paper (ddpm, 1000 steps, noise, xt)": arpro.RepairSettings(scheduler="ddpm", steps=1000, start="noise", guide_on="xt"),
    "default (ddim, 50 steps, sdedit 0.6, xt)": arpro.RepairSettings(),
    "ddim 50, sdedit, x0 guidance": arpro.RepairSettings(guide_on="x0"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--detector", default="gaussian")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = registry.get("dataset", "breast-cancer")()
    detector = arpro.obtain_model("detector", args.detector, data)
    repairer = arpro.obtain_model("repairer", "mlp-ddpm", data)
    x = data.test().anomalous().x[: args.rows]
    print(f"{args.rows} rows, detector {args.detector}; {describe()}")
    print(f"{'configuration':44s} {'baseline s':>11s} {'infill s':>9s} {'guided s':>9s} {'guided/base':>12s} {'guided Ms':>10s}")
    guided_seconds = {}
    for name, settings in CONFIGS.items():
        # each arm alone: arms run together share one batch and one wall time
        runs = {arm: arpro.repair(x, detector, repairer, settings=settings, arms=(arm,), progress=False) for arm in arpro.ARMS}
        s = {arm: r.arms[arm].seconds for arm, r in runs.items()}
        result = runs["guided"]
        guided_seconds[name] = s["guided"]
        ms = result.arms["guided"].metrics["Ms"].mean().item()
        print(f"{name:44s} {s['baseline']:11.3f} {s['infill']:9.3f} {s['guided']:9.3f} {s['guided'] / s['baseline']:12.2f} {ms:10.3f}")
    paper, default = list(guided_seconds.values())[:2]
    print(f"guided repair, paper settings / default settings: {paper / default:.1f}x")


if __name__ == "__main__":
    main()
