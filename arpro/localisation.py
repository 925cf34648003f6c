"""Whether omega lies on the defect: a repair explains an input only if omega covers what is wrong
with it. Against a dataset's labelled elements (pixel masks; time steps and sensors), on the
detector's features where omega is chosen: omega's precision, recall and touch, alpha's AUROC."""

from __future__ import annotations

import statistics

import torch
from torch import Tensor


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


def omega_on_truth(omega: Tensor, alpha: Tensor, truth: Tensor) -> list[dict | None]:
    """Per input (``[B, *F]`` each; ``truth`` 1 = anomalous feature): omega's ``precision`` and
    ``recall``, ``touches`` (they share an element) and ``alpha_auroc``; None where the mask is
    empty (nothing labelled to find)."""
    rows: list[dict | None] = []
    for o, a, t in zip(omega.flatten(1) > 0.5, alpha.flatten(1), truth.flatten(1) > 0.5, strict=True):
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
