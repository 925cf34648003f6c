"""The tabular plugin against arpro's contract, with the checks of ``arpro.testing``."""

from pathlib import Path

import pytest
import torch

import arpro
from arpro.testing import (check_bundled_checkpoint, check_checkpoint_round_trip, check_decomposition, check_gradient,
                           check_infill_masks, check_property_contract, fitted_detector, fitted_repairer, registered)
import arpro_tabular

DETECTORS = registered("arpro-tabular")
CHECKPOINTS = sorted((Path(arpro_tabular.__file__).parent / "checkpoints").glob("*.safetensors"))


def test_every_detector_of_the_plugin_is_checked():
    assert DETECTORS == ["autoencoder", "gaussian", "pca-rows"]


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_obeys_the_contract(name, tmp_path):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)
    check_gradient(detector, x)
    check_checkpoint_round_trip(detector, tmp_path / f"{name}.safetensors", x)


def test_repairer_round_trips_and_masks_a_quarter_of_the_columns(tmp_path):
    repairer = fitted_repairer("mlp-ddpm", width=16, depth=1)
    check_checkpoint_round_trip(repairer, tmp_path / "r.safetensors")
    check_infill_masks(repairer)
    (mask,) = repairer.infill_masks(2, torch.Generator().manual_seed(0)).values()
    assert mask.sum(1).tolist() == [7.0, 7.0]  # 30 columns // 4


@pytest.mark.parametrize(("options", "cosine"), [({}, True), ({"lr_schedule": "constant"}, False)])
def test_repairer_trains_on_the_learning_rate_schedule_its_config_names(options, cosine, monkeypatch):
    seen = {}
    monkeypatch.setattr(arpro, "train_denoiser", lambda model, train, **kw: seen.update(kw))
    arpro.get("repairer", "mlp-ddpm")(input_shape=[3], width=8, depth=1, **options).fit(torch.zeros(4, 3))
    assert seen["cosine"] is cosine


def test_repairer_refuses_an_unknown_learning_rate_schedule():
    with pytest.raises(arpro.ArproError, match="lr_schedule must be cosine or constant"):
        arpro.get("repairer", "mlp-ddpm")(input_shape=[3], lr_schedule="linear")


@pytest.mark.parametrize("name", ["p1", "p2", "p3", "p4", "range"])
def test_properties_keep_their_contract_on_rows(name):
    detector, x = fitted_detector("gaussian")
    bad = detector.decompose(x)
    omega = (bad.alpha >= bad.alpha.quantile(0.9, dim=1, keepdim=True)).float()
    data = arpro.get("dataset", "breast-cancer")()
    ctx = arpro.PropertyContext(x, bad, omega, omega, torch.ones(len(x)), torch.ones(len(x)), detector=detector,
                                stats=arpro.TrainingStats.of(data.train().x), feature_names=data.feature_names())
    check_property_contract(arpro.get("property", name)(), ctx, x + 0.1 * omega)


def test_the_bundled_checkpoints_are_all_there():
    names = [p.name.removesuffix(".safetensors") for p in CHECKPOINTS]
    assert names == ["autoencoder-breast-cancer", "gaussian-breast-cancer", "mlp-ddpm-breast-cancer"]


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_bundled_checkpoint_loads_bit_identically(path):
    check_bundled_checkpoint(path)
