"""Window-level detection quality of the time-series detectors on the embedded dataset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_detectors.py

A window is anomalous if any of its time steps is attacked. The decision threshold is the
95% split-conformal threshold of the held-out normal (validation) windows' scores; AUROC
needs no threshold. Models: the bundled checkpoints (or trained now if absent).
"""

from __future__ import annotations

import argparse

import torch

import arpro
from arpro import plugins
from arpro import conformal_threshold
from arpro_timeseries.evaluation import detection_metrics, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append", help="detector name (repeatable; default gpt2 and llama2)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = plugins.get("dataset", "process")()
    test = dataset.test()
    print(f"process test split: {len(test)} windows of {tuple(test.x.shape[1:])}, {int(test.labels.sum())} anomalous")
    print("| detector | precision | recall | F1 | AUROC | threshold |")
    print("|---|---|---|---|---|---|")
    for name in args.detector or ["gpt2", "llama2"]:
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        threshold = conformal_threshold(scores(detector, dataset.validation().x), 1 - args.alpha)
        m = detection_metrics(test.labels, scores(detector, test.x), threshold)
        print(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['auroc']:.3f} | {threshold:.2f} |")


if __name__ == "__main__":
    main()
