"""The vision plugin against arpro's contract, with the checks of ``arpro.testing``: every detector it registers
(new ones are picked up), its repairer's checkpoint and in-fill masks."""

from pathlib import Path

import pytest
import torch

from arpro.testing import (check_bundled_checkpoint, check_checkpoint_round_trip, check_decomposition,
                           check_infill_masks, fitted_detector, fitted_repairer, registered)
import arpro_vision

DETECTORS = registered("arpro-vision")
CHECKPOINTS = sorted((Path(arpro_vision.__file__).parent / "checkpoints").glob("*.safetensors"))


def test_every_detector_of_the_plugin_is_checked():
    assert DETECTORS == ["efficientad", "fastflow", "patchcore", "patchnn"]


@pytest.mark.parametrize("name", DETECTORS)
def test_decomposition_identity(name):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)


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
