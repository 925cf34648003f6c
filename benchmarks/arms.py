"""All arms as one stacked batch against the guided arm alone, as `arpro repair --arms` runs them.

    OMP_NUM_THREADS=1 python benchmarks/arms.py [--detector gaussian autoencoder gpt2] [--repeats 7]

For each detector, on the inputs `arpro repair --detector NAME` takes by default (8 anomalous
test samples, default settings, bundled checkpoints), it times the repair call (models loaded,
start-up excluded: it is the same for every arm set) of: the guided arm alone; all three arms
stacked in one batch, as arpro runs them (denoiser calls of one size, an arm's rows or the
repairer's ``min_batch`` if more, so that each arm is bit-identical to running it alone); the same
with the engine told that all rows are one arm (one denoiser call of all rows, padded to
``min_batch``); and the three arms one after another (each alone, summed: what the stacking
replaced). It then prints how far the one-call repairs are from each arm alone, and for which batch sizes M a
256-wide `nn.Linear` gives row results at M rows that differ from the same rows among 3M (run it
with MKL_CBWR=AUTO,STRICT to see MKL's reproducible mode), and what one forward of the tables' MLP
DDPM costs at 8 to 212 rows. Repetitions are interleaved, their order alternating, and medians are reported with
the ratios to the guided arm alone (bar: all arms <= 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

import arpro
import arpro.algorithm.service
from arpro import RunSpec, resolve
from arpro.io.run_spec import read_inputs
from arpro.runtime.threads import use_threads
from machine import describe

LOOP = arpro.algorithm.service.guided_masked_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", nargs="*", default=["gaussian", "autoencoder", "gpt2"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=8, help="inputs, as `arpro repair --count`")
    parser.add_argument("--threads", type=int, default=None, help="default: the thread policy (arpro.runtime.threads)")
    args = parser.parse_args()
    use_threads(args.threads)
    print(describe())
    print("| detector | inputs | guided alone s | all arms stacked s | one denoiser call s | one after another s | "
          "stacked / guided | one call / guided | one after another / guided | bar (stacked <= 1.3x) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gaps: dict[str, dict[str, float]] = {}
    for name in args.detector:
        run = resolve(RunSpec(detector=name), progress=False)
        batch, truth = read_inputs(run.dataset, None, args.count)

        def seconds(arms: tuple[str, ...]) -> float:
            started = time.perf_counter()
            run.repair(batch.x, truth=truth, ids=batch.ids, arms=arms, progress=False)
            return time.perf_counter() - started

        def one_call() -> float:  # the engine given every row at once
            with mock.patch.object(arpro.algorithm.service, "guided_masked_diffusion", lambda *a, **k: LOOP(*a, **{**k, "arm_rows": None})):
                return seconds(arpro.ARMS)

        alone = {arm: run.repair(batch.x, truth=truth, arms=(arm,), progress=False).arms[arm].x_fix for arm in arpro.ARMS}
        with mock.patch.object(arpro.algorithm.service, "guided_masked_diffusion", lambda *a, **k: LOOP(*a, **{**k, "arm_rows": None})):
            together = run.repair(batch.x, truth=truth, arms=arpro.ARMS, progress=False)
        gaps[name] = {arm: (together.arms[arm].x_fix - alone[arm]).abs().max().item() for arm in arpro.ARMS}
        variants = {"guided": lambda: seconds(("guided",)), "stacked": lambda: seconds(arpro.ARMS), "one call": one_call,
                    "sequential": lambda: sum(seconds((arm,)) for arm in arpro.ARMS)}
        for measure in variants.values():  # warm-up
            measure()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
            for variant in order:
                times[variant].append(variants[variant]())
        m = {v: statistics.median(t) for v, t in times.items()}
        ratio = m["stacked"] / m["guided"]
        print(f"| {name} | {len(batch.x)} | {m['guided']:.3f} | {m['stacked']:.3f} | {m['one call']:.3f} | "
              f"{m['sequential']:.3f} | {ratio:.2f} | {m['one call'] / m['guided']:.2f} | {m['sequential'] / m['guided']:.2f} | "
              f"{'met' if ratio <= 1.3 else 'not met'} |", flush=True)
    print(f"{args.repeats} interleaved repetitions, medians; at the end: {describe()}")
    for name, gap in gaps.items():
        print(f"{name}: one denoiser call for all rows against each arm alone, max |difference|: "
              + ", ".join(f"{arm} {value:.3g}" for arm, value in gap.items()))
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(256, 256), torch.randn(64, 256)
    with torch.no_grad():
        differ = [m for m in range(1, 64) if not torch.equal(linear(x[:m]), linear(torch.cat([x[:m]] * 3))[:m])]
    print(f"nn.Linear(256, 256), torch {torch.__version__}: rows at M differ from the same rows among 3M for M in {differ}")
    print(f"the tables' MLP DDPM, one forward, ms at M rows (median of 200, after 20 warm-up calls): {mlp_forward_ms()}")


def mlp_forward_ms(rows=(8, 16, 32, 64, 212)) -> dict[int, float]:
    """What a denoiser call of the bundled MLP DDPM's shape costs by its rows: why it pads calls to ``min_batch``."""
    repairer = arpro.get("repairer", "mlp-ddpm")(input_shape=[30]).eval()
    times = {}
    for m in rows:
        x, t = torch.randn(m, 30), torch.full((m,), 500)
        with torch.no_grad():
            for _ in range(20):
                repairer(x, t)
            samples = []
            for _ in range(200):
                started = time.perf_counter()
                repairer(x, t)
                samples.append(time.perf_counter() - started)
        times[m] = round(1e3 * statistics.median(samples), 2)
    return times


if __name__ == "__main__":
    main()
