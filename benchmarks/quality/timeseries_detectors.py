"""Window-level detection quality of the time-series detectors on the embedded plant (seed 2), per attack kind.

A window is anomalous if any of its time steps is attacked. The decision threshold is the 95%
split-conformal threshold of the held-out normal (validation) windows' scores; AUROC needs none.
Per kind, the windows overlapping an attack of that kind (or its aftermath, until the plant has
settled) are scored against all normal test windows. Models: the bundled gpt2 and llama2 (trained
on the seed-0 plant; settings chosen on seed 1; seed 2 is for reporting). Quick: gpt2 only.
"""

from __future__ import annotations

import torch

import arpro
from arpro_timeseries.evaluation import detection_metrics


def windows_of_kind(dataset, test: arpro.Split) -> dict[str, torch.Tensor]:
    """For each attack kind, a boolean over the test windows: does the window overlap such an attack?"""
    starts = torch.tensor([int(i.split("@")[1]) for i in test.ids])
    out = {}
    for attack in dataset.attacks():
        hit = (starts < attack["settled"]) & (starts + dataset.window > attack["start"])
        out[attack["kind"]] = out.get(attack["kind"], torch.zeros(len(test), dtype=torch.bool)) | hit
    return out


def run(quick: bool) -> dict:
    dataset = arpro.get("dataset", "process")(seed=2)
    trained_on = arpro.get("dataset", "process")()  # the bundled models are those of the seed-0 plant
    test = dataset.test()
    normal = test.labels == 0
    kinds = windows_of_kind(dataset, test)
    rows = []
    for name in ("gpt2",) if quick else ("gpt2", "llama2"):
        detector = arpro.obtain_model("detector", name, trained_on, progress=False)
        threshold = arpro.conformal_threshold(arpro.scores(detector, dataset.validation().x), 0.95)
        s = arpro.scores(detector, test.x)
        for kind, keep in [("all", torch.ones(len(test), dtype=torch.bool)),
                           *((k, v | normal) for k, v in sorted(kinds.items()))]:
            m = detection_metrics(test.labels[keep], s[keep], threshold)
            rows.append({"detector": name, "kind": kind, "anomalous windows": int(test.labels[keep].sum()),
                         "precision": m["precision"], "recall": m["recall"], "F1": m["f1"], "AUROC": m["auroc"],
                         "threshold": threshold})
    return {"test windows": len(test), "anomalous": int(test.labels.sum()), "rows": rows}
