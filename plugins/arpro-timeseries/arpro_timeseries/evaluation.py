"""Window-level detection metrics for the time-series benchmarks.

AUROC, batched scoring and conformal thresholds are the core's (:func:`arpro.auroc`,
:func:`arpro.scores`, :func:`arpro.conformal_threshold`)."""

from __future__ import annotations

import arpro
from torch import Tensor


def detection_metrics(labels: Tensor, values: Tensor, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 of ``values > threshold`` against window labels, and AUROC."""
    truth, flagged = labels.bool(), values > threshold
    tp, fp, fn = int((flagged & truth).sum()), int((flagged & ~truth).sum()), int((~flagged & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": arpro.f1(truth, flagged), "auroc": arpro.auroc(truth, values),
            "threshold": threshold}
