"""The time-series plugin against arpro's contract, with the checks of ``arpro.testing``: every detector it
registers (new ones are picked up), its repairer's checkpoint and its in-fill masks."""

from pathlib import Path

import pytest
import torch

from arpro.plugin_api import registry
from arpro.testing import (check_bundled_checkpoint, check_checkpoint_round_trip, check_decomposition, check_gradient,
                           check_infill_masks, fitted_detector, fitted_repairer, registered)
from arpro.workflows import infill_quality
import arpro_timeseries

DETECTORS = registered("arpro-timeseries")
CHECKPOINTS = sorted((Path(arpro_timeseries.__file__).parent / "checkpoints").glob("*.safetensors"))


def test_every_detector_of_the_plugin_is_checked():
    assert DETECTORS == ["gpt2", "llama2", "pca"]


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_obeys_the_contract(name):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)
    check_gradient(detector, x)


@pytest.fixture(scope="module")
def diffusion_ts():
    return fitted_repairer("diffusion-ts", n_train=8, width=16, heads=2)


def test_diffusion_ts_round_trips(diffusion_ts, tmp_path):
    check_checkpoint_round_trip(diffusion_ts, tmp_path / "diffusion-ts.safetensors")


def test_in_fill_masks_are_a_block_of_whole_steps_and_whole_features(diffusion_ts):
    check_infill_masks(diffusion_ts)
    masks = diffusion_ts.infill_masks(4, torch.Generator().manual_seed(0))
    t, d = diffusion_ts.x_mean.shape
    block, features = masks[infill_quality.TIME_BLOCK], masks["feature subset"]
    steps = block[:, :, 0]
    assert (block == steps[:, :, None]).all() and (steps.sum(1) == t // 5).all()  # every feature of t // 5 steps
    assert (steps[:, 0] == 0).all() and (steps[:, -1] == 0).all()  # a known step on each side
    assert (features == features[:, :1]).all() and (features[:, 0].sum(1) == max(1, d // 4)).all()


def test_the_in_fill_figure_compares_time_blocks_with_linear_interpolation(diffusion_ts):
    figure = infill_quality.measure(diffusion_ts, registry.get("dataset", "process")().validation().x[:4])
    assert set(figure["masks"]) == {"time block", "feature subset"}
    assert "linear interpolation" in figure["masks"]["time block"]
    assert "linear interpolation" not in figure["masks"]["feature subset"]


def test_the_bundled_checkpoints_are_all_there():
    names = [p.name.removesuffix(".safetensors") for p in CHECKPOINTS]
    assert names == ["diffusion-ts-process", "gpt2-process", "llama2-process"]


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_bundled_checkpoint_loads_bit_identically(path):
    check_bundled_checkpoint(path)


@pytest.mark.parametrize("name", registered("arpro-timeseries", "repairer"))
def test_every_repairer_in_fills_a_time_block_and_a_feature_subset(name):
    repairer = fitted_repairer(name, n_train=8, **({"width": 16, "heads": 2} if name == "diffusion-ts" else {}))
    check_infill_masks(repairer)
    masks = repairer.infill_masks(2, torch.Generator().manual_seed(0))
    assert set(masks) == {infill_quality.TIME_BLOCK, "feature subset"}
