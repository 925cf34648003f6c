"""PCA of the normal rows as a decomposable table detector: the tabular baseline of ``arpro check``.

The time-series plugin has the same detector for windows (``pca``, whose docstring says why the
score is built so); plugins do not import each other, so the few lines that fit it are repeated here.
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
    ``alpha_i = (z − P t)_i² / q``, the Q statistic split by column exactly, and
    ``beta = Σ_j t_j² / (k λ_j)``, T², kept whole because its per-column contributions are signed.
    Each is in units of its mean over the normal rows (``q``: the sum of the discarded eigenvalues;
    ``k``), so that T² does not drown a broken tight correlation. The rows arrive standardised with
    the normal training rows' mean and std (the datasets do it).
    """

    name = "pca-rows"
    domain = "tabular"
    guidance_scale = 0.5  # alpha is a squared z-score, as the gaussian detector's ½z²: its scale, not tuned for PCA

    def __init__(self, input_shape: list[int], variance: float = 0.9) -> None:
        if not 0 < variance <= 1:
            raise arpro.ArproError(f"{self.name}: variance must be in (0, 1], not {variance!r}")
        super().__init__()
        for name in ("mean", "components", "eigenvalues", "q_mean"):  # [D], [D, k], [k], []: set by fit
            self.register_buffer(name, torch.zeros(0))

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
        q_mean = eigenvalues[k:].sum().clamp_min(total * 1e-6)
        self.mean, self.components, self.eigenvalues, self.q_mean = (
            v.to(train.dtype) for v in (mean, vh[:k].T, eigenvalues[:k], q_mean))
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        z = x - self.mean
        t = z @ self.components
        alpha = (z - t @ self.components.T).pow(2) / self.q_mean
        return arpro.Decomposition(alpha=alpha, beta=(t.pow(2) / self.eigenvalues).sum(1) / len(self.eigenvalues))

    def reference_score(self, x: Tensor) -> Tensor:
        """``‖z‖² − ‖Pᵀz‖²`` (Q, the components being orthonormal) and the quadratic form ``zᵀ P Λ⁻¹ Pᵀ z``
        (T²), each over its normal mean."""
        z = x - self.mean
        precision = (self.components / self.eigenvalues) @ self.components.T
        q = z.pow(2).sum(1) - (z @ self.components).pow(2).sum(1)
        return q / self.q_mean + ((z @ precision) * z).sum(1) / len(self.eigenvalues)
