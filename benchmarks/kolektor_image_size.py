"""Image detectors on the real KolektorSDD, per ``image_size``: chosen on one half of the test
images, reported on the other.

    OMP_NUM_THREADS=1 python benchmarks/kolektor_image_size.py --kolektor ../shared/data/kolektorsdd
        [--detectors patchcore patchnn] [--sizes 64 128 256] [--option patchnn_highpass_sigma=8]
        [--out runs/kolektor_image_size.json]

For each detector (default: the image domain's default detector, else its baseline) and size, the
detector is obtained as the CLI does (``arpro.obtain_model``, seed 0: fitted with its defaults on
the 277 normal training images, read at that ``image_size``, as ``--dataset mvtec:commutator
--option image_size=S`` reads them) and scores every test image. Without ``--sizes`` each
detector is read at the size the CLI reads it at with no option (its ``dataset_defaults``, else 64).
The test images are split by a fixed rule: within each kind (good, crack), sorted by file name,
even positions form the *choose* half and odd positions the *report* half (35 good + 26 crack
each). ``--option KEY=VALUE`` (JSON values) adds dataset options, e.g. ``patchnn_*`` model options, as
the CLI's ``--option`` does. The size with the best image AUROC on the choose half is picked there; the report half
was not looked at to pick it. Image AUROC ranks ``s(x)`` (the sum of alpha) of good against
cracked images; pixel AUROC ranks alpha against the masks. Prints the thread count, the time
each size took, the process's peak resident memory so far, and one table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

import arpro
from arpro.algorithm.settings import parse_options
from arpro.plugin_api import registry
from machine import describe


def halves(ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the choose half and the report half: per kind (the id's folder), sorted
    by name, even positions choose and odd positions report."""
    choose = torch.zeros(len(ids), dtype=torch.bool)
    for kind in sorted({i.split("/")[0] for i in ids}):
        members = sorted((name, index) for index, name in enumerate(ids) if name.split("/")[0] == kind)
        for position, (_, index) in enumerate(members):
            choose[index] = position % 2 == 0
    return choose, ~choose


def measure(root: Path, name: str, size: int, batch: int, options: dict) -> list[dict]:
    dataset = registry.get("dataset", "mvtec")(root=root, category="commutator", image_size=size, **options)
    started = time.time()
    detector = arpro.obtain_model("detector", name, dataset, progress=False)
    fitted = time.time() - started
    test = dataset.test()
    with torch.no_grad():
        parts = [detector.decompose(x) for x in test.x.split(batch)]
    score, alpha = torch.cat([p.score for p in parts]), torch.cat([p.alpha for p in parts])
    rows = []
    for half, keep in zip(("choose", "report", "all"), (*halves(test.ids), torch.ones(len(test.ids), dtype=torch.bool)),
                          strict=True):
        labels, masks = test.labels[keep], test.masks[keep] > 0.5
        rows.append(dict(detector=name, image_size=size, options=options, half=half, n_good=int((labels == 0).sum()),
                         n_crack=int(labels.sum()),
                         image_auroc=arpro.auroc(labels, score[keep]), pixel_auroc=arpro.auroc(masks, alpha[keep]),
                         fit_s=round(fitted), total_s=round(time.time() - started),
                         peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 1)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kolektor", type=Path, required=True, help="KolektorSDD in MVTec layout (commutator/...)")
    parser.add_argument("--detectors", nargs="+", default=None, help="default: the image domain's default detector")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: the size the CLI reads at")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE dataset option (JSON value)")
    parser.add_argument("--out", type=Path, default=Path("runs/kolektor_image_size.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    options = parse_options(args.option, "--option")
    try:
        names = args.detectors or [registry.get_default("detector", "image").name]
    except arpro.ArproError:  # no pretrained weights installed: no default image detector
        names = [registry.get_baseline("image").name]
    mvtec = registry.get("dataset", "mvtec")
    rows = [row for name in names
            for size in args.sizes or [registry.get("detector", name).dataset_defaults(mvtec).get("image_size", 64)]
            for row in measure(args.kolektor, name, size, args.batch, options)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    choose = {(r["detector"], r["image_size"]): r["image_auroc"] for r in rows if r["half"] == "choose"}
    best = max(choose, key=choose.get)
    print(f"load average at the end {os.getloadavg()[0]:.2f}; options {options}; "
          f"picked on the choose half: {best[0]} at image_size {best[1]}\n")
    print("| detector | image_size | half | good / crack | image AUROC | pixel AUROC | fit + score | peak memory |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | {r['image_size']} | {r['half']} | {r['n_good']} / {r['n_crack']} | {r['image_auroc']:.3f} | "
              f"{r['pixel_auroc']:.3f} | {r['total_s']} s | {r['peak_rss_gb']} GB |")


if __name__ == "__main__":
    main()
