"""The example plugin's classes: imported only when a run uses them (``arpro.get``)."""

from __future__ import annotations

import torch
from torch import Tensor

import arpro


class MeanAbsoluteDeviation(arpro.Detector):
    """Absolute deviation of each column from its normal mean; beta = 0."""

    name = "mean-abs"
    domain = "tabular"
    guidance_scale = 0.5

    def __init__(self, input_shape: list[int]) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(input_shape))

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        self.center = train.median(0).values
        self.calibrate(train)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        return arpro.Decomposition(alpha=(x - self.center).abs(), beta=x.new_zeros(x.shape[0]))


class Sparsity(arpro.Property):
    """Sparse repair: the L1 size of the change inside omega stays under delta2."""

    name = "sparsity"
    metric_name = "M_l1"
    needs_detector = False

    def loss(self, ctx: arpro.PropertyContext, x_fix: Tensor, fix) -> Tensor:
        return (ctx.omega_input * (x_fix - ctx.x_bad)).abs().flatten(1).sum(1)

    def metric(self, ctx: arpro.PropertyContext, x_fix: Tensor, fix) -> Tensor:
        return self.loss(ctx, x_fix, fix)

    def holds(self, ctx: arpro.PropertyContext, metric: Tensor) -> Tensor:
        return metric <= ctx.delta2
