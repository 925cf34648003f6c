"""Image and pixel AUROC of the image detectors on the real KolektorSDD (needs ../shared/data/kolektorsdd).

KolektorSDD in MVTec layout (commutator: 277 normal training images), read as
`--dataset mvtec:commutator --data-root ../shared/data/kolektorsdd` reads it for each detector
(patchcore at 256 px, the others at 64). Each detector is fitted with its defaults
(`arpro.obtain_model`, seed 0) and scores every test image; figures as in surface_detectors.
Quick: patchnn only.
"""

from __future__ import annotations

import arpro
from benchmarks.harness import shared_data
from benchmarks.quality.surface_detectors import measure


def run(quick: bool) -> dict:
    root, mvtec = shared_data("kolektorsdd"), arpro.get("dataset", "mvtec")
    rows = []
    for name in ("patchnn",) if quick else ("patchcore", "patchnn", "fastflow", "efficientad"):
        size = arpro.get("detector", name).dataset_defaults(mvtec).get("image_size", 64)
        rows += measure(mvtec(root=root, category="commutator", image_size=size), (name,))
    return {"rows": rows}
