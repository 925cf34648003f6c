"""omega on the defect: which omega rule of the default image detector covers the labelled defect (needs ../shared/data/kolektorsdd).

    python -m benchmarks run omega_rule [--quick]

omega depends on the detector alone (not on the repairer), so every rule (mask, quantile,
dilation) is judged on one decomposition of each defective test picture. The detector is the
image domain's default (else patchnn, the baseline), obtained as the CLI obtains it
(``arpro.obtain_model``, seed 0) on:

- KolektorSDD (``mvtec:commutator``, read at the detector's CLI size) and
- the generated ``surface`` set (seed 0 test pictures),

each split by :func:`halves`, the rule earlier KolektorSDD benchmarks chose sizes on: within each
kind (the id's first folder), sorted by name, even positions *choose*, odd positions *report*.
Quick: ``surface`` alone, 40 training pictures.

omega is computed on the picture (``compute_omega(..., valid=test.valid)``: the letterbox padding,
where the picture's edge and its defects are mirrored, is never in it), grown by ``dilation``
0-2 feature pixels (the core's ``mask_dilation``: a max-pool, cut back to the picture). For each rule and half, over
the defective pictures: ``touch`` (share whose omega, mapped onto the input, shares a pixel with
the ground-truth mask inside the picture), omega's mean ``precision`` and ``recall`` against that
mask, its mean ``area`` (share of the model's square) and ``edge`` (share of omega's pixels within
``EDGE`` pixels of the picture's border); ``alpha_auroc``, the mean over the pictures of alpha's
AUROC against the mask on the picture, as ``arpro evaluate`` reports it (the same for every rule). A rule is *admissible* when its mean area is at most
``MAX_AREA`` and its edge share at most ``MAX_EDGE``; among those, the one with the highest touch on
the choose halves (then precision) is picked, and the report halves were not looked at to pick it.
``run(quick)`` returns the rows and the pick.
"""

from __future__ import annotations

import itertools
import time

import torch
import torch.nn.functional as F

import arpro
from benchmarks.harness import shared_data

RULES = [(mask, q) for mask in ("top", "top-train") for q in (0.9, 0.95, 0.97, 0.99, 0.995)] + [("train", 0.9)]
DILATIONS = (0, 1, 2)  # feature pixels omega grows by (the core's mask_dilation) before it is mapped onto the input
EDGE = 4  # model pixels at the picture's border that count as its edge
MAX_AREA = 0.10
MAX_EDGE = 0.25


def default_detector_name() -> str:
    try:
        return arpro.get_default("detector", "image").name
    except arpro.ArproError:  # no pretrained weights installed: the baseline
        return "patchnn"


def halves(ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the choose half and the report half: per kind (the id's first folder),
    sorted by name, even positions choose and odd positions report."""
    choose = torch.zeros(len(ids), dtype=torch.bool)
    for kind in sorted({i.split("/")[0] for i in ids}):
        members = sorted((name, index) for index, name in enumerate(ids) if name.split("/")[0] == kind)
        for position, (_, index) in enumerate(members):
            choose[index] = position % 2 == 0
    return choose, ~choose


def judge(detector, test, keep: torch.Tensor, half: str, dataset_name: str) -> list[dict]:
    """Every rule's figures on the defective pictures of one half; the defect counts inside the picture only."""
    pick = (test.labels == 1) & keep
    x, truth = test.x[pick], test.masks[pick]
    picture = test.valid[pick] > 0.5 if test.valid is not None else torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool)
    inner = -F.max_pool2d(-picture.float().unsqueeze(1), 2 * EDGE + 1, stride=1, padding=EDGE).squeeze(1) > 0.5
    truth = ((truth.amax(1) if truth.dim() == 4 else truth) > 0.5) & picture
    with torch.no_grad():
        parts = [detector.decompose(batch) for batch in x.split(8)]
    bad = arpro.Decomposition(torch.cat([p.alpha for p in parts]), torch.cat([p.beta for p in parts]))
    alpha = bad.alpha.amax(1) if bad.alpha.dim() == 4 else bad.alpha
    alpha_auroc = float(torch.tensor([arpro.auroc(t[p], a[p]) for t, a, p in zip(truth, alpha, picture, strict=True)]).nanmean())
    rows = []
    for (mask, quantile), dilation in itertools.product(RULES, DILATIONS):
        omega = arpro.compute_omega(detector, bad, mask, quantile, valid=picture.float(), dilation=dilation)
        on_input = (detector.input_mask(omega, x.shape).amax(1) > 0.5) & picture
        hit = (on_input & truth).flatten(1).sum(1).float()
        area = on_input.flatten(1).sum(1).float()
        rows.append(dict(dataset=dataset_name, half=half, mask=mask, quantile=quantile, dilation=dilation,
                         n=int(len(x)),
                         touch=float((hit > 0).float().mean()),
                         precision=float((hit / area.clamp(min=1)).mean()),
                         recall=float((hit / truth.flatten(1).sum(1).clamp(min=1).float()).mean()),
                         area=float(area.mean() / on_input[0].numel()),
                         edge=float(((on_input & ~inner).flatten(1).sum(1) / area.clamp(min=1)).mean()),
                         alpha_auroc=alpha_auroc))
    return rows


def measure(name: str, dataset) -> list[dict]:
    started = time.time()
    detector = arpro.obtain_model("detector", name, dataset, progress=False).eval()
    test = dataset.test()
    rows = []
    for half, keep in zip(("choose", "report"), halves(test.ids), strict=True):
        rows += judge(detector, test, keep, half, dataset.name)
    print(f"{dataset.name}: {name} fitted and judged in {time.time() - started:.0f} s", flush=True)
    return rows


def run(quick: bool) -> dict:
    """The rows of every rule and half, and the rule picked on the choose halves."""
    torch.set_num_threads(1)
    name = default_detector_name()
    surface = arpro.get("dataset", "surface")(root=None, category=None, **({"n_train": 40} if quick else {}))
    rows = measure(name, surface)
    if not quick:
        kolektor, mvtec = shared_data("kolektorsdd"), arpro.get("dataset", "mvtec")
        size = arpro.get("detector", name).dataset_defaults(mvtec).get("image_size", 64)
        rows += measure(name, mvtec(root=kolektor, category="commutator", image_size=size))
    pooled: dict[tuple, list[dict]] = {}
    for r in rows:
        pooled.setdefault((r["mask"], r["quantile"], r["dilation"], r["half"]), []).append(r)

    def mean(key: tuple, field: str) -> float:
        return sum(r[field] for r in pooled[key]) / len(pooled[key])

    admissible = [k for k in pooled if k[3] == "choose" and mean(k, "area") <= MAX_AREA and mean(k, "edge") <= MAX_EDGE]
    best = max(admissible, key=lambda k: (mean(k, "touch"), mean(k, "precision"))) if admissible else None
    return {"detector": name, "rows": rows, "picked": None if best is None else dict(zip(("mask", "quantile", "dilation"), best[:3])),
            "limits": {"max_area": MAX_AREA, "max_edge": MAX_EDGE, "edge_px": EDGE}}

