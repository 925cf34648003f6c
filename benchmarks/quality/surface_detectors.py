"""Image and pixel AUROC per defect kind of the image detectors on the embedded surface set (seed 1).

Each detector is obtained as the CLI does (`arpro.obtain_model`, seed 0): the bundled patchnn
checkpoint, otherwise fitted with its defaults on the normal training pictures. Settings were
chosen on seed 0; seed 1's test pictures are for reporting. Image AUROC ranks s(x) between the
normal pictures and those of one kind ("all": every defective picture); pixel AUROC ranks alpha
against the masks, on the pictures' own pixels (not a letterbox's padding). patchcore needs its pretrained backbone (`make install` fetches it). Quick: patchnn only.
"""

from __future__ import annotations

import torch

import arpro


def per_kind(test: arpro.Split, decomposition: arpro.Decomposition) -> list[dict]:
    """Image and pixel AUROC for every kind of defect in ``test``, then for all of them."""
    kinds = test.kinds or ["good" if label == 0 else "defect" for label in test.labels.tolist()]
    rows = []
    for kind in [*sorted(set(kinds) - {"good"}), "all"]:
        keep = torch.tensor([k == "good" or kind in (k, "all") for k in kinds])
        labels, masks = test.labels[keep], test.masks[keep] > 0.5
        picture = torch.ones_like(masks) if test.valid is None else test.valid[keep] > 0.5  # a letterbox's padding aside
        rows.append({"kind": kind, "n": int(labels.sum()),
                     "image AUROC": arpro.auroc(labels, decomposition.score[keep]),
                     "pixel AUROC": arpro.auroc(masks[picture], decomposition.alpha[keep][picture])})
    return rows


def measure(dataset: arpro.Dataset, detectors: tuple[str, ...]) -> list[dict]:
    """Every detector's rows on ``dataset``'s test split."""
    test = dataset.test()
    rows = []
    for name in detectors:
        bundled = arpro.get("detector", name).bundled_checkpoint(dataset) is not None
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        with torch.no_grad():
            decomposition = detector.decompose(test.x)
        rows += [{"detector": name, "model": "bundled" if bundled else "fitted", **row}
                 for row in per_kind(test, decomposition)]
    return rows


def run(quick: bool) -> dict:
    surface = arpro.get("dataset", "surface")(root=None, category=None, seed=1)
    return {"rows": measure(surface, ("patchnn",) if quick else ("patchcore", "patchnn", "fastflow", "efficientad"))}
