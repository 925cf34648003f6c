"""Guided repair against baseline and in-fill on the embedded surface set, for several repair settings.

    OMP_NUM_THREADS=1 python benchmarks/surface_repair.py [--seed 0]
        [--candidates '{"guidance_scale": 0.003}' '{"guidance_scale": 0.01, "t0": 0.4}']
        [--detector patchnn] [--limit 16] [--out runs/surface_repair.json]

The tool that chose patchnn's ``repair_defaults`` on the validation pictures (seed 0); the
reported figures come from ``arpro evaluate ... --option seed=1`` (docs/vision.md). Each
candidate (``RepairSettings`` fields; the rest from the detector's ``repair_defaults``) runs the CLI's path (``arpro.resolve`` of a ``RunSpec``: the bundled models, the detector's
``repair_defaults``), on the first ``--limit`` defective test pictures taken in turn from each
kind; batch b draws its noise from seed b·batch, the same for every candidate and arm. Printed per
candidate and arm: the medians of Ms and Mω̄ and the shares of pictures where P1 and all of P1–P4 hold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import arpro
from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the surface set's test pictures (0: validation)")
    parser.add_argument("--candidates", type=json.loads, nargs="+", default=[{"guidance_scale": 0.003}])
    parser.add_argument("--detector", default="patchnn")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/surface_repair.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    rows = []
    for candidate in args.candidates:
        run = arpro.resolve(arpro.RunSpec(detector=args.detector, dataset="surface", dataset_options={"seed": args.seed},
                                          settings=candidate), progress=False)
        bad = run.dataset.test().anomalous()
        x = bad.x[bad.spread(args.limit)]
        values: dict[str, dict[str, list]] = {}
        started = time.time()
        for start in range(0, len(x), args.batch):
            result = run.repair(x[start : start + args.batch], seed=start, progress=False)
            for arm, outcome in result.arms.items():
                into = values.setdefault(arm, {"Ms": [], "Momega_bar": [], "P1": [], "all": []})
                into["Ms"] += outcome.metrics["Ms"].tolist()
                into["Momega_bar"] += outcome.metrics["Momega_bar"].tolist()
                into["P1"] += outcome.holds["p1"].tolist()
                into["all"] += outcome.all_hold.tolist()
        row = {"settings": candidate, "n": len(x), "wall_s": round(time.time() - started, 1)}
        for arm, v in values.items():
            row[arm] = {"Ms": statistics.median(v["Ms"]), "Momega_bar": statistics.median(v["Momega_bar"]),
                        "P1": sum(v["P1"]) / len(v["P1"]), "all_hold": sum(v["all"]) / len(v["all"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| settings | arm | median Ms | median Mω̄ | P1 holds | all hold |\n|---|---|---|---|---|---|")
    for r in rows:
        for arm in ("baseline", "infill", "guided"):
            a = r[arm]
            print(f"| {json.dumps(r['settings'])} | {arm} | {a['Ms']:.4g} | {a['Momega_bar']:.4g} | {a['P1']:.2f} | {a['all_hold']:.2f} |")


if __name__ == "__main__":
    main()
