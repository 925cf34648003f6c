"""Tabular detectors: one feature score per column, beta = 0, so s(x) = sum_i alpha_i(x)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import arpro
from arpro_tabular.bundled import bundled


class GaussianDetector(arpro.Detector):
    """Per-column Gaussian negative log-likelihood (paper Example 2.3).

    ``alpha_i(x) = -log N(x_i; mu_i, sigma_i^2)`` with mu, sigma fitted on normal rows and
    ``beta = 0``: the score is the full negative log-likelihood of the row under
    independent Gaussians.
    """

    name = "gaussian"
    domain = "tabular"
    is_default = True
    guidance_scale = 0.5
    # guidance at every 3rd step (scaled ×3): the same guided medians on malignant rows 64-127, for a third of
    # the detector passes (docs/explanation/tabular.md)
    repair_defaults = {"guide_every": 3}

    def __init__(self, input_shape: list[int], min_std: float = 1e-3) -> None:
        if not 0 < min_std < float("inf"):
            raise arpro.ArproError(f"{self.name}: min_std must be positive and finite, not {min_std!r}")
        super().__init__()
        self.register_buffer("mu", torch.zeros(input_shape))
        self.register_buffer("sigma", torch.ones(input_shape))

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        self.mu = train.mean(0)
        self.sigma = train.std(0).clamp_min(self.config["min_std"])
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        z = (x - self.mu) / self.sigma
        alpha = 0.5 * z.pow(2) + self.sigma.log() + 0.5 * math.log(2 * math.pi)
        return arpro.Decomposition(alpha=alpha, beta=x.new_zeros(x.shape[0]))

    def reference_score(self, x: Tensor) -> Tensor:
        return -torch.distributions.Normal(self.mu, self.sigma).log_prob(x).sum(1)

    @classmethod
    def bundled_checkpoint(cls, dataset):
        return bundled(cls, dataset)


class AutoencoderDetector(arpro.Detector):
    """Per-column squared reconstruction error of an MLP autoencoder (paper Example 2.2).

    ``alpha_i(x) = (x̂_i - x_i)^2``, ``beta = 0``: the score is the usual l2
    reconstruction error of the row.
    """

    name = "autoencoder"
    smoke_fit_options = {"epochs": 2}
    domain = "tabular"
    guidance_scale = 4.0
    # chosen on the calibration half of the malignant test rows (arpro.workflows.calibrate's split;
    # docs/explanation/tabular.md): from noise in 200 steps, P2-P4 weighted 100 against P1's 1
    repair_defaults = {"start": "noise", "steps": 200, "weights": {"p2": 100.0, "p3": 100.0, "p4": 100.0}}

    def __init__(self, input_shape: list[int], hidden: int = 64, bottleneck: int = 8, epochs: int = 300) -> None:
        super().__init__()
        (d,) = input_shape
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.Linear(bottleneck, hidden), nn.SiLU(), nn.Linear(hidden, d))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        """Epochs of shuffled batches of 64 (AdamW, lr 1e-3); ``options``: ``epochs``."""
        arpro.fit_loop(
            self, lambda x, generator: (self.reconstruct(x) - x).pow(2).mean(), train,
            steps=int(options.get("epochs", self.config["epochs"])), batch_size=64, lr=1e-3, weight_decay=1e-4,
            epochs=True, seed=seed, progress=progress, description="training autoencoder",
        )
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        alpha = (self.reconstruct(x) - x).pow(2)
        return arpro.Decomposition(alpha=alpha, beta=x.new_zeros(x.shape[0]))

    def reference_score(self, x: Tensor) -> Tensor:
        return nn.functional.mse_loss(self.reconstruct(x), x, reduction="none").sum(1)

    @classmethod
    def bundled_checkpoint(cls, dataset):
        return bundled(cls, dataset)
