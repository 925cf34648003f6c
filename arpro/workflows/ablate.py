"""RQ2: how the weights lambda_k of the run's properties and the overall guidance scale change the metrics.

Each lambda_k is varied over a grid with the others at their run's value (1.0 unless given;
paper, section 4.2); the overall scale (lambda_phi, appendix F) is varied as a multiple of
the run's scale. Only the guided arm is run; every point repairs the same inputs from the
same seeds.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import replace
from pathlib import Path

from arpro.errors import ArproError
from arpro.io.outputs import staged_output, strict_json
from arpro.io.run_spec import Run, RunSpec
from arpro.plugin_api.protocols import Split
from arpro.runtime.progress import progress_bar

SCALE = "scale"


def ablate(run: Run, inputs: Split, grid: list[float], progress: bool = True) -> list[dict]:
    """One row per (parameter, value): the mean of each metric over ``inputs`` and the all-hold rate."""
    settings = run.spec.settings
    guiding = [p.name for p in run.spec.guiding if p.guides]
    points = [(p, v) for p in guiding for v in grid] + [(SCALE, v) for v in grid]
    rows = []
    with progress_bar("ablation", total=len(points), enabled=progress) as advance:
        for parameter, value in points:
            if parameter == SCALE:
                varied = replace(settings, guidance_scale=settings.guidance_scale * value)
            else:
                varied = replace(settings, weights={**settings.weights, parameter: value})
            result = run.repair(inputs.x, truth=inputs.masks, ids=inputs.ids, settings=varied, arms=("guided",),
                                progress=False)
            guided = result.arms["guided"]
            row = {"parameter": parameter, "value": value}
            row.update({m: statistics.fmean(v.tolist()) for m, v in guided.metrics.items()})
            row["all_hold"] = guided.all_hold.float().mean().item()
            rows.append(row)
            advance()
    return rows


def label(parameter: str) -> str:
    return "λφ (× the run's scale)" if parameter == SCALE else f"λ {parameter}"


def write_ablation(rows: list[dict], metrics: dict[str, str], out_dir: Path, record: dict) -> list[Path]:
    """``ablation.json`` (``record`` and the rows), ``ablation.csv`` and one plot per metric
    (``metrics``: metric name -> label) in the style of the paper's Figure 7; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "ablation.json").write_text(strict_json({**record, "rows": rows}, indent=2) + "\n")
    with (out_dir / "ablation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths = [out_dir / "ablation.json", out_dir / "ablation.csv"]
    for metric, metric_label in metrics.items():
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for parameter in dict.fromkeys(r["parameter"] for r in rows):
            xs, ys = zip(*[(r["value"], r[metric]) for r in rows if r["parameter"] == parameter])
            ax.plot(xs, ys, "o-", label=label(parameter), ms=3)
        ax.set_xscale("log")
        ax.set_xlabel("value (others at the run's)")
        ax.set_ylabel(f"mean {metric_label}")
        ax.set_title(metric_label)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"ablation_{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def run(spec: RunSpec, out: Path, *, category: str | None = None, limit: int = 100, grid: list[float],
        overwrite: bool = False, progress: bool = True) -> tuple[list[dict], dict[str, str], str, list[Path]]:
    """``arpro ablate``: the rows, the metric labels, a title and the files written to ``out``."""
    from arpro.workflows.evaluate import build_jobs

    if limit < 1:
        raise ArproError("--limit must be at least 1")
    with staged_output(out, overwrite) as stage:
        job = build_jobs(spec, [category] if category else [], limit, limit, progress=progress)[0]
        rows = ablate(job.run, job.anomalous, grid, progress=progress)
        labels = {p.metric_name: p.label() for p in spec.reported}
        record = {"category": job.category, "spec": spec.to_dict()}
        written = [out / p.name for p in write_ablation(rows, labels, stage, record)]
    return rows, labels, f"ablation on {job.category} ({len(job.anomalous)} inputs, guided)", written
