"""Best-of-K against one sample, paired: the same inputs, draw 0 of K being the one-sample repair.

    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector autoencoder
    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector autoencoder --count 8
    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector autoencoder --profile
    OMP_NUM_THREADS=1 python benchmarks/best_of_k.py --detector autoencoder --arms guided --command

Repairs the first ``--count`` anomalous test inputs of the detector's embedded dataset (default:
all of them; ``--half cal|test``: only arpro.workflows.calibrate's calibration half or the other one) with
``--samples 1`` and ``--samples K`` (16), ``--repeats`` times, the two interleaved, and prints the
median wall time of the arms together (``--arms``, default all three), their ratio, the guided all-hold and P1 rates, and
for K the share of inputs with a draw meeting every constraint, the mean violation rate of the
draws and their diversity. ``--profile`` then runs K once under cProfile and says where its time
went. ``--command`` also times the whole ``arpro repair --count N --samples 1|K`` command (start-up,
the repair of ``--arms``, writing every draw), each in a fresh process, interleaved. Settings are the
detector's defaults unless given. Bundled checkpoints.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import arpro
from arpro.algorithm import service, best_of, engine
from arpro.algorithm.settings import parse_weights
from arpro.workflows.calibrate import calibration_ids
from machine import describe
from startup import wall_seconds


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def profile(run: arpro.Run, x: torch.Tensor, settings: arpro.RepairSettings) -> None:
    """Where one repair's time goes, by the functions that do the work (cumulative seconds)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(run.repair, x, settings=settings, progress=False)
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    scheduler = run.repairer.make_scheduler(settings.scheduler)

    def cumulative(function) -> float:
        code = function.__code__
        return sum(v[3] for k, v in stats.items() if k[:2] == (code.co_filename, code.co_firstlineno))

    parts = {
        "denoiser forward": cumulative(type(run.repairer).forward),
        "guidance gradient (detector forward + backward)": cumulative(engine._gradient),
        "per-sample noise draws": cumulative(engine._per_sample_noise),
        "scheduler step": cumulative(type(scheduler).step),
        "property metrics (detector forward, every draw)": cumulative(service.evaluate_repair),
        "best-of-K bookkeeping": cumulative(best_of.best_of),
    }
    print(f"profile of K={settings.samples} ({total:.1f} s under cProfile, {load_average()}):")
    for name, seconds in parts.items():
        print(f"  {name}: {seconds:.2f} s ({seconds / total:.0%})")
    rest = total - sum(parts.values())
    print(f"  the rest (Python loop, in-filling arithmetic, set-up): {rest:.2f} s ({rest / total:.0%})")


def time_command(args: argparse.Namespace, count: int) -> None:
    """``arpro repair`` with K = 1 and K, each in a fresh process, interleaved: what a user waits for."""
    if args.half or args.start or args.steps or args.weight:
        raise SystemExit("--command times the defaults on the first --count inputs: drop --half/--start/--steps/--weight")
    executable = str(Path(sys.executable).with_name("arpro"))  # the console script of this environment
    walls: dict[int, list[float]] = {1: [], args.samples: []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for k in walls:
                walls[k].append(wall_seconds([executable, "repair", "--detector", args.detector, "--count", str(count),
                                              "--samples", str(k), "--arms", args.arms, "--out", out, "--overwrite",
                                              "--quiet"]))
    ratios = [many / one for one, many in zip(walls[1], walls[args.samples])]
    print(f"arpro repair --count {count} --arms {args.arms}, whole command: K=1 median {statistics.median(walls[1]):.2f} s, "
          f"K={args.samples} median {statistics.median(walls[args.samples]):.2f} s, ratio median "
          f"{statistics.median(ratios):.1f}x (each repeat: {', '.join(f'{r:.1f}' for r in ratios)}), {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="autoencoder")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--count", type=int, help="the first N anomalous inputs (default: all)")
    parser.add_argument("--half", choices=("cal", "test"), help="only arpro.workflows.calibrate's calibration half, or the other")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--start", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--weight", action="append", default=[])
    parser.add_argument("--arms", default="baseline,infill,guided", help="comma-separated arms, run as one batch")
    parser.add_argument("--command", action="store_true", help="also time the arpro repair command end to end")
    args = parser.parse_args()
    arms = tuple(args.arms.split(","))
    given = {k: v for k, v in {"start": args.start, "steps": args.steps}.items() if v is not None}
    if args.weight:
        given["weights"] = parse_weights(args.weight)
    run = arpro.resolve(arpro.RunSpec(detector=args.detector, settings=given), progress=False)
    anomalous = run.dataset.test().anomalous()
    x = anomalous.x
    if args.half:
        ids = anomalous.ids or [str(i) for i in range(len(x))]
        calibration = set(calibration_ids(ids, 0.5))
        x = x[torch.tensor([(i in calibration) == (args.half == "cal") for i in ids])]
    x = x[: args.count]
    print(f"{args.detector}: {len(x)} anomalous inputs, settings {run.spec.settings}")
    print(describe())
    walls: dict[int, list[float]] = {1: [], args.samples: []}
    results = {}
    for _ in range(args.repeats):
        for k in walls:
            started = time.perf_counter()
            results[k] = run.repair(x, settings=replace(run.spec.settings, samples=k), arms=arms, progress=False)
            walls[k].append(time.perf_counter() - started)
    print(f"K | median wall s ({args.arms}) | guided s | guided all-hold | guided P1 | some draw feasible | "
          "draw violation rate | diversity")
    for k, result in results.items():
        guided = result.arms["guided"]
        draws = guided.draws
        extra = ("–", "–", "–") if draws is None else (f"{draws.feasible.float().mean():.3f}",
                                                     f"{draws.violation_rate.mean():.3f}", f"{draws.diversity.mean():.3f}")
        print(f"{k} | {statistics.median(walls[k]):.2f} | {guided.seconds:.2f} | {guided.all_hold.float().mean():.3f} | "
              f"{guided.holds['p1'].float().mean():.3f} | " + " | ".join(extra))
    ratios = [many / one for one, many in zip(walls[1], walls[args.samples])]
    print(f"wall ratio K={args.samples} / K=1: median {statistics.median(ratios):.1f}x "
          f"(each repeat: {', '.join(f'{r:.1f}' for r in ratios)}), {load_average()}")
    if args.command:
        time_command(args, len(x))
    if args.profile:
        profile(run, x, replace(run.spec.settings, samples=args.samples))


if __name__ == "__main__":
    main()
