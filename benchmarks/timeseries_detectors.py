"""Window-level detection quality of the time-series detectors on the embedded plant, per anomaly kind.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_detectors.py                 # plant seed 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_detectors.py --dataset-seed 1  # the tuning run

A window is anomalous if any of its time steps is attacked. The decision threshold is the
95% split-conformal threshold of the held-out normal (validation) windows' scores; AUROC
needs no threshold. Per kind, the windows overlapping an attack of that kind (or its aftermath,
until the plant has settled) are scored against all normal test windows (AUROC, and F1 at the
same threshold). Models: the bundled
checkpoints (trained on the seed-0 plant), or ``--detector-ckpt NAME=FILE``. Settings were
chosen on ``--dataset-seed 1``; seed 2 (the default here) was used for nothing but reporting.

A second table shows how far a repair that keeps the cells outside ω exactly (in-filling to the
last step, P2) can bring TNR: per share of each window's cells in ω (its top cells by α), the
share of anomalous windows whose other cells alone score below the threshold as the input is. (A
repair of ω also changes the kept cells' reconstruction error, usually lowering it, so this is
not a strict bound.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import arpro
from arpro import conformal_threshold, scores
from arpro.plugin_api import registry
from arpro_timeseries.evaluation import detection_metrics
from arpro_timeseries.simulate import ATTACK_KINDS
from machine import describe

OMEGA_SHARES = (0.1, 0.2, 0.3, 0.5)


def windows_of_kind(dataset, test: arpro.Split) -> dict[str, torch.Tensor]:
    """For each attack kind, a boolean over the test windows: does the window overlap such an attack?"""
    starts = torch.tensor([int(i.split("@")[1]) for i in test.ids])
    out = {}
    for kind in ATTACK_KINDS:
        hit = torch.zeros(len(test), dtype=torch.bool)
        for a in (a for a in dataset.attacks() if a["kind"] == kind):
            hit |= (starts < a["settled"]) & (starts + dataset.window > a["start"])
        out[kind] = hit
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append", help="detector name (repeatable; default gpt2 and llama2)")
    parser.add_argument("--detector-ckpt", action="append", default=[], help="NAME=FILE: use this checkpoint for NAME")
    parser.add_argument("--dataset-seed", type=int, default=2, help="seed of the simulated plant (2: never used for choosing)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    checkpoints = dict(item.split("=", 1) for item in args.detector_ckpt)
    dataset = registry.get("dataset", "process")(seed=args.dataset_seed)
    trained_on = registry.get("dataset", "process")()  # the bundled models are those of the seed-0 plant
    test = dataset.test()
    kinds = windows_of_kind(dataset, test)
    normal = test.labels == 0
    print(f"process(seed={args.dataset_seed}) test split: {len(test)} windows of {tuple(test.x.shape[1:])}, "
          f"{int(test.labels.sum())} anomalous; per kind: " + ", ".join(f"{k} {int(v.sum())}" for k, v in kinds.items()))
    print("| detector | kind | windows | precision | recall | F1 | AUROC | threshold |")
    print("|---|---|---|---|---|---|---|---|")
    ceilings = {}
    for name in args.detector or ["gpt2", "llama2"]:
        path = Path(checkpoints[name]) if name in checkpoints else None
        detector = arpro.obtain_model("detector", name, trained_on, checkpoint_path=path, progress=False)
        threshold = conformal_threshold(scores(detector, dataset.validation().x), 1 - args.alpha)
        s = scores(detector, test.x)
        rows = [("all", torch.ones(len(test), dtype=torch.bool))] + [(k, v | normal) for k, v in kinds.items()]
        for kind, keep in rows:
            m = detection_metrics(test.labels[keep], s[keep], threshold)
            count = int(test.labels[keep].sum())
            print(f"| {name} | {kind} | {count} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                  f"{m['auroc']:.3f} | {threshold:.2f} |")
        ceilings[name] = kept_below(detector, test.x[test.labels == 1], threshold)
    print("\nWith omega_bar kept: anomalous windows whose cells outside omega (the top share by alpha) already "
          "score below the threshold")
    print("| detector | " + " | ".join(f"omega = top {share:.0%}" for share in OMEGA_SHARES) + " |")
    print("|---|" + "---|" * len(OMEGA_SHARES))
    for name, shares in ceilings.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in shares) + " |")


def kept_below(detector: arpro.Detector, x: torch.Tensor, threshold: float) -> list[float]:
    """For each omega share, the share of windows ``x`` whose cells outside omega sum below ``threshold``."""
    with torch.no_grad():
        parts = [detector.decompose(b) for b in x.split(64)]
    alpha, beta = torch.cat([p.alpha.flatten(1) for p in parts]), torch.cat([p.beta for p in parts])
    shares = []
    for share in OMEGA_SHARES:
        top = torch.quantile(alpha, 1 - share, dim=1, keepdim=True)
        shares.append(float(((alpha * (alpha < top)).sum(1) + beta < threshold).float().mean()))
    return shares


if __name__ == "__main__":
    main()
