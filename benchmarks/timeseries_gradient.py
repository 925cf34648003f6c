"""The time-series detectors' guidance gradient: "fixed-target" against "exact", side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_gradient.py [--dataset-seed 1] [--n 64]

For ``--n`` anomalous test windows of the simulated plant (seed 1: the run settings are chosen on)
and each bundled detector: the cosine similarity of the two gradients of s(x) per window
(quantiles), and the median wall time of one gradient for a batch of 16 windows (and of the
variability score's share of it: its forward and backward alone), interleaved, with
the diffusion-ts denoiser's forward on the same batch for scale (a guided step costs the denoiser
forward plus one gradient).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import arpro
from arpro.plugin_api import registry
from machine import describe


def gradient(detector: arpro.Detector, x: torch.Tensor, mode: str) -> torch.Tensor:
    detector.config["gradient"] = mode
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(detector.decompose(x).score.sum(), x)
    return grad


def variability_gradient(detector: arpro.Detector, x: torch.Tensor) -> torch.Tensor:
    """The gradient of the weighted variability score alone, the part of ``alpha`` without a network."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(detector._variability(x).sum(), x)
    return grad


def seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-seed", type=int, default=1)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe())
    dataset, trained_on = registry.get("dataset", "process")(seed=args.dataset_seed), registry.get("dataset", "process")()
    test = dataset.test()
    x = test.x[test.labels == 1][: args.n]
    batch = x[:16]
    repairer = arpro.obtain_model("repairer", "diffusion-ts", trained_on, progress=False).eval().requires_grad_(False)
    t = torch.full((len(batch),), 500, dtype=torch.long)
    with torch.no_grad():
        denoiser = seconds(lambda: repairer(batch, t), args.repeats)
    print(f"{len(x)} anomalous windows of process(seed={args.dataset_seed}); diffusion-ts forward, 16 windows: "
          f"{denoiser * 1e3:.1f} ms")
    print("| detector | cosine min / 5% / median | exact gradient ms | fixed-target ms | of which variability ms "
          "| (denoiser + exact) / denoiser | (denoiser + fixed-target) / denoiser |")
    print("|---|---|---|---|---|---|---|")
    for name in ("gpt2", "llama2"):
        detector = arpro.obtain_model("detector", name, trained_on, progress=False).eval().requires_grad_(False)
        cosine = torch.nn.functional.cosine_similarity(gradient(detector, x, "exact").flatten(1),
                                                       gradient(detector, x, "fixed-target").flatten(1))
        exact = seconds(lambda: gradient(detector, batch, "exact"), args.repeats)
        fixed = seconds(lambda: gradient(detector, batch, "fixed-target"), args.repeats)
        variability = seconds(lambda: variability_gradient(detector, batch), args.repeats)
        q = torch.quantile(cosine, torch.tensor([0.0, 0.05, 0.5])).tolist()
        print(f"| {name} | {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f} | {exact * 1e3:.1f} | {fixed * 1e3:.1f} | "
              f"{variability * 1e3:.1f} | "
              f"{(denoiser + exact) / denoiser:.2f} | {(denoiser + fixed) / denoiser:.2f} |")


if __name__ == "__main__":
    main()
