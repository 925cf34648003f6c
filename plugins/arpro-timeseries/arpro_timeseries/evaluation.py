"""Helpers the time-series benchmarks share: scores in batches, conformal thresholds, detection metrics."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def scores(detector, x: Tensor, batch_size: int = 128) -> Tensor:
    """``s(x)`` for many windows, without gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(detector.score(x[start : start + batch_size].contiguous()))
    return torch.cat(out) if out else torch.zeros(0)


def conformal_threshold(normal_scores: Tensor, alpha: float = 0.05) -> float:
    """Split-conformal threshold at confidence ``1 − alpha`` from held-out normal scores:
    the ``ceil((n + 1)(1 − alpha))``-th smallest score (``inf`` when that exceeds ``n``).
    A new normal window scores below it with probability at least ``1 − alpha``."""
    values = np.sort(normal_scores.detach().cpu().numpy().ravel())
    rank = math.ceil((len(values) + 1) * (1 - alpha))
    return float("inf") if rank > len(values) else float(values[rank - 1])


def auroc(labels: np.ndarray, values: np.ndarray) -> float:
    """Area under the ROC curve (probability a random anomalous window outscores a normal one; ties count half)."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(values)[labels], np.asarray(values)[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    ranks_sorted = np.arange(1, len(order) + 1, dtype=float)
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks_sorted[i : j + 1] = (i + j + 2) / 2
        i = j + 1
    ranks[order] = ranks_sorted
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def detection_metrics(labels: Tensor, values: Tensor, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 of ``values > threshold`` against window labels, and AUROC."""
    y = labels.cpu().numpy().astype(bool)
    s = values.cpu().numpy()
    pred = s > threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "auroc": auroc(y, s), "threshold": threshold}
