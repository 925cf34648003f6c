"""P1–P4 against values computed by hand on small tensors."""

import pytest
import torch

from arpro import Decomposition, PropertyContext
from arpro.algorithm.properties import LocalizedImprovement, NonDegradation, OverallImprovement, Similarity

# One input, three features; omega flags feature 0.
X_BAD = torch.tensor([[4.0, 1.0, 2.0]])
X_FIX = torch.tensor([[1.0, 1.5, 2.0]])
BAD = Decomposition(alpha=torch.tensor([[9.0, 1.0, 2.0]]), beta=torch.tensor([0.5]))  # s = 12.5
FIX = Decomposition(alpha=torch.tensor([[1.0, 2.0, 2.0]]), beta=torch.tensor([0.25]))  # s = 5.25
OMEGA = torch.tensor([[1.0, 0.0, 0.0]])


def context(delta2=1.0, delta4=0.5):
    return PropertyContext(X_BAD, BAD, OMEGA, OMEGA, torch.tensor([delta2]), torch.tensor([delta4]))


def test_region_scores_include_beta():
    ctx = context()
    assert ctx.bad_in.item() == pytest.approx(0.5 + 9.0)  # s_omega(x_bad)
    assert ctx.bad_out.item() == pytest.approx(0.5 + 1.0 + 2.0)  # s_omega_bar(x_bad)


def test_p1_overall_improvement():
    p, ctx = OverallImprovement(), context()
    assert p.loss(ctx, X_FIX, FIX).item() == pytest.approx(5.25)
    m = p.metric(ctx, X_FIX, FIX)
    assert m.item() == pytest.approx(5.25)
    assert p.holds(ctx, m).item() is True
    assert p.holds(ctx, torch.tensor([12.5])).item() is False  # strict: equal score is no improvement


def test_p2_similarity_only_outside_omega():
    p, ctx = Similarity(), context(delta2=0.25)
    # omega_bar = features 1, 2: differences 0.5 and 0 -> L2 = 0.25, Md = 0.5
    assert p.loss(ctx, X_FIX, FIX).item() == pytest.approx(0.25)
    m = p.metric(ctx, X_FIX, FIX)
    assert m.item() == pytest.approx(0.5)
    assert p.holds(ctx, m).item() is True
    assert p.holds(context(delta2=0.2), m).item() is False


def test_p3_localized_improvement():
    p, ctx = LocalizedImprovement(), context()
    # s_omega(x_fix) = 0.25 + 1 = 1.25; s_omega(x_bad) = 9.5 -> M = -8.25, loss = max(0, M) = 0
    m = p.metric(ctx, X_FIX, FIX)
    assert m.item() == pytest.approx(-8.25)
    assert p.loss(ctx, X_FIX, FIX).item() == 0.0
    assert p.holds(ctx, m).item() is True
    worse = Decomposition(alpha=torch.tensor([[10.0, 0.0, 0.0]]), beta=torch.tensor([0.5]))
    assert p.loss(ctx, X_FIX, worse).item() == pytest.approx(1.0)


def test_p4_non_degradation_with_tolerance():
    p = NonDegradation()
    # s_omega_bar(x_fix) = 0.25 + 2 + 2 = 4.25; s_omega_bar(x_bad) = 3.5 -> M = 0.75
    m = p.metric(context(), X_FIX, FIX)
    assert m.item() == pytest.approx(0.75)
    assert p.loss(context(delta4=0.5), X_FIX, FIX).item() == pytest.approx(0.25)
    assert p.holds(context(delta4=0.5), m).item() is False
    assert p.loss(context(delta4=1.0), X_FIX, FIX).item() == 0.0
    assert p.holds(context(delta4=1.0), m).item() is True


def test_losses_are_differentiable_in_x_fix():
    x = X_FIX.clone().requires_grad_(True)
    loss = Similarity().loss(context(), x, None).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad, torch.tensor([[0.0, 1.0, 0.0]]))  # 2 * (1.5 - 1.0) on omega_bar only
