"""Window AUROC of the time-series detectors on the Tennessee Eastman process (TEP), per fault and pooled.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tep_detectors.py          # pca, gpt2, llama2; ../shared/data/tep
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tep_detectors.py --detector pca --option window=50

The data's protocol 1, as ``arpro check --dataset ts-csv --data-root ../shared/data/tep`` reads it:
every detector is fitted with its defaults (``arpro.obtain_model``, seed 0) on the normal
``train.csv`` and tested on ``test/d00`` … ``d21`` in ts-csv's default windows (``--option``
changes them). A window is anomalous if any of its rows is (fault NN starts at row 160 of run
``dNN``). The fault runs are split in two halves: even-numbered (d02, d04, …: the half for
choosing settings) and odd-numbered (d01, d03, …: the half to report). Each half's normal windows
are those of its runs (their first 160 rows) and all of d00, the run that is normal throughout:
without d00 the report half's normal windows would all lie in the first hours of a run, and the
scores drift along a run (d00's last windows outscore its first), which made even fault 3 look
detected. Per fault, AUROC ranks that run's anomalous windows against its half's normal windows;
"pooled" ranks all anomalous windows of the half against them, leaving out faults 3, 9 and 15,
which no method detects from these variables (their rows still show, per fault).

The point-wise reference scores every test row once, by ``Σ_d alpha[t, d]`` of its window (for
``pca`` the Q statistic of the row, as the data's README computes it: PCA Q pooled AUROC 0.873
over all 22 runs; ``pca`` also by its score of the row alone, Q/q + T²/k), pooled over all runs and
all faults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import arpro
from arpro.plugin_api import registry
from machine import describe

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/tep"))
    parser.add_argument("--detector", action="append", help="detector name (repeatable; default pca, gpt2, llama2)")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE ts-csv option (JSON value)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tep_detectors.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    threads = os.environ.get("OMP_NUM_THREADS")
    command = " ".join([*([f"OMP_NUM_THREADS={threads}"] if threads else []), sys.executable, *sys.argv])
    print(describe(), flush=True)
    print(f"command: {command}", flush=True)
    dataset = registry.get("dataset", "ts-csv")(root=args.data_root, **options)
    test = dataset.test()
    rows = rows_once(test)
    print(f"ts-csv {args.data_root} {options or '(defaults)'}: {len(dataset.train())} training windows of "
          f"{tuple(test.x.shape[1:])}, {len(test)} test windows ({int(test.labels.sum())} anomalous)", flush=True)
    results = {}
    for name in args.detector or ["pca", "gpt2", "llama2"]:
        started = time.time()
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        fitted = time.time() - started
        scores = arpro.scores(detector, test.x)
        results[name] = {"fit_seconds": round(fitted, 1), **window_figures(test, scores),
                         "pointwise": pointwise(detector, test, rows)}
        print(f"{name}: fitted in {fitted:.1f} s; pooled window AUROC choose {results[name]['pooled']['choose']['auroc']:.3f}, "
              f"report {results[name]['pooled']['report']['auroc']:.3f}", flush=True)
    names = list(results)
    first = results[names[0]]
    print(f"\nWindow AUROC per fault (each against its half's normal windows: choose "
          f"{first['pooled']['choose']['normal']}, report {first['pooled']['report']['normal']})")
    print("| fault | half | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for fault in sorted(first["faults"]):
        half = "choose" if fault % 2 == 0 else "report"
        mark = " (excluded from pooled)" if fault in UNDETECTABLE else ""
        print(f"| {fault}{mark} | {half} | " + " | ".join(f"{results[n]['faults'][fault]:.3f}" for n in names) + " |")
    print("\nPooled window AUROC, faults 3, 9, 15 left out (anomalous / normal windows: choose "
          f"{first['pooled']['choose']['anomalous']} / {first['pooled']['choose']['normal']}, report "
          f"{first['pooled']['report']['anomalous']} / {first['pooled']['report']['normal']})")
    print("| detector | choose (even runs) | report (odd runs) | fit s |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {results[n]['pooled']['choose']['auroc']:.3f} | {results[n]['pooled']['report']['auroc']:.3f} | "
              f"{results[n]['fit_seconds']:.1f} |")
    print(f"\nPoint-wise reference, {len(rows)} test rows of all 22 runs, every fault (README: PCA Q 0.873)")
    for n in names:
        print(f"| {n} | " + "; ".join(f"{k} {v:.3f}" for k, v in results[n]["pointwise"].items()) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "machine": describe(), "options": options,
                                    "excluded_from_pooled": sorted(UNDETECTABLE), "detectors": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
