"""Guided repair against its two unguided baselines on the embedded textures (the paper's Tables 1 and 3).

For each category (brick, grass, gravel) and detector (fastflow, efficientad), the 30 defective
test patches are repaired with the default settings (DDIM, 50 steps, SDEdit start 0.6, P1-P4,
the detector's guidance scale); batch b uses seed = its first index, so the arms share their
noise. Detectors as in vision_detectors (bundled for brick, fitted otherwise); the repairer is
the bundled brick DDPM for every category. Per arm: medians of Ms, Md, Momega, Momega_bar
(lower is better) and TNR, the share of repairs at or below the split-conformal 95% threshold
of the category's 20 normal test patches. Quick: brick, fastflow, 4 patches.
"""

from __future__ import annotations

import statistics

import torch

import arpro

METRICS = ("Ms", "Md", "Momega", "Momega_bar")
BATCH = 10


def run(quick: bool) -> dict:
    brick = arpro.get("dataset", "textures")(root=None, category="brick")
    repairer = arpro.obtain_model("repairer", "ddpm", brick, progress=False)
    rows = []
    for category in ("brick",) if quick else ("brick", "grass", "gravel"):
        dataset = arpro.get("dataset", "textures")(root=None, category=category)
        test = dataset.test()
        bad = test.anomalous().x[: 4 if quick else None]
        for name in ("fastflow",) if quick else ("fastflow", "efficientad"):
            detector = arpro.obtain_model("detector", name, dataset, progress=False)
            with torch.no_grad():
                threshold = arpro.conformal_threshold(detector.score(test.x[test.labels == 0]))
            settings = arpro.RepairSettings.for_detector(detector)
            values = {arm: {m: [] for m in (*METRICS, "score")} for arm in arpro.ARMS}
            for start in range(0, len(bad), BATCH):
                result = arpro.repair(bad[start:start + BATCH], detector, repairer, settings=settings, seed=start,
                                      progress=False)
                for arm in arpro.ARMS:
                    for m in METRICS:
                        values[arm][m] += result.arms[arm].metrics[m].tolist()
                    values[arm]["score"] += result.arms[arm].score.tolist()
            for arm, v in values.items():
                rows.append({"category": category, "detector": name, "arm": arm, "n": len(bad),
                             **{f"median {m}": statistics.median(v[m]) for m in METRICS},
                             "TNR": sum(s <= threshold for s in v["score"]) / len(bad)})
    return {"repairer": "bundled brick ddpm", "rows": rows}
