"""Best-of-K repairs and the binomial statistics that certify them.

``arpro.repair`` with ``settings.samples = K`` draws K repairs per input in one batch, draw
``k`` of input ``i`` seeded by ``seed + i + k·DRAW_SEED_STRIDE`` (torch's CPU generator keeps
32 bits of a seed, so the stride stays well inside them; draw 0 is the single-sample
repair, so K = 1 reproduces it exactly). :func:`best_of` keeps, per input, the draw with the
lowest score among those where every constraint (every reported property but P1) holds; where
none does, the draw with the fewest violations, then the lowest score. The violation rate of
the K draws comes with its Clopper–Pearson upper bound.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from arpro.plugin_api.result import ArmResult, Draws

DRAW_SEED_STRIDE = 10_000_019  # a prime: draw k of input i never meets another input's draw (below 10M inputs)
OBJECTIVE = "p1"  # the property best-of-K minimises (the score); every other property is a constraint


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k), summed in log space so large n stays exact to float precision."""
    if k >= n or p <= 0.0:
        return 1.0
    if k < 0 or p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
             for j in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


@functools.lru_cache(maxsize=1024)  # best-of-K asks for at most K + 1 distinct values per run
def clopper_pearson_upper(violations: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on a rate from ``violations`` in ``n`` trials:
    the p with P(Bin(n, p) <= violations) = 1 − confidence (1.0 when every trial violated)."""
    if violations >= n:
        return 1.0
    low, high = violations / n, 1.0
    for _ in range(100):  # bisection: binomial_cdf falls as p grows
        mid = (low + high) / 2
        low, high = (mid, high) if binomial_cdf(violations, n, mid) > 1 - confidence else (low, mid)
    return high


def choose(score: Tensor, holds: dict[str, Tensor], failed: Tensor) -> tuple[Tensor, Tensor]:
    """Per input, the draw to return from ``[K, B]`` verdicts: fewest broken constraints (every
    property but P1; a non-finite draw breaks all), then the lowest score. Returns the chosen
    draw ``[B]`` and each draw's number of broken constraints ``[K, B]``."""
    constraints = [v for name, v in holds.items() if name != OBJECTIVE]
    violations = sum(((~c).int() for c in constraints), torch.zeros(score.shape, dtype=torch.int))
    violations = torch.where(failed, len(constraints) + 1, violations)
    by_score = torch.argsort(score.nan_to_num(nan=math.inf), dim=0, stable=True)  # then a stable sort by
    first = torch.argsort(violations.gather(0, by_score), dim=0, stable=True)[0]  # violations: lexicographic
    return by_score[first, torch.arange(score.shape[1])], violations


def best_of(draws: ArmResult, samples: int, omega_input: Tensor, confidence: float) -> ArmResult:
    """The chosen draw per input from ``draws`` (``samples·B`` repairs, draw-major), with the K
    draws, the case that applied, the violation rate, its bound and the draws' diversity."""
    batch = draws.x_fix.shape[0] // samples

    def grid(t: Tensor) -> Tensor:  # [K·B, ...] -> [K, B, ...]
        return t.reshape(samples, batch, *t.shape[1:])

    chosen, violations = choose(grid(draws.score), {p: grid(v) for p, v in draws.holds.items()}, grid(draws.failed))

    def pick(t: Tensor) -> Tensor:  # the chosen draw of each input
        return grid(t)[chosen, torch.arange(batch)]

    violated = (violations > 0).sum(0)
    inside = (grid(draws.x_fix) * omega_input.unsqueeze(0)).flatten(2).transpose(0, 1).double()  # [B, K, n]
    diversity = torch.cdist(inside, inside).sum((1, 2)) / max(samples * (samples - 1), 1)
    record = Draws(
        x_fix=grid(draws.x_fix), score=grid(draws.score), metrics={m: grid(v) for m, v in draws.metrics.items()},
        holds={p: grid(v) for p, v in draws.holds.items()}, failed=grid(draws.failed), chosen=chosen,
        feasible=violations.min(0).values == 0, violation_rate=violated.double() / samples,
        violation_bound=torch.tensor([clopper_pearson_upper(int(v), samples, confidence) for v in violated]),
        diversity=diversity.float(),
    )
    return ArmResult(x_fix=pick(draws.x_fix), score=pick(draws.score), metrics={m: pick(v) for m, v in draws.metrics.items()},
                     holds={p: pick(v) for p, v in draws.holds.items()}, seconds=draws.seconds, failed=pick(draws.failed),
                     draws=record)
