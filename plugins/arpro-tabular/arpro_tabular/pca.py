"""PCA of the normal rows as a decomposable table detector: the tabular baseline of ``arpro check``.

The time-series plugin has the same detector for windows (``pca``); plugins do not import each
other, so the few lines that fit the components are repeated there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import arpro


class PCARowsDetector(arpro.Detector):
    """PCA of the normal rows; score = Q (squared residual) + Hotelling T² of the row.

    With ``z`` the row less the training mean, ``P`` the kept components (the fewest whose
    eigenvalues ``λ`` explain ``variance`` of the total, default 0.9) and ``t = Pᵀz``:
    ``alpha_i = (z − P t)_i²``, the Q statistic split by column exactly, and ``beta = Σ_j t_j² / λ_j``,
    T² kept whole because its per-column contributions are signed (see the time-series ``pca``).
    The rows arrive standardised with the normal training rows' mean and std (the datasets do it).
    """

    name = "pca-rows"
    domain = "tabular"
    guidance_scale = 0.5  # alpha is a squared z-score, as the gaussian detector's ½z²: its scale, not tuned for PCA

    def __init__(self, input_shape: list[int], variance: float = 0.9) -> None:
        if not 0 < variance <= 1:
            raise arpro.ArproError(f"{self.name}: variance must be in (0, 1], not {variance!r}")
        super().__init__()
        self.register_buffer("mean", torch.zeros(0))  # [D], set by fit
        self.register_buffer("components", torch.zeros(0))  # [D, k]
        self.register_buffer("eigenvalues", torch.zeros(0))  # [k]

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        data = train.double()
        mean = data.mean(0)
        _, s, vh = torch.linalg.svd(data - mean, full_matrices=False)
        eigenvalues = s.pow(2) / len(data)
        total = eigenvalues.sum()
        if not total > 0:  # also a single row, or none
            raise arpro.ArproError(f"{self.name}: the training rows do not vary; PCA has nothing to fit")
        k = int((eigenvalues.cumsum(0) / total < self.config["variance"] - 1e-6).sum()) + 1
        k = min(k, int((eigenvalues > total * 1e-9).sum()))
        self.mean, self.components, self.eigenvalues = (v.to(train.dtype) for v in (mean, vh[:k].T, eigenvalues[:k]))
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        z = x - self.mean
        t = z @ self.components
        alpha = (z - t @ self.components.T).pow(2)
        return arpro.Decomposition(alpha=alpha, beta=(t.pow(2) / self.eigenvalues).sum(1))

    def reference_score(self, x: Tensor) -> Tensor:
        """``‖z‖² − ‖Pᵀz‖²`` (Q, the components being orthonormal) plus the quadratic form ``zᵀ P Λ⁻¹ Pᵀ z`` (T²)."""
        z = x - self.mean
        precision = (self.components / self.eigenvalues) @ self.components.T
        return z.pow(2).sum(1) - (z @ self.components).pow(2).sum(1) + ((z @ precision) * z).sum(1)
