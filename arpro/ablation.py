"""RQ2: how the weights lambda_1..lambda_4 and the overall guidance scale change the metrics.

Each lambda_k is varied over a grid with the others at 1.0 (paper, section 4.2); the overall
scale (lambda_phi, appendix F) is varied as a multiple of the detector's default. Only the
guided arm is run; every point repairs the same inputs from the same seeds.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from arpro.api import repair  # noqa: E402
from arpro.evaluate import METRICS, Job  # noqa: E402
from arpro.progress import progress_bar  # noqa: E402

LABELS = {"p1": "λ1", "p2": "λ2", "p3": "λ3", "p4": "λ4", "scale": "λφ (× default scale)"}
TITLES = {"Ms": "Ms", "Md": "Md", "Momega": "Mω", "Momega_bar": "Mω̄"}


def ablate(job: Job, grid: list[float], progress: bool = True) -> list[dict]:
    """One row per (parameter, value): the mean of each metric over the job's inputs."""
    base_scale = job.settings.guidance_scale if job.settings.guidance_scale is not None else job.detector.guidance_scale
    points = [(p, v) for p in ("p1", "p2", "p3", "p4") for v in grid] + [("scale", v) for v in grid]
    split = job.anomalous
    mask = split.masks if job.mask == "truth" else job.mask
    rows = []
    with progress_bar("ablation", total=len(points), enabled=progress) as advance:
        for parameter, value in points:
            if parameter == "scale":
                settings = replace(job.settings, guidance_scale=base_scale * value)
            else:
                settings = replace(job.settings, guidance_scale=base_scale, weights={**job.settings.weights, parameter: value})
            result = repair(split.x, job.detector, job.repairer, properties=job.properties, settings=settings,
                            mask=mask, seed=job.seed, arms=("guided",), ids=split.ids, progress=False)
            guided = result.arms["guided"]
            row = {"parameter": parameter, "value": value}
            row.update({m: statistics.fmean(guided.metrics[m].tolist()) for m in METRICS})
            row["all_hold"] = guided.all_hold.float().mean().item()
            rows.append(row)
            advance()
    return rows


def plot_ablation(rows: list[dict], out_dir: Path) -> list[Path]:
    """One figure per metric, a line per parameter, in the style of the paper's Figure 7."""
    paths = []
    for metric in METRICS:
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for parameter, label in LABELS.items():
            points = [(r["value"], r[metric]) for r in rows if r["parameter"] == parameter]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, "o-", label=label, ms=3)
        ax.set_xscale("log")
        ax.set_xlabel("value (others at 1.0)")
        ax.set_ylabel(f"mean {TITLES[metric]}")
        ax.set_title(TITLES[metric])
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"ablation_{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
