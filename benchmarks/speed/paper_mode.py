"""The fast default against paper mode (DDPM over every training timestep), guided arm, per detector.

Paper mode is the paper's sampler: DDPM over all the repairer's training timesteps from the SDEdit
start, guidance at every step, with the detector's per-step guidance scale of that sampler.
Both run on the same anomalous test samples of each detector's
embedded dataset (16 images or 64 rows/windows; quick: gaussian only, 16 rows), same seeds,
bundled checkpoints. Reports seconds, the ratio (bar: paper / default >= 10x) and the guided
medians of Ms and the all-hold rate of both, so the speed-up is seen beside what it costs.
"""

from __future__ import annotations

import statistics

import torch

import arpro

PAPER = {"scheduler": "ddpm", "guide_every": 1, "guide_at": "spread"}  # steps: all the repairer's timesteps
# the guidance scales paper mode was measured with, per step, where they differ from the detector's default
PAPER_SCALE = {"fastflow": 1e-3, "efficientad": 2e-3, "gpt2": 0.03, "llama2": 0.03}
VISION = ("fastflow", "efficientad")
BAR = 10.0


def guided(run: arpro.Run, x: torch.Tensor, settings: arpro.RepairSettings, batch: int) -> tuple[float, list, list]:
    """Seconds, Ms and all-hold of the guided arm over ``x`` in batches (sample i has seed i)."""
    seconds, ms, hold = 0.0, [], []
    for start in range(0, len(x), batch):
        result = run.repair(x[start:start + batch], settings=settings, seed=start, arms=("guided",), progress=False)
        arm = result.arms["guided"]
        seconds += arm.seconds
        ms += arm.metrics["Ms"].tolist()
        hold += arm.all_hold.float().tolist()
    return seconds, ms, hold


def run(quick: bool) -> dict:
    rows = []
    detectors = ("gaussian",) if quick else ("gaussian", "autoencoder", "gpt2", "llama2", *VISION)
    for name in detectors:
        run = arpro.resolve(arpro.RunSpec(detector=name, device="cpu"), progress=False)
        count = 16 if quick or name in VISION else 64
        x = run.dataset.test().anomalous().x[:count]
        batch = min(len(x), 8 if name in VISION else 64)
        default = arpro.RepairSettings.for_detector(run.detector)
        scale = {"guidance_scale": PAPER_SCALE[name]} if name in PAPER_SCALE else {}
        paper = arpro.RepairSettings.for_detector(run.detector, steps=run.repairer.train_timesteps, **PAPER, **scale)
        fast, fast_ms, fast_hold = guided(run, x, default, batch)
        slow, slow_ms, slow_hold = guided(run, x, paper, batch)
        rows.append({"detector": name, "inputs": len(x), "default s": fast, "paper s": slow,
                     "paper / default": slow / fast, f"met (>= {BAR:g})": slow / fast >= BAR,
                     "default median Ms": statistics.median(fast_ms), "paper median Ms": statistics.median(slow_ms),
                     "default all-hold": statistics.fmean(fast_hold), "paper all-hold": statistics.fmean(slow_hold)})
    return {"rows": rows}
