"""Image and pixel AUROC of the vision detectors on the embedded textures (brick, grass, gravel).

Each detector is obtained as the CLI does (`arpro.obtain_model`, seed 0): the bundled checkpoint
for brick at 64 px, otherwise fitted with its defaults on the category's normal training patches
(minutes each). 20 normal and 30 defective test patches per category. Image AUROC ranks s(x);
pixel AUROC ranks alpha against the defect masks. Quick: brick, without patchcore.
"""

from __future__ import annotations

import torch

import arpro


def run(quick: bool) -> dict:
    rows = []
    for category in ("brick",) if quick else ("brick", "grass", "gravel"):
        dataset = arpro.get("dataset", "textures")(root=None, category=category)
        test = dataset.test()
        for name in ("fastflow", "efficientad") if quick else ("patchcore", "fastflow", "efficientad"):
            bundled = arpro.get("detector", name).bundled_checkpoint(dataset) is not None
            detector = arpro.obtain_model("detector", name, dataset, progress=False)
            with torch.no_grad():
                d = detector.decompose(test.x)
            rows.append({"category": category, "detector": name, "model": "bundled" if bundled else "fitted",
                         "normal / defective": f"{int((test.labels == 0).sum())} / {int(test.labels.sum())}",
                         "image AUROC": arpro.auroc(test.labels, d.score),
                         "pixel AUROC": arpro.auroc(test.masks > 0.5, d.alpha)})
    return {"rows": rows}
