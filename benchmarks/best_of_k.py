"""Best-of-K against one sample, paired: the same inputs, draw 0 of K being the one-sample repair.

    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector autoencoder --start noise --steps 200 --weight p4=3
    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector gpt2

Repairs every anomalous test input of the detector's embedded dataset with ``--samples 1``
and ``--samples K`` (16) and prints, side by side, the wall time of the three arms together,
the guided all-hold rate and P1 rate, and for K the share of inputs with a draw meeting every
constraint, the mean violation rate of the draws and their diversity. Bundled checkpoints.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import arpro
from arpro.settings import parse_weights
from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="autoencoder")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--start", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--weight", action="append", default=[])
    args = parser.parse_args()
    given = {k: v for k, v in {"start": args.start, "steps": args.steps}.items() if v is not None}
    run = arpro.resolve(arpro.RunSpec(detector=args.detector, settings={**given, "weights": parse_weights(args.weight)}))
    x = run.dataset.test().anomalous().x
    print(f"{args.detector}: {len(x)} anomalous inputs; {describe()}")
    print("K | wall s | guided all-hold | guided P1 | some draw feasible | draw violation rate | diversity")
    walls = {}
    for k in (1, args.samples):
        started = time.perf_counter()
        result = run.repair(x, settings=replace(run.spec.settings, samples=k), progress=False)
        walls[k] = time.perf_counter() - started
        guided = result.arms["guided"]
        draws = guided.draws
        extra = ("–", "–", "–") if draws is None else (f"{draws.feasible.float().mean():.3f}",
                                                     f"{draws.violation_rate.mean():.3f}", f"{draws.diversity.mean():.3f}")
        print(f"{k} | {walls[k]:.1f} | {guided.all_hold.float().mean():.3f} | {guided.holds['p1'].float().mean():.3f} | "
              + " | ".join(extra))
    print(f"wall ratio K={args.samples} / K=1: {walls[args.samples] / walls[1]:.1f}x")


if __name__ == "__main__":
    main()
