"""Helpers the time-series benchmarks share: scores in batches and detection metrics.

Conformal thresholds are the core's (:func:`arpro.conformal_threshold`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc


def scores(detector, x: Tensor, batch_size: int = 128) -> Tensor:
    """``s(x)`` for many windows, without gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(detector.score(x[start : start + batch_size].contiguous()))
    return torch.cat(out) if out else torch.zeros(0)


def auroc(labels, values) -> float:
    """Area under the ROC curve: the probability that a random anomalous window outscores a normal one (ties half)."""
    target = torch.as_tensor(np.asarray(labels)).long()
    if target.min() == target.max():
        return float("nan")
    v = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    # binary_auroc reads values outside [0, 1] as logits and squashes them with a sigmoid, which
    # ties every score above ~37; an order-preserving map into [0, 1] keeps them apart
    v = (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else torch.zeros_like(v)
    return float(binary_auroc(v, target))


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
