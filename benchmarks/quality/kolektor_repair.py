"""Repairs of KolektorSDD cracks: a DDPM trained by the documented command against the training-free nearest-patches (needs ../shared/data/kolektorsdd).

    python -m benchmarks run kolektor_repair [--quick]

The default image detector (``patchcore``, else ``patchnn``) and each repairer are trained by
the CLI's documented commands on one thread (``arpro train detector ...``, ``arpro train
repairer --repairer ddpm ... --option image_size=256``, ``arpro train repairer --repairer
nearest-patches ...``), their wall times measured. Per repairer:

- ``infill_ratio``: the in-fill ratio ``arpro train repairer`` prints (the repairer's in-fill
  error over the training mean's, on the training split's held-out tenth of normal pictures);
- on the *report* half of the cracks (:func:`benchmarks.quality.omega_rule.halves`: sorted by
  name, odd positions; the even ones were for choosing) repaired by ``Run.repair`` (guided arm),
  for the inputs the detector flags (score at or above the check's TNR threshold) and for all:
  P1, all of P1–P4, TNR, and the *detail* figure: the high-frequency energy (the dataset's
  ``detail_map``, the squared Laplacian) inside ω of the repair, and of the input, over that of
  the normal test pictures in the same place (1: as much fine detail; the bar is 0.5–1.5).

Quick: the DDPM trains 100 steps (``--model-option train_steps=100``) and 6 cracks are repaired.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import arpro
from benchmarks.harness import shared_data
from benchmarks.quality.omega_rule import default_detector_name, halves

ARPRO = str(Path(sys.executable).with_name("arpro"))
DATA = ["--dataset", "mvtec:commutator"]


def arpro_cli(command: list[str]) -> tuple[float, str]:
    """Run ``arpro COMMAND`` on one thread; its wall time and stdout (an error is raised with its last line)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARPRO_NUM_THREADS": "1", "COLUMNS": "400"}
    start = time.perf_counter()
    proc = subprocess.run([ARPRO, *command], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise arpro.ArproError(f"arpro {' '.join(command[:3])}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - start, proc.stdout


def infill_ratio(stdout: str) -> float | None:
    """The ratio in the line ``arpro train repairer`` prints: repairer MSE over the training mean's."""
    match = re.search(r"repairer ([0-9.e+-]+) vs training mean ([0-9.e+-]+)", stdout)
    return float(match.group(1)) / float(match.group(2)) if match else None


def figures(run: arpro.Run, threshold: float, x: torch.Tensor, ids: list[str], valid, normal: torch.Tensor) -> dict:
    """Guided repairs of ``x``: P1, all-hold, TNR and the detail ratios, for the flagged inputs and for all."""
    result = run.repair(x, ids=ids, arms=("guided",), progress=False, valid=valid)
    guided = result.arms["guided"]
    normal_map = run.dataset.detail_map(normal)
    region = result.omega_input
    fix, normal_in, has = arpro.region_detail(run.dataset.detail_map(guided.x_fix), normal_map, region)
    before = arpro.region_detail(run.dataset.detail_map(x), normal_map, region)[0]
    out = {}
    for name, keep in (("flagged", flagged(result, threshold)), ("all", torch.ones_like(result.score_bad, dtype=torch.bool))):
        k = keep & has
        out[name] = {**property_figures(guided, keep, threshold),
                     "detail_repair": float(fix[k].sum() / normal_in[k].sum()) if k.any() else None,
                     "detail_input": float(before[k].sum() / normal_in[k].sum()) if k.any() else None}
    return out


def flagged(result, threshold: float) -> torch.Tensor:
    """The inputs the detector flags (score at or above the check's TNR threshold) with something to repair."""
    return (result.score_bad >= threshold) & ~result.nothing_to_repair


def property_figures(arm, keep: torch.Tensor, threshold: float) -> dict:
    """Of the repairs ``keep`` selects: how many, and the shares where P1 holds, all four hold, and the score is normal."""
    if not keep.any():
        return {"n": 0, "P1": None, "all_hold": None, "TNR": None}
    return {"n": int(keep.sum()), "P1": float(arm.holds["p1"][keep].float().mean()),
            "all_hold": float(arm.all_hold[keep].float().mean()),
            "TNR": float((arm.score[keep] < threshold).float().mean())}


def run(quick: bool) -> dict:
    root = str(shared_data("kolektorsdd"))
    data = [*DATA, "--data-root", root]
    detector = default_detector_name()
    ddpm_options = ["--model-option", "train_steps=100"] if quick else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        det = Path(tmp) / "det.safetensors"
        det_s, _ = arpro_cli(["train", "detector", "--detector", detector, *data, "--out", str(det)])
        for repairer, extra in (("nearest-patches", []), ("ddpm", ddpm_options)):
            out = Path(tmp) / f"{repairer}.safetensors"
            command = ["train", "repairer", "--repairer", repairer, *data, "--option", "image_size=256", *extra,
                       "--out", str(out)]
            train_s, stdout = arpro_cli(command)
            spec = arpro.RunSpec(detector=detector, detector_checkpoint=det, repairer=repairer, repairer_checkpoint=out,
                                 dataset="mvtec:commutator", data_root=Path(root))
            run_ = arpro.resolve(spec, progress=False)
            test = run_.dataset.test()
            threshold = arpro.tnr_threshold(run_.dataset, run_.detector)
            bad = test.anomalous()
            report = halves(bad.ids)[1].nonzero().flatten().tolist()
            chosen = bad.subset(report[:6] if quick else report)
            normal = test.x[test.labels == 0]
            rows.append({"repairer": repairer, "command": "arpro " + " ".join(command[:-2]), "train_s": round(train_s, 1),
                         "infill_ratio": infill_ratio(stdout),
                         **figures(run_, threshold, chosen.x, chosen.ids, chosen.valid, normal)})
    return {"detector": detector, "detector_train_s": round(det_s, 1), "rows": rows,
            "bars": {"flagged P1": 0.95, "flagged TNR": 0.9, "detail_repair": [0.5, 1.5]}}
