"""Every registered detector obeys s(x) = sum(alpha(x)) + beta(x) (paper Def. 2.1).

New detectors are picked up automatically: each is built for its domain's embedded dataset
and checked on a few test samples, against its own independent score where it has one.
"""

import pytest
import torch

from arpro.plugin_api import registry
from arpro.testing import check_decomposition, fitted_detector

DETECTORS = sorted(e.name for e in registry.registry().entries["detector"].values())


@pytest.mark.parametrize("name", DETECTORS)
def test_decomposition_identity(name):
    detector, x = fitted_detector(name)
    check_decomposition(detector, x)


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_decomposition_identity_of_anomalib_checkpoints(name, anomalib_checkpoints):
    """The same identity for detectors read from anomalib's own ``Engine.fit`` checkpoints."""
    from arpro.io.checkpoint import load

    detector = load(anomalib_checkpoints[name], "detector", name)
    size = detector.config["input_shape"][-1]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        d = detector.decompose(x)
        s = detector.reference_score(x)
    residual = (s - d.alpha.flatten(1).sum(1) - d.beta).abs()
    assert torch.all(residual <= 1e-5 * (1 + s.abs())), residual
