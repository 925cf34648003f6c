"""The example plugin's own tests: arpro's contract checks, as a third-party plugin would use them."""

import torch

import arpro
from arpro.testing import check_checkpoint_round_trip, check_decomposition, check_property_contract, fitted_detector


def test_mean_abs_obeys_the_contract(tmp_path):
    detector, x = fitted_detector("mean-abs")
    check_decomposition(detector, x)
    check_checkpoint_round_trip(detector, tmp_path / "mean-abs.safetensors", x)


def test_sparsity_keeps_the_property_contract():
    detector, x = fitted_detector("mean-abs")
    bad = detector.decompose(x)
    omega = (bad.alpha > bad.alpha.median()).float()
    ctx = arpro.PropertyContext(x, bad, omega, omega, torch.ones(len(x)), torch.ones(len(x)), detector=detector)
    check_property_contract(arpro.get("property", "sparsity")(), ctx, x + 0.1 * omega)
