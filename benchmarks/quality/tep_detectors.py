"""Window AUROC of the time-series detectors on the Tennessee Eastman process (needs ../shared/data/tep).

The data's protocol 1, as `arpro check --dataset ts-csv --data-root ../shared/data/tep` reads it:
every detector (pca, gpt2, llama2; quick: pca) is fitted with its defaults (`arpro.obtain_model`,
seed 0) on the normal `train.csv` and tested on `test/d00` ... `d21` in ts-csv's default windows.
A window is anomalous if any of its rows is (fault NN starts at row 160 of run dNN). The fault
runs are split in two halves: even-numbered (for choosing settings) and odd-numbered (to report).
Each half's normal windows are those of its runs (their first 160 rows) and all of d00, the run
that is normal throughout: the scores drift along a run, and without d00 the report half's normal
windows would all lie in the first hours. "pooled" ranks all anomalous windows of a half against
its normal windows, leaving out faults 3, 9 and 15, which no method detects from these variables.
The point-wise reference scores every test row once, by the sum over features of alpha of its
window (for pca also its score of the row alone), pooled over all runs and faults (the data's
README: PCA Q 0.873).
"""

from __future__ import annotations

import time

import torch

import arpro
from benchmarks.harness import shared_data

UNDETECTABLE = {3, 9, 15}  # practically undetectable from these variables (the data's README)
HALVES = {"choose": 0, "report": 1}  # run number parity


def run_of(window_id: str) -> int:
    """The run number of a test window id ``test@d05:160`` (5)."""
    return int(window_id.split("@")[1].split(":")[0].lstrip("d"))


def window_figures(test: arpro.Split, scores: torch.Tensor) -> dict:
    """AUROC per fault (against its half's normal windows) and pooled per half, faults 3, 9, 15 left out."""
    runs = torch.tensor([run_of(i) for i in test.ids])
    normal = test.labels == 0
    faults, pooled = {}, {}
    for half, parity in HALVES.items():
        in_half = (runs % 2 == parity) | (runs == 0)  # d00's normal windows serve both halves
        for fault in sorted({int(r) for r in runs[in_half] if r > 0}):
            keep = in_half & (normal | (runs == fault))
            faults[fault] = arpro.auroc(test.labels[keep], scores[keep])
        counted = torch.tensor([int(r) not in UNDETECTABLE for r in runs])
        keep = in_half & (normal | counted)
        pooled[half] = {"auroc": arpro.auroc(test.labels[keep], scores[keep]),
                        "normal": int((keep & normal).sum()), "anomalous": int((keep & ~normal).sum())}
    return {"faults": faults, "pooled": pooled}


def rows_once(test: arpro.Split) -> torch.Tensor:
    """Indices ``(window, step)`` of the test rows, each row once (the last window of a run overlaps the one before)."""
    seen, picked = set(), []
    for w, window_id in enumerate(test.ids):
        run, start = window_id.split("@")[1].rsplit(":", 1)
        for t in range(test.x.shape[1]):
            if (run, int(start) + t) not in seen:
                seen.add((run, int(start) + t))
                picked.append((w, t))
    return torch.tensor(picked)


def pointwise(detector: arpro.Detector, test: arpro.Split, rows: torch.Tensor) -> dict[str, float]:
    """Row AUROC, pooled over every run and fault: ``Σ_d alpha`` of the row; for pca also its score of the
    row alone (PCA scores rows one at a time, so a window of one row gives the row's own T² as beta)."""
    labels = test.masks[rows[:, 0], rows[:, 1], 0]
    with torch.no_grad():
        alpha = torch.cat([detector.decompose(b).alpha for b in test.x.split(64)])
        figures = {"sum of alpha": arpro.auroc(labels, alpha.sum(-1)[rows[:, 0], rows[:, 1]])}
        if detector.name == "pca":
            single = detector.decompose(test.x[rows[:, 0], rows[:, 1]][:, None, :])
            figures["row score"] = arpro.auroc(labels, single.score)
    return figures


def run(quick: bool) -> dict:
    dataset = arpro.get("dataset", "ts-csv")(root=shared_data("tep"))
    test = dataset.test()
    rows_of_test = rows_once(test)
    faults: dict[int, dict] = {}
    pooled = []
    for name in ("pca",) if quick else ("pca", "gpt2", "llama2"):
        started = time.time()
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        fitted = time.time() - started
        figures = window_figures(test, arpro.scores(detector, test.x))
        for fault, auroc in figures["faults"].items():
            half = "choose" if fault % 2 == 0 else "report"
            row = faults.setdefault(fault, {"fault": fault, "half": half, "in pooled": fault not in UNDETECTABLE})
            row[name] = auroc
        pooled.append({"detector": name, "choose (even runs)": figures["pooled"]["choose"]["auroc"],
                       "report (odd runs)": figures["pooled"]["report"]["auroc"], "fit s": fitted,
                       **{f"point-wise, {k}": v for k, v in pointwise(detector, test, rows_of_test).items()}})
    counts = {f"anomalous / normal windows, {half} half": f"{n['anomalous']} / {n['normal']}"
              for half, n in figures["pooled"].items()}
    return {"test windows": len(test), **counts, "faults left out of pooled": sorted(UNDETECTABLE),
            "window AUROC per fault": [faults[f] for f in sorted(faults)], "rows": pooled}
