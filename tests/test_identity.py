"""Every registered detector obeys s(x) = sum(alpha(x)) + beta(x) (paper Def. 2.1).

New detectors are picked up automatically: each is built for its domain's embedded dataset
and checked on a few test samples, against its own independent score where it has one.
"""

import pytest
import torch

from arpro import plugins

DETECTORS = sorted(e.name for e in plugins.registry().entries["detector"].values())


@pytest.mark.parametrize("name", DETECTORS)
def test_decomposition_identity(name):
    cls = plugins.get("detector", name)
    dataset = plugins.registry().default("dataset", cls.domain)()
    detector = cls.for_dataset(dataset)
    torch.manual_seed(0)
    detector.fit(dataset.train().x[:32], seed=0, progress=False, **getattr(cls, "smoke_fit_options", {}))
    x = dataset.test().x[:4]
    with torch.no_grad():
        d = detector.decompose(x)
        reference = detector.reference_score(x)
        s = reference if reference is not None else detector.score(x)
    assert d.beta.shape == (x.shape[0],)
    assert d.alpha.shape[0] == x.shape[0]
    residual = (s - d.alpha.flatten(1).sum(1) - d.beta).abs()
    assert torch.all(residual <= 1e-5 * (1 + s.abs())), residual
    assert torch.isfinite(d.alpha).all()


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_decomposition_identity_of_anomalib_checkpoints(name, anomalib_checkpoints):
    """The same identity for detectors read from anomalib's own ``Engine.fit`` checkpoints."""
    from arpro.checkpoint import load

    detector = load(anomalib_checkpoints[name], "detector", name)
    size = detector.config["input_shape"][-1]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        d = detector.decompose(x)
        s = detector.reference_score(x)
    residual = (s - d.alpha.flatten(1).sum(1) - d.beta).abs()
    assert torch.all(residual <= 1e-5 * (1 + s.abs())), residual
