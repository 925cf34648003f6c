"""Image and pixel AUROC of the image detectors on the real KolektorSDD (needs ../shared/data/kolektorsdd).

KolektorSDD in MVTec layout (commutator: 277 normal training images), read at 64 px as
`--dataset mvtec:commutator --data-root ../shared/data/kolektorsdd` reads it. Each detector is
fitted with its defaults (`arpro.obtain_model`, seed 0) and scores every test image; figures as
in surface_detectors. Quick: patchnn only.
"""

from __future__ import annotations

import arpro
from benchmarks.harness import shared_data
from benchmarks.quality.surface_detectors import measure


def run(quick: bool) -> dict:
    root = shared_data("kolektorsdd")
    kolektor = arpro.get("dataset", "mvtec")(root=root, category="commutator", image_size=64)
    return {"rows": measure(kolektor, ("patchnn",) if quick else ("patchcore", "patchnn", "fastflow", "efficientad"))}
