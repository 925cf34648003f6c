"""Seconds per 256 px image repair on a GPU, paper settings and the default, beside the paper's Table 7 (needs CUDA).

FastFlow and arpro's default DDPM are built at 256 px and trained for one step: a repair's time
does not depend on what the networks learned. One short warm-up repair comes first, so CUDA's
start-up is not timed. 4 images (quick: 1); each arm runs alone. Without CUDA it stops with one line.
"""

from __future__ import annotations

import torch

import arpro
from benchmarks.harness import BenchmarkError

PAPER_TABLE_7 = {"baseline": 126.50, "guided": 236.37}  # vision, median seconds per repair (their GPU)
SIZE = 256
CONFIGS = {
    "paper (ddpm, 1000 steps, from noise, gradient at x_t)": dict(scheduler="ddpm", steps=1000, start="noise",
                                                                  guide_on="xt", eta_schedule="sigma"),
    "default (ddim, 50 steps, sdedit 0.6)": {},
}


def run(quick: bool) -> dict:
    if not torch.cuda.is_available():
        raise BenchmarkError("needs a CUDA GPU; none is visible here")
    count = 1 if quick else 4
    data = arpro.get("dataset", "textures")(root=None, category="brick", image_size=SIZE, n_train=8,
                                            n_test_normal=2, n_test_anomalous=count)
    fabric = arpro.launch_fabric(device="cuda", precision="32")
    models = []
    for kind, name in (("detector", "fastflow"), ("repairer", "ddpm")):
        model = arpro.get(kind, name).for_dataset(data)
        model.fit(data.train().x, steps=1, batch_size=2, progress=False)
        models.append(arpro.place(model.eval(), fabric))
    detector, repairer = models
    x = data.test().anomalous().x[:count]
    warm_up = arpro.RepairSettings.for_detector(detector, steps=5)
    arpro.repair(x[:1], detector, repairer, settings=warm_up, progress=False)
    rows = []
    for label, given in CONFIGS.items():
        settings = arpro.RepairSettings.for_detector(detector, **given)
        seconds = {arm: arpro.repair(x, detector, repairer, settings=settings, arms=(arm,), progress=False)
                   .arms[arm].seconds / len(x) for arm in arpro.ARMS}
        rows.append({"configuration": label, **{f"{arm} s": s for arm, s in seconds.items()}})
    rows.append({"configuration": "paper, Table 7 (median, their GPU)",
                 **{f"{arm} s": PAPER_TABLE_7.get(arm) for arm in arpro.ARMS}})
    return {"images": count, "size": SIZE, "rows": rows}
