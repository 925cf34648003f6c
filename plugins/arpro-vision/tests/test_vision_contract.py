"""The vision plugin against arpro's contract, with the checks of ``arpro.testing``: every detector it registers
(new ones are picked up), its repairer's checkpoint and in-fill masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from arpro.testing import (check_bundled_checkpoint, check_checkpoint_round_trip, check_decomposition,
                           check_infill_masks, fitted_detector, fitted_repairer, registered)
import arpro_vision
from arpro_vision.images import letterbox_rgb, to_tensor, to_uint8

DETECTORS = registered("arpro-vision")
CHECKPOINTS = sorted((Path(arpro_vision.__file__).parent / "checkpoints").glob("*.safetensors"))


def test_every_detector_of_the_plugin_is_checked():
    assert DETECTORS == ["efficientad", "fastflow", "patchcore", "patchnn"]


@pytest.mark.parametrize("name", DETECTORS)
def test_decomposition_identity(name):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)


@pytest.mark.parametrize("name", DETECTORS)
def test_a_letterboxed_picture_is_scored_on_itself_not_on_its_padding(name):
    """A picture half as wide as tall, letterboxed: alpha on the mirrored padding is folded onto the
    picture (none left there, s kept), and a repair, which changes the picture only and keeps the
    padding as a stale copy of its edge, is scored as the repaired picture letterboxed afresh,
    with no gradient on the padding."""
    detector, x = fitted_detector(name)
    side = x.shape[-1]
    tall = np.ascontiguousarray(to_uint8(x[0])[:, ::2])  # side x side/2: padded by side/4 left and right
    x_bad = to_tensor(letterbox_rgb(tall, side)[0])[None]
    padding = slice(0, side // 4)
    d = detector.decompose(x_bad)
    assert d.alpha[0, :, padding].abs().sum() == 0 and d.alpha[0, :, -side // 4:].abs().sum() == 0
    check_decomposition(detector, x_bad)  # s kept: the reference scores the letterbox as it is
    edited = tall.copy()
    edited[side // 8 : 3 * side // 8, :2] = 255 - edited[side // 8 : 3 * side // 8, :2]  # a defect at the edge, repaired
    fresh = to_tensor(letterbox_rgb(edited, side)[0])[None]
    stale = fresh.clone()
    stale[..., padding] = x_bad[..., padding]  # the padding the repair keeps: the input's
    assert not torch.equal(stale, fresh)
    torch.testing.assert_close(detector.score(stale), detector.score(fresh))
    assert not torch.allclose(detector.score(stale), detector.score(x_bad))
    stale.requires_grad_(True)
    detector.score(stale).sum().backward()
    assert stale.grad[..., padding].abs().sum() == 0 and stale.grad[..., side // 4 : -side // 4].abs().sum() > 0


def test_ddpm_round_trips_and_in_fills_a_square_of_a_quarter_of_the_side(tmp_path):
    repairer = fitted_repairer("ddpm", n_train=4, block_out_channels=[8, 16], layers_per_block=1)
    check_checkpoint_round_trip(repairer, tmp_path / "ddpm.safetensors")
    check_infill_masks(repairer)
    (mask,) = repairer.infill_masks(2, torch.Generator().manual_seed(0)).values()
    side = repairer.x_mean.shape[-1] // 4
    assert mask.sum((1, 2, 3)).tolist() == [3.0 * side * side] * 2  # every channel of one square


def test_the_bundled_checkpoints_are_all_there():
    names = [p.name.removesuffix(".safetensors") for p in CHECKPOINTS]
    assert names == ["ddpm-surface-64", "ddpm-textures-brick-64", "efficientad-textures-brick-64",
                     "fastflow-textures-brick-64", "patchnn-surface-64"]


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_bundled_checkpoint_loads_bit_identically(path):
    check_bundled_checkpoint(path)


@pytest.mark.parametrize("name", registered("arpro-vision", "repairer"))
def test_every_repairer_in_fills_a_square(name):
    repairer = fitted_repairer(name, n_train=4, **({"block_out_channels": [8, 16]} if name == "ddpm" else {}))
    check_infill_masks(repairer)
    assert set(repairer.infill_masks(2, torch.Generator().manual_seed(0))) == {"square block"}
