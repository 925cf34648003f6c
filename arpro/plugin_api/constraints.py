"""Hard constraints: properties that the repair satisfies by construction, not by a loss.

A constraint (``guides = False``) tells the engine which input elements are frozen
(``Property.frozen``) and which bounds every value must keep (``Property.bounds``):

- frozen elements are taken out of omega before any arm runs, so every arm that in-fills
  keeps them equal to ``x_bad`` (eq. 6), and after ``--infill-stop`` they stay in-filled;
- bounds project the scheduler's x̂0 at every step and clamp the final repair, in every arm;
  elements of ``x_bad`` outside them join omega, since keeping them would break the bounds.
Each reports a metric that is exactly 0 when it holds. See docs/concepts.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arpro.errors import ArproError
from arpro.plugin_api import registry
from arpro.plugin_api.protocols import Decomposition, Property, PropertyContext

if TYPE_CHECKING:
    from torch import Tensor


class Constraint(Property):
    """A property enforced by ``frozen``/``bounds``: it adds nothing to the guidance loss."""

    guides = False
    needs_detector = False

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return x_fix.new_zeros(x_fix.shape[0])

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric == 0


def _names(value: Any, option: str) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"option {option!r} must be a name or a list of names, not {value!r}")
    return names


def _numbers(value: Any, option: str) -> list[float] | float | None:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return value
    raise ValueError(f"option {option!r} must be a number or a list of numbers, not {value!r}")


def load_mask(path: Path | str, what: str) -> Tensor:
    """A 0/1 mask from a ``.npy`` file (never unpickled), checked: numbers only, every value finite and in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)
        mask = torch.from_numpy(array.astype(np.float32)) if array.dtype.kind in "biuf" else None
    except Exception as error:
        raise ArproError(f"cannot read {what} {path}: {error}") from None
    if mask is None:
        raise ArproError(f"{what} {path} holds {array.dtype} values, not numbers")
    if not (mask.isfinite().all() and (mask >= 0).all() and (mask <= 1).all()):
        raise ArproError(f"{what} {path} must hold 0/1 values (1 = the element is in it), found NaN, Inf or values "
                         "outside [0, 1]")
    return mask


def last_axis_mask(ctx: PropertyContext, names: list[str], prop: str) -> Tensor:
    """``[*X]`` bool: the elements whose last-axis index is one of the named features."""
    known = ctx.feature_names
    if known is None:
        raise ArproError(f"property {prop!r}: the dataset has no named features; give mask= instead of columns=")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ArproError(f"property {prop!r}: no feature {unknown[0]!r} (features: {', '.join(known)})")
    selected = torch.zeros(ctx.input_shape[-1], dtype=torch.bool)
    selected[[known.index(n) for n in names]] = True
    return selected.expand(ctx.input_shape)


class Immutable(Constraint):
    """Hard constraint: named columns or sensors, or a pixel mask, stay exactly as in x_bad."""

    name = "immutable"
    metric_name = "M_immutable"
    metric_label = "max |Δ| immutable"

    def __init__(self, columns: list[str] | str | None = None, mask: str | None = None) -> None:
        if (columns is None) == (mask is None):
            raise ValueError("give either columns= (table columns, time-series sensors) or mask= (a .npy file)")
        if mask is not None and not (isinstance(mask, str) and mask.endswith(".npy") and Path(mask).is_file()):
            raise ValueError(f"option 'mask' must be an existing .npy file, not {mask!r}")
        self.columns, self.mask = _names(columns, "columns"), mask

    def frozen(self, ctx: PropertyContext) -> Tensor:
        if self.columns is not None:
            keep = last_axis_mask(ctx, self.columns, self.name)
        else:
            keep = load_mask(self.mask, "property 'immutable': mask") > 0.5
            if tuple(keep.shape) == ctx.feature_shape and ctx.detector is not None:
                keep = ctx.detector.input_mask(keep.unsqueeze(0), ctx.x_bad.shape)[0]
            if tuple(keep.shape) != ctx.input_shape:
                raise ArproError(f"property 'immutable': mask {self.mask} has shape {tuple(keep.shape)}; "
                                 f"it must fit the input {ctx.input_shape} or the features {ctx.feature_shape}")
        return keep.expand(ctx.x_bad.shape).to(ctx.x_bad.dtype)

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        change = torch.where(self.frozen(ctx).bool(), (x_fix - ctx.x_bad).abs(), torch.zeros_like(x_fix))
        return change.flatten(1).amax(1)


