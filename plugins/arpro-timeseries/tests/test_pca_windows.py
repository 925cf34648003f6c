"""The windows' PCA baseline ``pca`` on rows built to have known components (the tabular plugin's
``pca-rows`` has the same tests in its own folder)."""

from __future__ import annotations

import pytest
import torch

import arpro
from arpro import ArproError
from arpro.io import checkpoint
from arpro.plugin_api import registry

NAME = "pca"
EIGENVALUES = torch.tensor([8.0, 4.0, 2.0, 1.0])  # cumulative shares 0.533, 0.8, 0.933, 1


def rows_with_eigenvalues(n: int = 400, seed: int = 0) -> torch.Tensor:
    """``n`` rows whose (biased) covariance has exactly ``EIGENVALUES``, along random orthogonal axes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))  # orthonormal, zero-mean columns
    axes, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    return (q * (n * EIGENVALUES.double()).sqrt()) @ axes.T + 3.0


def fitted(variance: float = 0.9, n: int = 400) -> tuple:
    """(detector, training data) of ``pca`` fitted on the constructed rows, as windows of 10 rows."""
    train = rows_with_eigenvalues(n).float().reshape(-1, 10, 4)
    detector = registry.get("detector", NAME)(input_shape=list(train.shape[1:]), variance=variance)
    detector.fit(train, progress=False)
    return detector, train


def test_decomposition_is_exactly_the_independent_score():
    detector, train = fitted()
    x = train[:8] + torch.randn(train[:8].shape, generator=torch.Generator().manual_seed(1))
    d = detector.decompose(x)
    assert d.alpha.shape == x.shape and d.beta.shape == (8,)
    assert (d.alpha >= 0).all() and (d.beta >= 0).all()
    torch.testing.assert_close(d.score, detector.reference_score(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("variance", "k"), [(0.5, 1), (0.8, 2), (0.9, 3), (0.95, 4), (1.0, 4)])
def test_the_fewest_components_that_explain_the_variance_are_kept(variance, k):
    detector, _ = fitted(variance)
    assert detector.components.shape == (4, k)
    torch.testing.assert_close(detector.eigenvalues, EIGENVALUES[:k], rtol=1e-4, atol=1e-4)


def test_q_and_t2_are_each_in_units_of_their_mean_over_the_normal_rows():
    detector, train = fitted()  # 3 components kept; the discarded eigenvalue is 1
    d = detector.decompose(train)
    rows = train.flatten(0, -2).shape[0]
    torch.testing.assert_close(d.alpha.sum() / rows, torch.tensor(1.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.beta.sum() / rows, torch.tensor(1.0), rtol=1e-4, atol=1e-4)


def test_window_rows_repeated_by_overlapping_windows_count_once():
    rows = rows_with_eigenvalues().float()
    once, _ = fitted()
    overlapping = torch.stack([rows[s : s + 10] for s in range(0, len(rows) - 10 + 1, 2)])
    detector = registry.get("detector", "pca")(input_shape=[10, 4])
    detector.fit(overlapping, progress=False)
    torch.testing.assert_close(detector.eigenvalues, once.eigenvalues)


def test_the_gradient_reaches_the_input():
    detector, train = fitted()
    x = (train[:2] + 1.0).requires_grad_()
    detector.score(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_checkpoint_round_trip(tmp_path):
    detector, train = fitted(variance=0.8)
    path = checkpoint.save(detector, tmp_path / f"{NAME}.safetensors")
    loaded = checkpoint.load(path, "detector", NAME)
    assert loaded.config == detector.config and loaded.components.shape == (4, 2)
    torch.testing.assert_close(loaded.score(train[:4]), detector.score(train[:4]))
    torch.testing.assert_close(loaded.tau, detector.tau)


def test_registered_as_the_domains_baseline():
    entry = registry.registry().entries["detector"][NAME]
    assert entry.baseline and entry.domain == "timeseries" and not entry.default
    assert registry.get_baseline("timeseries").name == NAME


def test_what_pca_cannot_fit_is_one_clear_error():
    cls = registry.get("detector", NAME)
    shape = [10, 4]
    with pytest.raises(ArproError, match="variance must be in"):
        cls(input_shape=shape, variance=1.5)
    with pytest.raises(ArproError, match="do not vary"):
        cls(input_shape=shape).fit(torch.ones(3, *shape), progress=False)
