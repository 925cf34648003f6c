"""Checks a plugin's own tests call, as diffusers' model tester mixins are used: each one asserts a
part of arpro's contract for a detector, a repairer or a property, and fails with a message that
says what broke.

    from arpro.testing import check_checkpoint_round_trip, check_decomposition, fitted_detector

    def test_my_detector_obeys_the_contract(tmp_path):
        detector, x = fitted_detector("my-detector")
        check_decomposition(detector, x)
        check_checkpoint_round_trip(detector, tmp_path / "d.safetensors", x)

The built-in plugins' tests (``plugins/*/tests``) and the example plugin's use these same checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arpro.io.checkpoint import load, save
from arpro.plugin_api import registry
from arpro.plugin_api.models import Detector, Model
from arpro.plugin_api.protocols import Property, PropertyContext


def fitted_detector(name: str, n_train: int = 32, n_test: int = 4, **config: Any) -> tuple[Detector, Tensor]:
    """Detector ``name`` fitted (with its ``smoke_fit_options``: a few steps) on ``n_train`` training samples
    of its domain's embedded dataset, and ``n_test`` of its test samples to check it on."""
    cls = registry.get("detector", name)
    dataset = registry.get_default("dataset", cls.domain)()
    torch.manual_seed(0)
    detector = cls.for_dataset(dataset, **config)
    detector.fit(dataset.train().x[:n_train], seed=0, progress=False, **cls.smoke_fit_options)
    return detector.eval(), dataset.test().x[:n_test]


def check_decomposition(detector: Detector, x: Tensor, rtol: float = 1e-5) -> None:
    """Paper Def. 2.1: ``s(x) = alpha(x).flatten(1).sum(1) + beta(x)`` exactly (up to ``rtol``), against the
    detector's independent ``reference_score`` where it has one; ``alpha`` is ``[B, *F]``, finite; ``beta`` ``[B]``."""
    with torch.no_grad():
        d = detector.decompose(x)
        reference = detector.reference_score(x)
    s = reference if reference is not None else detector.score(x)
    assert d.beta.shape == (x.shape[0],), f"beta has shape {tuple(d.beta.shape)}, not [B] = [{x.shape[0]}]"
    assert d.alpha.shape[0] == x.shape[0], f"alpha has {d.alpha.shape[0]} samples, the input {x.shape[0]}"
    assert torch.isfinite(d.alpha).all() and torch.isfinite(d.beta).all(), "alpha or beta is not finite"
    residual = (s - d.alpha.flatten(1).sum(1) - d.beta).abs()
    assert torch.all(residual <= rtol * (1 + s.abs())), f"s(x) != sum(alpha) + beta: residual {residual.tolist()}"


def check_gradient(detector: Detector, x: Tensor) -> None:
    """Guidance needs ``∇_x s(x)``: finite, and not zero everywhere."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        detector.decompose(x).score.sum().backward()
    assert x.grad is not None, "s(x) has no gradient with respect to x"
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, "the gradient of s(x) is not finite, or zero"


def check_checkpoint_round_trip(model: Model, path: Path, x: Tensor | None = None) -> Model:
    """Saved and loaded as a user's checkpoint: the same config (JSON), the same tensors, and for a
    detector with ``x``, the same scores. Returns the loaded model."""
    json.dumps(model.config)  # a checkpoint's config is JSON
    kind = "detector" if isinstance(model, Detector) else "repairer"
    save(model, Path(path))
    loaded = load(Path(path), kind, model.name)
    assert loaded.config == json.loads(json.dumps(model.config)), f"config changed: {loaded.config} != {model.config}"
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys(), f"tensors differ: {sorted(before.keys() ^ after.keys())}"
    for key in before:
        assert torch.equal(before[key].cpu(), after[key].cpu()), f"tensor {key!r} changed in the round trip"
    if x is not None and isinstance(model, Detector):
        with torch.no_grad():
            assert torch.allclose(model.score(x), loaded.score(x), rtol=1e-5, atol=1e-6), "scores changed"
    return loaded


def check_property_contract(prop: Property, ctx: PropertyContext, x_fix: Tensor) -> None:
    """A property's loss, metric and verdict are ``[B]``; the loss is finite and, for a guiding property,
    differentiable in ``x_fix``; the verdict is boolean; a constraint's ``frozen``/``bounds`` fit the input."""
    detector = ctx.detector
    x = x_fix.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        fix = detector.decompose(x) if detector is not None and prop.needs_detector else None
        loss = prop.loss(ctx, x, fix)
    batch = (x_fix.shape[0],)
    assert loss.shape == batch and torch.isfinite(loss).all(), f"loss must be finite [B], got {tuple(loss.shape)}"
    if prop.guides:
        assert loss.requires_grad, "a guiding property's loss must be differentiable in x_fix (or set guides = False)"
    with torch.no_grad():
        fix = detector.decompose(x_fix) if detector is not None else None
        metric = prop.metric(ctx, x_fix, fix)
        holds = prop.holds(ctx, metric)
    assert metric.shape == batch, f"metric must be [B], got {tuple(metric.shape)}"
    assert holds.shape == batch and holds.dtype == torch.bool, f"holds must be bool [B], got {holds.dtype}"
    frozen, bounds = prop.frozen(ctx), prop.bounds(ctx)
    if frozen is not None:
        assert frozen.shape == x_fix.shape, f"frozen must be [B, *X], got {tuple(frozen.shape)}"
    for bound in bounds or ():
        torch.broadcast_shapes(bound.shape, x_fix.shape)  # [*X] or [B, *X]