class Range(Constraint):
    """Hard constraint: every repaired value within training min/max (images: [-1, 1]) or given bounds."""

    name = "range"
    metric_name = "M_range"
    metric_label = "max range violation"

    def __init__(self, low: float | list[float] | None = None, high: float | list[float] | None = None,
                 columns: list[str] | str | None = None) -> None:
        self.low, self.high, self.columns = _numbers(low, "low"), _numbers(high, "high"), _names(columns, "columns")

    def bounds(self, ctx: PropertyContext) -> tuple[Tensor, Tensor]:
        if ctx.value_range is not None:
            default = [torch.full(ctx.input_shape, float(v)) for v in ctx.value_range]
        elif ctx.stats is not None:
            default = [ctx.stats.min, ctx.stats.max]
        elif self.low is None or self.high is None:
            raise ArproError("property 'range' needs low= and high=, or a dataset's training statistics")
        else:
            default = [torch.full(ctx.input_shape, -torch.inf), torch.full(ctx.input_shape, torch.inf)]
        inside = torch.ones(ctx.input_shape, dtype=torch.bool)
        indices = list(range(ctx.input_shape[-1]))
        if self.columns is not None:
            inside = last_axis_mask(ctx, self.columns, self.name)
            indices = [ctx.feature_names.index(n) for n in self.columns]
        low, high = (self._given(value, fallback, option, indices) for value, fallback, option
                     in ((self.low, default[0], "low"), (self.high, default[1], "high")))
        low, high = torch.where(inside, low, -torch.inf), torch.where(inside, high, torch.inf)
        if (low > high).any():
            raise ArproError("property 'range': low is above high for some feature")
        return low.to(ctx.x_bad.dtype), high.to(ctx.x_bad.dtype)

    @staticmethod
    def _given(value: Any, fallback: Tensor, option: str, indices: list[int]) -> Tensor:
        """A bound on ``[*X]``: one number for all, one per feature ``indices`` names (last axis), or the fallback."""
        if value is None:
            return fallback.float()
        if not isinstance(value, list):
            return torch.full(fallback.shape, float(value))
        if len(value) != len(indices):
            raise ArproError(f"property 'range': option {option!r} has {len(value)} values for {len(indices)} features")
        per_feature = torch.zeros(fallback.shape[-1])
        per_feature[indices] = torch.tensor(value, dtype=torch.float32)
        return per_feature.expand(fallback.shape)

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        low, high = self.bounds(ctx)
        return torch.maximum(low - x_fix, x_fix - high).clamp(min=0).flatten(1).amax(1)


def apply_constraints(properties: list[Property], ctx: PropertyContext) -> tuple[Tensor, Tensor | None, tuple | None]:
    """omega after the run's constraints, the frozen input elements ``[B, *X]`` and the bounds.

    Out-of-bounds elements of ``x_bad`` join omega; frozen ones leave it (a frozen element out
    of bounds keeps its value: the engine's bounds widen to it there, and the range metric shows
    the violation). An input whose whole omega is frozen cannot be repaired: an error.
    """
    frozen_masks, bound_pairs = [], []
    for p in properties:
        with registry.blame("property", p.name, "in frozen() or bounds()"):
            frozen_masks += [m for m in [p.frozen(ctx)] if m is not None]
            bound_pairs += [b for b in [p.bounds(ctx)] if b is not None]
    omega, frozen, bounds, outside = ctx.omega, None, None, torch.zeros_like(ctx.x_bad, dtype=torch.bool)
    if bound_pairs:
        shape = ctx.x_bad.shape  # a property's bounds are [*X] (every input) or [B, *X] (each its own)
        bounds = (torch.stack([low.expand(shape) for low, _ in bound_pairs]).amax(0),
                  torch.stack([high.expand(shape) for _, high in bound_pairs]).amin(0))
        if (bounds[0] > bounds[1]).any():
            raise ArproError("the run's ranges leave no allowed value for some feature")
        outside = (ctx.x_bad < bounds[0]) | (ctx.x_bad > bounds[1])
        omega = torch.maximum(omega, (ctx.detector.feature_mask(outside.to(omega.dtype)) > 0).to(omega.dtype))
    if frozen_masks:
        frozen = torch.stack(frozen_masks).amax(0)
        if bounds is not None:  # immutable wins: a frozen value out of range stays, and the range reports it
            keep = frozen.bool() & outside
            omega = torch.minimum(omega, (ctx.detector.feature_mask(keep.to(omega.dtype)) <= 0).to(omega.dtype))
            bounds = (torch.where(keep, torch.minimum(bounds[0], ctx.x_bad), bounds[0]),
                      torch.where(keep, torch.maximum(bounds[1], ctx.x_bad), bounds[1]))
        before = omega.flatten(1).any(1)
        omega = omega * (ctx.detector.feature_mask(frozen) <= 0).to(omega.dtype)
        emptied = (before & ~omega.flatten(1).any(1)).nonzero().flatten().tolist()
        if emptied:
            raise ArproError(f"input(s) {emptied}: every feature flagged anomalous is immutable; nothing is left to repair")
    return omega, frozen, bounds
