"""The detection metrics every workflow and plugin shares: AUROC, F1, scores in batches, the
split-conformal threshold below which a score counts as normal (the TNR of the paper's Table 3),
and whether omega lies on a labelled defect (a repair explains an input only if omega covers what
is wrong with it): omega's precision, recall and touch, and alpha's AUROC, on the detector's features."""

from __future__ import annotations

import math
import statistics
import sys

import torch
from torch import Tensor

from arpro.errors import ArproError
from arpro.plugin_api.models import Detector
from arpro.plugin_api.protocols import Dataset


def auroc(labels: Tensor, values: Tensor) -> float:
    """The chance that an anomalous sample outscores a normal one, ties counting half (Mann–Whitney U);
    NaN without both kinds of sample."""
    values, anomalous = torch.as_tensor(values).double().flatten(), torch.as_tensor(labels).bool().flatten()
    order = values.argsort()
    _, group, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based, tied scores share their mean rank
    ranks = torch.empty_like(values)
    ranks[order] = mean_rank[group]
    n_bad, n_good = int(anomalous.sum()), int((~anomalous).sum())
    if not n_bad or not n_good:
        return float("nan")
    return float((ranks[anomalous].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def f1(labels: Tensor, flagged: Tensor) -> float:
    """F1 of ``flagged`` (predicted anomalous) against ``labels``."""
    truth, flagged = labels.bool(), flagged.bool()
    tp, fp, fn = int((truth & flagged).sum()), int((~truth & flagged).sum()), int((truth & ~flagged).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def scores(detector: Detector, x: Tensor) -> Tensor:
    """``s(x)`` of many samples, in batches of 64, without gradients."""
    with torch.no_grad():
        return torch.cat([detector.score(batch) for batch in x.split(64)])


def conformal_threshold(normal_scores: torch.Tensor, confidence: float = 0.95) -> float:
    """Split-conformal threshold: the ceil((n + 1)·confidence)-th smallest held-out normal score.

    A new normal input scores at or below it with probability >= ``confidence``; a repair
    scoring below it is counted as non-anomalous (TNR, Table 3).
    """
    scores = normal_scores.flatten().sort().values
    n = scores.numel()
    rank = math.ceil((n + 1) * confidence)
    if rank > n:
        return math.inf
    return float(scores[rank - 1])


CONFORMAL_MINIMUM = 19  # held-out normal samples a finite 95% conformal threshold needs: ceil((n + 1)·0.95) <= n


def tnr_threshold(dataset: Dataset, detector: Detector) -> float:
    """The conformal 95% threshold of the held-out normal scores (validation, else the test split's normal samples):
    below it a score counts as normal (TNR). Under 19 it would be infinite, so a smaller validation split is pooled."""
    test, held_out = dataset.test(), dataset.validation()
    test_normal = test.x[test.labels == 0]
    normal = test_normal if held_out is None else held_out.x
    if held_out is not None and len(normal) < CONFORMAL_MINIMUM:
        normal = torch.cat([normal, test_normal])
        print(f"note: the validation split has {len(held_out)} samples, too few for a 95% TNR threshold; it is pooled "
              f"with the test split's {len(test_normal)} normal samples", file=sys.stderr)
    if len(normal) < CONFORMAL_MINIMUM:
        raise ArproError(f"dataset {dataset.name!r} has {len(normal)} held-out normal samples; the 95% TNR "
                         f"threshold needs at least {CONFORMAL_MINIMUM} (more normal data, or a smaller window or stride)")
    return conformal_threshold(scores(detector, normal))


def omega_on_truth(omega: Tensor, alpha: Tensor, truth: Tensor, valid: Tensor | None = None) -> list[dict | None]:
    """Per input (``[B, *F]`` each; ``truth`` 1 = anomalous feature): omega's ``precision`` and
    ``recall``, ``touches`` (they share an element) and ``alpha_auroc``; None where the mask is
    empty (nothing labelled to find). Only the ``valid`` features count (a letterbox's padding, where
    omega never goes, holds no truth to find)."""
    inside = torch.ones_like(truth, dtype=torch.bool) if valid is None else valid > 0.5
    rows: list[dict | None] = []
    for o, a, t, v in zip(omega.flatten(1) > 0.5, alpha.flatten(1), truth.flatten(1) > 0.5, inside.flatten(1), strict=True):
        o, a, t = o[v], a[v], t[v]
        hit, size = int((o & t).sum()), int(o.sum())
        rows.append(None if not t.any() else {
            "precision": hit / size if size else 0.0, "recall": hit / int(t.sum()), "touches": hit > 0,
            "alpha_auroc": auroc(t, a)})
    return rows


def localisation_stats(records: list[dict]) -> dict | None:
    """Over the records that carry ``omega_on_truth``: how many, the share whose omega touches the
    defect, and the means of precision, recall and alpha's per-input AUROC; None without any."""
    rows = [r["omega_on_truth"] for r in records if r.get("omega_on_truth")]
    if not rows:
        return None
    aurocs = [r["alpha_auroc"] for r in rows if r["alpha_auroc"] == r["alpha_auroc"]]  # NaN: a mask covering all
    return {"n": len(rows), "touches": statistics.fmean(r["touches"] for r in rows),
            "precision": statistics.fmean(r["precision"] for r in rows), "recall": statistics.fmean(r["recall"] for r in rows),
            "alpha_auroc": statistics.fmean(aurocs) if aurocs else None}


def region_detail(detail: Tensor, normal_detail: Tensor, region: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample, the mean ``detail`` ``[B, *X]`` inside its 0/1 ``region``, the normal samples' ``normal_detail``
    ``[M, *X]`` (their mean) inside the same region, and whether the region is non-empty."""
    area = region.float().flatten(1).sum(1)
    inside = (detail * region).flatten(1).sum(1) / area.clamp_min(1)
    return inside, (normal_detail.float().mean(0) * region).flatten(1).sum(1) / area.clamp_min(1), area > 0
