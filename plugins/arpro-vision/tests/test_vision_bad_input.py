"""The vision plugin's bad inputs: each is one ``error:`` line, exit status 2, nothing written
(``arpro.testing.check_one_error_line``, in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from arpro.testing import check_one_error_line

REPAIR = ["repair", "--detector", "fastflow", "--out", "out"]
PATCHNN = ["train", "detector", "--detector", "patchnn", "--dataset", "surface", "--out", "m.safetensors"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    torch.save({"model": torch.nn.Linear(1, 1)}, root / "exported.pt")  # as anomalib's torch export pickles a module
    torch.save({"weights": [1, 2]}, root / "not_anomalib.ckpt")
    Image.new("L", (7000, 7000)).save(root / "huge.png")  # ~50 kB that decode to 49 megapixels
    (root / "not_image.png").write_text("not an image")
    Image.new("L", (100, 20)).save(root / "thin.png")  # narrower than the DDPM's 64 px crops
    return root


CASES = [
    ("anomalib export pickling a module", [*REPAIR, "--detector-checkpoint", "{bad}/exported.pt", "--quiet"],
     "weights_only=False)['model']"),
    ("torch file not from anomalib", ["repair", "--detector", "efficientad", "--detector-checkpoint",
                                      "{bad}/not_anomalib.ckpt", "--out", "out", "--quiet"],
     "not an anomalib checkpoint"),
    ("image too many pixels", [*REPAIR, "--input", "{bad}/huge.png"], "pixels"),
    ("image undecodable", [*REPAIR, "--input", "{bad}/not_image.png"], "not_image.png"),
    ("image tiled below crop size", [*REPAIR, "--input", "{bad}/thin.png", "--option", "tiled=true"], "at least 64 px"),
    ("image tiled not a bool", [*REPAIR, "--input", "{bad}/thin.png", "--option", "tiled=yes"], "tiled must be"),
    ("surface option not an integer", [*PATCHNN, "--option", "n_train=many"], "n_train must be an integer"),
    ("patchnn with one training picture", [*PATCHNN, "--option", "n_train=1"], "at least 2"),
    ("patchnn even patch", [*PATCHNN, "--model-option", "patch=4"], "odd"),
]


@pytest.mark.parametrize("args, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line(args, fragment, bad, tmp_path):
    check_one_error_line([a.replace("{bad}", str(bad)) for a in args], fragment, tmp_path, bad)
