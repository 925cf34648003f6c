"""P1–P4 of the paper (section 2.2) as losses (section 3.1) and metrics (section 4).

This module is the default properties plugin: the core registers it through the same
hook a third-party plugin uses. The formulas are the paper's, with sums (not means)
over features; ``omega`` is the anomalous-feature mask of ``x_bad`` and ``omega_bar =
1 - omega``. See docs/concepts.md for the exact definitions and tolerances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arpro.hookspecs import hookimpl
from arpro.protocols import Decomposition, Property, PropertyContext

if TYPE_CHECKING:  # torch is not imported here: listing plugins registers these classes
    from torch import Tensor

DEFAULT_PROPERTIES = ("p1", "p2", "p3", "p4")  # guide every repair unless a run names others


class OverallImprovement(Property):
    """P1 overall improvement: s(x_fix) < s(x_bad)."""

    name = "p1"
    metric_name = "Ms"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return fix.score

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.score

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric < ctx.bad.score


class Similarity(Property):
    """P2 similarity: ||omega_bar * (x_fix - x_bad)||^2 <= delta2."""

    name = "p2"
    metric_name = "Md"
    needs_detector = False

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return ((1 - ctx.omega_input) * (x_fix - ctx.x_bad)).flatten(1).pow(2).sum(1)

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return self.loss(ctx, x_fix, fix).sqrt()

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric.pow(2) <= ctx.delta2


class LocalizedImprovement(Property):
    """P3 localized improvement: s_omega(x_fix) < s_omega(x_bad)."""

    name = "p3"
    metric_name = "Momega"
    metric_label = "Mω"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return self.metric(ctx, x_fix, fix).relu()

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.region_score(ctx.omega) - ctx.bad_in

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric < 0


class NonDegradation(Property):
    """P4 non-degradation: s_omega_bar(x_fix) <= s_omega_bar(x_bad) + delta4."""

    name = "p4"
    metric_name = "Momega_bar"
    metric_label = "Mω̄"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return (self.metric(ctx, x_fix, fix) - ctx.delta4).relu()

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.region_score(1 - ctx.omega) - ctx.bad_out

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric <= ctx.delta4


@hookimpl
def arpro_register_properties(register) -> None:
    for prop in (OverallImprovement, Similarity, LocalizedImprovement, NonDegradation):
        register(prop)
