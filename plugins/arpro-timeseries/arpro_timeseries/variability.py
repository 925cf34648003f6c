"""A per-cell variability score: what a reconstruction error cannot see.

A reconstruction model predicts a frozen sensor well (its value is what the model expects for a
few dozen steps) and spreads extra measurement noise over a sum it hardly moves (docs/explanation/timeseries.md:
plant AUROC 0.68 for ``stuck`` and 0.80 for ``noise``). Both are changes of a feature's local
variability, which two robust statistics per (time step, feature) measure:

- stillness, ``log(mean of Δx² over the 8 steps around t + eps)``: exactly ``log eps`` where a
  reading repeats its value, as it never does under measurement noise;
- roughness, ``log(median of (Δ²x)² over the 16 steps around t + eps)``: second differences ignore
  ramps, and the median ignores the few kinks where a pump switches, so only a sustained rise of
  the noise level counts.

Roughness is judged only above the detector's own resolution: its ``eps`` adds ten times the
second difference that the detector's median squared reconstruction error of the feature would
make (6·e² for white errors e), so finer jitter, e.g. a generated repair's on a level whose
measurement noise is far below what any model reconstructs, is not taken for a fault. Each
statistic is compared with its range on the normal training windows (the 0.1% quantile of
stillness, the 99.9% quantile of roughness), and a cell scores the squared log-excess beyond it:

    v[t, d] = on_d · (relu(lo_d − stillness[t, d])² + relu(roughness[t, d] − hi_d)²),

with ``on_d = 0`` for features without measurement noise (pump states), whose every change is a
switch. ``v`` is zero on almost every normal cell, so it adds nothing where reconstruction already
does the job. At the edges a cell takes the statistic of the nearest full window. Every constant
here was chosen on plant seed 1 (docs/decisions/ts-detectors-plant.md).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

STILL_STEPS = 8
ROUGH_STEPS = 16
TAIL = 1e-3  # the training quantile beyond which a cell scores
EPS_OF_MEDIAN = 1e-2  # eps_d = 1% of the feature's median squared difference
RESOLUTION = 10.0  # roughness counts above this many times the detector's reconstruction resolution


def _step_changes(x: Tensor) -> tuple[Tensor, Tensor]:
    """Squared first and second differences along time, ``[B, T-1, D]`` and ``[B, T-2, D]``."""
    first = x[:, 1:] - x[:, :-1]
    return first.pow(2), (first[:, 1:] - first[:, :-1]).pow(2)


def _around(values: Tensor, steps: int, length: int, reduce) -> Tensor:
    """``reduce`` (over the last axis) of the ``steps`` consecutive values around each of ``length``
    time steps, ``[B, length, D]``: reduced once per full window, then spread to the steps."""
    steps = min(steps, values.shape[1])
    reduced = reduce(values.unfold(1, steps, 1))  # [B, windows, D]
    start = (torch.arange(length, device=values.device) - steps // 2).clamp(0, reduced.shape[1] - 1)
    return reduced[:, start]


def statistics(x: Tensor, eps_still: Tensor, eps_rough: Tensor) -> tuple[Tensor, Tensor]:
    """Stillness and roughness of every cell of ``x`` ``[B, T, D]``."""
    first, second = _step_changes(x)
    still = (_around(first, STILL_STEPS, x.shape[1], lambda w: w.mean(-1)) + eps_still).log()
    rough = (_around(second, ROUGH_STEPS, x.shape[1], _lower_median) + eps_rough).log()
    return still, rough


def _lower_median(windows: Tensor) -> Tensor:
    """``windows.median(-1).values`` (the lower middle value), with its gradient on that element.

    torch's median over 16 values per window took half of this score's time on the plant (10 ms of
    19, forward and backward, for 16 windows, scratch timing); a sorting network of element-wise
    minima and maxima finds the value in about a quarter of that, and a gather carries the gradient to
    the first element equal to it (as torch's does). That element is found by element-wise selects
    over the window's columns, not by an argmax over its last axis, which took longer than the
    network: the score fell from 1.5 s to 0.6 s of a guided gpt2 repair of 64 windows (cProfile)."""
    with torch.no_grad():
        columns = windows.movedim(-1, 0).contiguous().unbind(0)  # contiguous columns: a third faster
        values = list(columns)
        for i, j in _sorting_network(len(values)):
            values[i], values[j] = torch.minimum(values[i], values[j]), torch.maximum(values[i], values[j])
        middle = values[(len(values) - 1) // 2]
        index = torch.zeros(middle.shape, dtype=torch.long, device=middle.device)
        for k in range(len(columns) - 1, -1, -1):  # last to first, so the first equal element wins
            index = torch.where(columns[k] == middle, k, index)
    return windows.gather(-1, index.unsqueeze(-1)).squeeze(-1)


@lru_cache
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` values: the compare-exchange pairs in order (the
    network of the next power of two, without the pairs that touch its padding, which would be
    +inf and never move)."""
    size, pairs, p = 1 << max(n - 1, 0).bit_length(), [], 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def fit(train: Tensor, error: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """The normal ranges of both statistics per feature, from windows ``[N, T, D]`` and the
    detector's median squared reconstruction error per feature ``error`` ``[D]``."""
    first, second = (torch.cat(parts) for parts in zip(*(_step_changes(b) for b in train.split(batch_size))))
    median_first = first.flatten(0, 1).median(0).values
    median_second = second.flatten(0, 1).median(0).values
    eps_still = EPS_OF_MEDIAN * median_first + 1e-12
    eps_rough = EPS_OF_MEDIAN * median_second + RESOLUTION * 6 * error + 1e-12
    still, rough = (torch.cat(parts).flatten(0, 1) for parts in
                    zip(*(statistics(b, eps_still, eps_rough) for b in train.split(batch_size))))
    return {"eps_still": eps_still, "eps_rough": eps_rough, "on": (median_second > 0).to(train.dtype),
            "lo": _quantile(still, TAIL), "hi": _quantile(rough, 1 - TAIL)}


def score(x: Tensor, ranges: dict[str, Tensor]) -> Tensor:
    """``v`` ``[B, T, D]``: the squared log-excess of each cell's variability beyond its normal range."""
    still, rough = statistics(x, ranges["eps_still"], ranges["eps_rough"])
    return ranges["on"] * ((ranges["lo"] - still).relu().pow(2) + (rough - ranges["hi"]).relu().pow(2))


def _quantile(values: Tensor, q: float) -> Tensor:
    """Per-column quantile of ``[N, D]`` by order statistic (``torch.quantile`` refuses large inputs)."""
    k = min(values.shape[0], max(1, round(q * (values.shape[0] - 1)) + 1))
    return values.kthvalue(k, dim=0).values
