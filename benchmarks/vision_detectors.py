"""Image and pixel AUROC of the vision detectors on the embedded textures dataset.

    OMP_NUM_THREADS=1 python benchmarks/vision_detectors.py [--categories brick grass gravel]
        [--detectors fastflow efficientad] [--model-dir runs/vision-models] [--out runs/vision_detectors.json]

Each detector is obtained as the CLI does (``arpro.obtain_model``): the bundled checkpoint
for textures:brick at 64 px, otherwise built with ``for_dataset`` and fitted with its
defaults (seed 0) on the category's normal training patches; fitted models are cached in
``--model-dir`` as arpro checkpoints so vision_repair.py reuses the same models.
Test split: 20 normal and 30 defective patches per category (textures defaults).
Image AUROC ranks ``s(x)`` (the sum of alpha); pixel AUROC ranks ``alpha`` against the
defect masks over all test pixels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import arpro
from arpro.io import checkpoint
from arpro.plugin_api import registry
from machine import describe


def cached_model(kind: str, name: str, dataset, model_dir: Path, seed: int = 0):
    """The bundled checkpoint, a cached fit in ``model_dir``, or a fresh fit (then cached)."""
    cls = registry.get(kind, name)
    if cls.bundled_checkpoint(dataset) is not None:
        return arpro.obtain_model(kind, name, dataset, progress=False), "bundled"
    path = model_dir / f"{name}-textures-{dataset.category}-{dataset.image_size}.safetensors"
    if path.is_file():
        return checkpoint.load(path, kind, name), "cached"
    started = time.time()
    model = arpro.obtain_model(kind, name, dataset, seed=seed, progress=False)
    checkpoint.save(model, path)
    return model, f"trained in {time.time() - started:.0f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    parser.add_argument("--detectors", nargs="+", default=["fastflow", "efficientad"])
    parser.add_argument("--model-dir", type=Path, default=Path("runs/vision-models"))
    parser.add_argument("--out", type=Path, default=Path("runs/vision_detectors.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    args.model_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for category in args.categories:
        dataset = registry.get("dataset", "textures")(root=None, category=category)
        test = dataset.test()
        for name in args.detectors:
            detector, origin = cached_model("detector", name, dataset, args.model_dir)
            with torch.no_grad():
                d = detector.decompose(test.x)
            image_auroc = arpro.auroc(test.labels, d.score)
            pixel_auroc = arpro.auroc(test.masks > 0.5, d.alpha)
            row = dict(category=category, detector=name, image_auroc=image_auroc, pixel_auroc=pixel_auroc,
                       n_normal=int((test.labels == 0).sum()), n_anomalous=int(test.labels.sum()), model=origin)  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n| category | detector | image AUROC | pixel AUROC |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['category']} | {r['detector']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} |")


if __name__ == "__main__":
    main()
