"""PCA, the classical monitor of a process (Chiang, Russell & Braatz), as a decomposable window detector.

Fitted on the rows (time steps) of the normal training windows, which the dataset has already
standardised with the normal training rows' mean and std: fitting is one eigendecomposition of a
``D × D`` covariance, a fraction of a second. It is the domain's baseline: the detector that
``arpro check`` measures the others against.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import arpro
from arpro_timeseries.detectors import ReconstructionDetector


class PCADetector(arpro.Detector):
    """PCA of the normal rows; score = Q (squared residual) + Hotelling T², summed over the window.

    With ``z`` a row less the training mean, ``P`` the kept components (``[D, k]``, the fewest whose
    eigenvalues ``λ`` explain ``variance`` of the total, default 0.9) and ``t = Pᵀz``:
    ``alpha[t, d] = (z − P t)_d² / q`` — the Q statistic (squared prediction error) split exactly by
    time step and feature — and ``beta = Σ_t Σ_j t_j² / (k λ_j)``, the rows' Hotelling T² summed.
    Each statistic is in units of its mean over the normal rows (``q``, the sum of the discarded
    eigenvalues, for Q; ``k`` for T²), as the combined index of Yue & Qin weighs them by their
    control limits, so that neither drowns the other: unweighted, T² (mean 31 on TEP) hides a
    broken tight correlation whose Q is large only against Q's own small normal spread. On TEP's
    even-numbered runs (the half for choosing), row AUROC 0.960, against 0.956 unweighted, 0.949
    for Q and 0.930 for T² alone.

    T² stays whole in beta rather than split into per-feature contributions: those are signed (a
    feature can lower T²), so as alpha they would make ω and the region scores of P3/P4 read
    negative evidence, while the residual is non-negative and names the features that break the
    normal correlations.
    """

    name = "pca"
    domain = "timeseries"
    # alpha is a squared residual per cell, as the reconstruction detectors' is: their repair settings (untuned here)
    guidance_scale = ReconstructionDetector.guidance_scale
    repair_defaults = ReconstructionDetector.repair_defaults

    def __init__(self, input_shape: list[int], variance: float = 0.9) -> None:
        if not 0 < variance <= 1:
            raise arpro.ArproError(f"{self.name}: variance must be in (0, 1], the share of the variance the kept "
                                   f"components explain, not {variance!r}")
        super().__init__()
        for name in ("mean", "components", "eigenvalues", "q_mean"):  # [D], [D, k], [k], []: set by fit
            self.register_buffer(name, torch.zeros(0))

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        """Eigendecomposition of the covariance of the distinct training rows (overlapping windows repeat
        rows; each counts once), then calibrate."""
        self.mean, self.components, self.eigenvalues, self.q_mean = principal_components(
            torch.unique(train.flatten(0, -2), dim=0), self.config["variance"], self.name)
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        z = x - self.mean
        t = z @ self.components
        alpha = (z - t @ self.components.T).pow(2) / self.q_mean
        return arpro.Decomposition(alpha=alpha, beta=(t.pow(2) / self.eigenvalues).sum((1, 2)) / len(self.eigenvalues))

    def reference_score(self, x: Tensor) -> Tensor:
        """Q as ``‖z‖² − ‖Pᵀz‖²`` (the components are orthonormal) and T² as the quadratic form
        ``zᵀ P Λ⁻¹ Pᵀ z``, per row, each over its normal mean, summed over the window."""
        z = x - self.mean
        q = z.pow(2).sum(-1) - (z @ self.components).pow(2).sum(-1)
        t2 = torch.einsum("btd,de,bte->bt", z, (self.components / self.eigenvalues) @ self.components.T, z)
        return (q / self.q_mean + t2 / len(self.eigenvalues)).sum(1)


def principal_components(rows: Tensor, variance: float, name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mean ``[D]``, components ``[D, k]``, eigenvalues ``[k]``, mean Q ``[]``) of ``rows`` ``[N, D]``: the
    fewest components, largest first, whose eigenvalues sum to at least ``variance`` of the total; the
    mean Q over the rows is the sum of the other eigenvalues (a millionth of the total at the least)."""
    data = rows.double()
    mean = data.mean(0)
    eigenvalues, vectors = torch.linalg.eigh(torch.cov((data - mean).T, correction=0).reshape(data.shape[1], -1))
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0), vectors.flip(1)
    total = eigenvalues.sum()
    if not total > 0:  # also one distinct row, or none
        raise arpro.ArproError(f"{name}: the training rows do not vary; PCA has nothing to fit")
    k = int((eigenvalues.cumsum(0) / total < variance - 1e-6).sum()) + 1  # 1e-6: float32 round-off of the shares
    k = min(k, int((eigenvalues > total * 1e-9).sum()))  # variance=1 on rank-deficient rows: no T² over round-off
    q_mean = eigenvalues[k:].sum().clamp_min(total * 1e-6)
    return tuple(v.to(rows.dtype) for v in (mean, vectors[:, :k], eigenvalues[:k], q_mean))
