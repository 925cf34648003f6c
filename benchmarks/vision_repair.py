"""Guided repair against its two unguided baselines on the embedded textures (paper Table 1 and 3).

    OMP_NUM_THREADS=1 python benchmarks/vision_repair.py [--categories brick grass gravel]
        [--detectors fastflow efficientad] [--steps 50] [--model-dir runs/vision-models]
        [--out runs/vision_repair.json]

For each category and detector, the defective test patches (30 per category, textures
defaults; ``--limit N`` takes the first N) are repaired by ``arpro.repair`` with the core's
default ``RepairSettings`` unless overridden (DDIM, 50 steps over [0, T), SDEdit start at
t0 = 0.6, properties P1–P4 with weight 1, the detector's ``guidance_scale``), omega =
``alpha >= tau`` (the 90 % training quantile per pixel); batch b uses seed = its first
index, so the three arms share their noise. Metrics are the core's (sums over pixels): Ms = s(x_fix), Md = ‖ω̄ ⊙ (x_fix − x_bad)‖,
Mω = s_ω(x_fix) − s_ω(x_bad), Mω̄ = s_ω̄(x_fix) − s_ω̄(x_bad). TNR: the fraction of repairs
whose score is at or below the split-conformal 95 % threshold from the category's 20
held-out normal test patches (the ⌈(n+1)·0.95⌉-th smallest score).

Models: detectors as in vision_detectors.py (bundled for brick, cached fits otherwise);
the repairer is the bundled brick DDPM unless ``--model-dir`` holds
``ddpm-textures-CATEGORY-64.safetensors`` for the category (the report says which).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import arpro
from arpro import conformal_threshold
from arpro.io import checkpoint
from arpro.plugin_api import registry

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402
from vision_detectors import cached_model  # noqa: E402

METRICS = ("Ms", "Md", "Momega", "Momega_bar")
ARMS = ("baseline", "infill", "guided")


def repairer_for(dataset, model_dir: Path):
    path = model_dir / f"ddpm-textures-{dataset.category}-{dataset.image_size}.safetensors"
    if path.is_file():
        return checkpoint.load(path, "repairer", "ddpm"), f"ddpm trained on {dataset.category}"
    brick = registry.get("dataset", "textures")(root=None, category="brick")
    bundled = registry.get("repairer", "ddpm").bundled_checkpoint(brick)
    if bundled is None:
        raise SystemExit("no DDPM checkpoint: train one first (see docs/vision.md)")
    return checkpoint.load(bundled, "repairer", "ddpm"), "bundled brick ddpm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    parser.add_argument("--detectors", nargs="+", default=["fastflow", "efficientad"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--eta-schedule", default=None, choices=["sigma", "constant"])
    parser.add_argument("--guide-on", default=None, choices=["x0", "xt"])
    parser.add_argument("--grad-clip", type=float, default=None)
    parser.add_argument("--repairer-checkpoint", type=Path, default=None, help="use this DDPM for every category")
    parser.add_argument("--limit", type=int, default=None, help="repair only the first N anomalies")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--model-dir", type=Path, default=Path("runs/vision-models"))
    parser.add_argument("--out", type=Path, default=Path("runs/vision_repair.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", nargs="+", type=Path, default=None, help="only print the tables of these JSON reports")
    args = parser.parse_args()
    if args.table:
        print(table([row for path in args.table for row in json.loads(path.read_text())["rows"]]))
        return
    torch.set_num_threads(args.threads)
    print(describe())
    args.model_dir.mkdir(parents=True, exist_ok=True)
    settings = arpro.RepairSettings(steps=args.steps, guidance_scale=args.guidance_scale)
    for key in ("eta_schedule", "guide_on", "grad_clip"):  # the core's defaults unless given
        if getattr(args, key) is not None:
            setattr(settings, key, getattr(args, key))
    report = []
    for category in args.categories:
        dataset = registry.get("dataset", "textures")(root=None, category=category)
        test = dataset.test()
        bad = test.anomalous()
        if args.limit:
            bad = arpro.Split(bad.x[: args.limit], bad.labels[: args.limit], bad.masks[: args.limit], bad.ids[: args.limit])
        if args.repairer_checkpoint is not None:
            repairer = checkpoint.load(args.repairer_checkpoint, "repairer", "ddpm")
            repairer_origin = f"{args.repairer_checkpoint} ({repairer.config['train_steps']} steps)"
        else:
            repairer, repairer_origin = repairer_for(dataset, args.model_dir)
        for name in args.detectors:
            detector, origin = cached_model("detector", name, dataset, args.model_dir)
            with torch.no_grad():
                threshold = conformal_threshold(detector.score(test.x[test.labels == 0]))
            values = {arm: {m: [] for m in METRICS + ("score",)} for arm in ARMS}
            seconds = 0.0  # the arms run as one batch: one wall time for all three
            started = time.time()
            for start in range(0, len(bad), args.batch):
                x = bad.x[start : start + args.batch]
                result = arpro.repair(x, detector, repairer, settings=settings, seed=start, progress=False,
                                      ids=bad.ids[start : start + args.batch])  # fmt: skip
                seconds += result.arms['guided'].seconds
                for arm in ARMS:
                    a = result.arms[arm]
                    for m in METRICS:
                        values[arm][m] += a.metrics[m].tolist()
                    values[arm]["score"] += a.score.tolist()
            row = {"category": category, "detector": name, "n": len(bad), "threshold": threshold,
                   "detector_model": origin, "repairer_model": repairer_origin,
                   "guidance_scale": result.settings["guidance_scale"], "wall_s": time.time() - started,
                   "seconds_per_input_all_arms": seconds / len(bad)}  # fmt: skip
            for arm in ARMS:
                row[arm] = {
                    m: {"median": statistics.median(v), "mean": statistics.fmean(v), "std": statistics.pstdev(v)}
                    for m, v in values[arm].items()
                }
                row[arm]["TNR"] = sum(s <= threshold for s in values[arm]["score"]) / len(bad)
                row[arm]["raw"] = values[arm]
            report.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ARMS}), flush=True)
            print(table([row]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings.to_dict(), "rows": report}, indent=2) + "\n")
    print(table(report))


def table(rows: list[dict]) -> str:
    """Table 1 layout: per category mean ± std of each metric for baseline / infill / guided, the Δ rows
    (median over categories of the % improvement of guided over each arm, on the means), then medians and TNR."""
    names = {"Ms": "Ms", "Md": "Md", "Momega": "Mω", "Momega_bar": "Mω̄"}
    out = []
    for name in sorted({r["detector"] for r in rows}):
        sub = [r for r in rows if r["detector"] == name]
        out.append(f"\n**{name}**: mean ± std over the anomalies, baseline / infill / guided (lower is better)\n")
        out.append("| category | " + " | ".join(f"{names[m]} (↓)" for m in METRICS) + " |")
        out.append("|---" * (1 + len(METRICS)) + "|")
        for r in sub:
            cells = [" / ".join(f"{r[a][m]['mean']:.4g} ± {r[a][m]['std']:.2g}" for a in ARMS) for m in METRICS]
            out.append(f"| {r['category']} (n={r['n']}) | " + " | ".join(cells) + " |")
        for ref in ("baseline", "infill"):
            deltas = []
            for m in METRICS:
                imp = [100 * (r[ref][m]["mean"] - r["guided"][m]["mean"]) / abs(r[ref][m]["mean"]) for r in sub
                       if r[ref][m]["mean"] != 0]  # fmt: skip
                deltas.append(f"{statistics.median(imp):+.1f}%" if imp else "n/a (both 0)")
            out.append(f"| Δ guided vs {ref} (↑) | " + " | ".join(deltas) + " |")
        out.append(f"\n**{name}**: medians over the anomalies, baseline / infill / guided; TNR (↑)\n")
        out.append("| category | " + " | ".join(names[m] for m in METRICS) + " | TNR |")
        out.append("|---" * (2 + len(METRICS)) + "|")
        for r in sub:
            cells = [" / ".join(f"{r[a][m]['median']:.4g}" for a in ARMS) for m in METRICS]
            tnr = " / ".join(f"{r[a]['TNR']:.2f}" for a in ARMS)
            out.append(f"| {r['category']} | " + " | ".join(cells) + f" | {tnr} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
