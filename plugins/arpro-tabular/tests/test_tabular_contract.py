"""The tabular plugin against arpro's contract, with the checks of ``arpro.testing``."""

import pytest
import torch

import arpro
from arpro.testing import (check_checkpoint_round_trip, check_decomposition, check_gradient, check_property_contract,
                           fitted_detector)

DETECTORS = ["gaussian", "autoencoder", "pca-rows"]


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_obeys_the_contract(name, tmp_path):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)
    check_gradient(detector, x)
    check_checkpoint_round_trip(detector, tmp_path / f"{name}.safetensors", x)


def test_repairer_round_trips(tmp_path):
    data = arpro.get("dataset", "breast-cancer")()
    repairer = arpro.get("repairer", "mlp-ddpm")(input_shape=[30], width=16, depth=1)
    repairer.fit(data.train().x[:32], steps=2, progress=False)
    check_checkpoint_round_trip(repairer, tmp_path / "r.safetensors")


@pytest.mark.parametrize("name", ["p1", "p2", "p3", "p4", "range"])
def test_properties_keep_their_contract_on_rows(name):
    detector, x = fitted_detector("gaussian")
    bad = detector.decompose(x)
    omega = (bad.alpha >= bad.alpha.quantile(0.9, dim=1, keepdim=True)).float()
    data = arpro.get("dataset", "breast-cancer")()
    ctx = arpro.PropertyContext(x, bad, omega, omega, torch.ones(len(x)), torch.ones(len(x)), detector=detector,
                                stats=arpro.TrainingStats.of(data.train().x), feature_names=data.feature_names())
    check_property_contract(arpro.get("property", name)(), ctx, x + 0.1 * omega)
