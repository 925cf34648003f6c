"""Image and pixel AUROC per defect kind of the image detectors on the embedded surface set
(and, with --kolektor, on the real KolektorSDD in MVTec layout).

    OMP_NUM_THREADS=1 python benchmarks/surface_detectors.py [--seed 1] [--detectors patchnn fastflow efficientad]
        [--kolektor ../shared/data/kolektorsdd] [--option 'patchnn_scales=[[1,16],[16,1]]'] [--out runs/surface_detectors.json]

Each detector is obtained as the CLI does (``arpro.obtain_model``, seed 0): the bundled
checkpoint where one exists (patchnn on surface at 64 px), otherwise fitted with its defaults
on the dataset's normal training pictures. ``--seed`` picks the surface set's test pictures:
settings were chosen on seed 0, and docs/vision.md reports seed 1. Image AUROC ranks
``s(x)``, the sum of alpha, between the normal pictures and those of one kind ("all": every
defective picture); pixel AUROC ranks alpha against the masks over the pictures of that kind.
``--option KEY=VALUE`` (JSON values) adds dataset options to both sets, e.g. ``patchnn_*`` model
options, as the CLI's ``--option`` does (with one, patchnn is fitted, not the bundled file).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import arpro
from arpro.algorithm.settings import parse_options
from arpro.plugin_api import registry
from machine import describe


def per_kind(test: arpro.Split, decomposition: arpro.Decomposition) -> list[dict]:
    """Image and pixel AUROC for every kind of defect in ``test``, then for all of them."""
    kinds = test.kinds or ["good" if label == 0 else "defect" for label in test.labels.tolist()]
    rows = []
    for kind in [*sorted(set(kinds) - {"good"}), "all"]:
        keep = torch.tensor([k == "good" or kind in (k, "all") for k in kinds])
        labels, masks = test.labels[keep], test.masks[keep] > 0.5
        rows.append(dict(kind=kind, n=int(labels.sum()), image_auroc=arpro.auroc(labels, decomposition.score[keep]),
                         pixel_auroc=arpro.auroc(masks, decomposition.alpha[keep])))
    return rows


def measure(dataset_name: str, dataset: arpro.Dataset, detectors: list[str]) -> list[dict]:
    test = dataset.test()
    rows = []
    for name in detectors:
        started = time.time()
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        origin = "bundled" if registry.get("detector", name).bundled_checkpoint(dataset) else f"fitted in {time.time() - started:.0f}s"
        with torch.no_grad():
            decomposition = detector.decompose(test.x)
        for row in per_kind(test, decomposition):
            rows.append(dict(dataset=dataset_name, detector=name, model=origin, **row))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the surface set's test pictures (0: validation)")
    parser.add_argument("--detectors", nargs="+", default=["patchnn"])
    parser.add_argument("--kolektor", type=Path, default=None, help="KolektorSDD in MVTec layout (commutator/...)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE dataset option (JSON value)")
    parser.add_argument("--out", type=Path, default=Path("runs/surface_detectors.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = parse_options(args.option, "--option")
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    surface = registry.get("dataset", "surface")(root=None, category=None, seed=args.seed, image_size=args.image_size,
                                                **options)
    rows = measure(f"surface seed {args.seed}", surface, args.detectors)
    if args.kolektor is not None:
        kolektor = registry.get("dataset", "mvtec")(root=args.kolektor, category="commutator", image_size=args.image_size,
                                                   **options)
        rows += measure("KolektorSDD", kolektor, args.detectors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; options {options}\n")
    print("| dataset | detector | kind | n | image AUROC | pixel AUROC |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['detector']} | {r['kind']} | {r['n']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} |")


if __name__ == "__main__":
    main()
