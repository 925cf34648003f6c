"""Every speed figure of issue 14 in one run, for every built-in detector (bundled checkpoints).

    OMP_NUM_THREADS=1 python benchmarks/speed.py --quick          # small counts: a few minutes
    OMP_NUM_THREADS=1 python benchmarks/speed.py                  # the issue's counts, for its bars
    OMP_NUM_THREADS=1 python benchmarks/speed.py --split validation --only arms ...   # to choose settings

Sections (``--only`` picks some):

- ``startup``: ``benchmarks/startup.py``'s commands, interleaved, medians, as multiples of ``import torch``.
- ``floor``: the physical floor of guidance, (denoiser forward + detector forward and backward) / denoiser
  forward, at the batch the arms run at; medians of interleaved repetitions.
- ``arms``: wall seconds of each arm at the defaults (baseline, infill, guided) and the guided/in-fill ratio,
  beside the defaults as they were before issue 14 (``BEFORE``): the same inputs and seeds, repetitions
  interleaved, medians; with the guided medians of Ms, Mω, Mω̄ and the all-hold rate of both.
- ``batch``: seconds per input of the infill and guided arms at batch 1 and at the full batch.
- ``candidates`` (only when asked, with ``--candidate``): the guided arm under each candidate's settings,
  seconds and medians, to choose defaults on ``--split validation``.
- ``paper``: the fast default against paper mode, the paper's sampler (DDPM over all the repairer's
  training timesteps, e.g. 600 reverse steps of 1000 from the SDEdit start at t0 = 0.6, guidance at every
  step) with the detector's settings as they were before issue 14 (the scale is per step, and paper mode
  is the reference the issue measured).

Inputs: the anomalous test samples of each detector's embedded dataset, in order. ``--split report``
(default) takes the first N (full mode: 16 images, 64 rows or windows; quick: a quarter);
``--split validation`` takes N from those after the full mode's 16 or 64, the inputs the defaults
were chosen on. Sample i has seed i in every arm and mode. Every section prints the thread count and the
load average it ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import arpro

sys.path.insert(0, str(Path(__file__).parent))
import startup  # noqa: E402

DETECTORS = ("gaussian", "autoencoder", "gpt2", "llama2", "fastflow", "efficientad")
VISION = ("fastflow", "efficientad")
# each detector's repair settings before issue 14, where they differ from today's defaults
BEFORE: dict[str, dict] = {name: {"guide_every": 1, "guide_at": "spread"} for name in DETECTORS}
BEFORE["fastflow"].update(guidance_scale=1e-3, scheduler="ddim", steps=50)
BEFORE["efficientad"].update(guidance_scale=2e-3)
for name in ("gpt2", "llama2"):
    BEFORE[name].update(guidance_scale=0.03, steps=50)
PAPER = {"scheduler": "ddpm", "guide_every": 1, "guide_at": "spread"}  # and steps: all the repairer's training timesteps
METRICS = ("Ms", "Momega", "Momega_bar")
SECTIONS = ("startup", "floor", "arms", "batch", "paper", "candidates")


def conditions() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"[OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads {torch.get_num_threads()}, "
            f"load average {load}]")


def full_count(name: str) -> int:
    """Inputs per detector in full mode: the issue's counts."""
    return 16 if name in VISION else 64


def inputs(run: arpro.Run, count: int, split: str) -> torch.Tensor:
    """The first ``count`` anomalous test samples (report), or ``count`` from those after the full
    mode's report inputs (validation), so that the two never overlap in either mode."""
    anomalous = run.dataset.test().anomalous().x
    start = 0 if split == "report" else full_count(run.spec.detector)
    x = anomalous[start : start + count]
    if len(x) < count:
        print(f"  note: {run.spec.detector}: only {len(x)} inputs in the {split} split (asked {count})")
    return x


def settings_for(run: arpro.Run, **given) -> arpro.RepairSettings:
    return arpro.RepairSettings.for_detector(run.detector, **given)


def timed_repair(run: arpro.Run, x: torch.Tensor, settings: arpro.RepairSettings, arms, batch: int):
    """Repair ``x`` in batches of ``batch`` (sample i has seed i); per-arm seconds and guided figures.

    Each arm runs alone: arms asked for together run as one stacked batch and share its seconds."""
    seconds = {arm: 0.0 for arm in arms}
    figures: dict[str, list[float]] = {m: [] for m in METRICS + ("all_hold",)}
    for start in range(0, len(x), batch):
        results = {arm: run.repair(x[start : start + batch], settings=settings, seed=start, arms=(arm,), progress=False)
                   for arm in arms}
        for arm in arms:
            seconds[arm] += results[arm].arms[arm].seconds
        if "guided" in arms:
            guided = results["guided"].arms["guided"]
            for m in METRICS:
                figures[m] += guided.metrics[m].tolist()
            figures["all_hold"] += torch.stack(list(guided.holds.values())).all(0).float().tolist()
    return seconds, figures


def summary(figures: dict[str, list[float]]) -> str:
    cells = [f"{m} {statistics.median(figures[m]):.4g}" for m in METRICS]
    return ", ".join(cells) + f", all-hold {statistics.fmean(figures['all_hold']):.2f}"


def section_startup(repeats: int) -> None:
    print(f"\n## start-up: {repeats} interleaved repetitions, medians {conditions()}")
    import shutil
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="arpro-speed-"))
    try:
        timed = startup.commands(out / "repair")
        for command in timed.values():
            startup.wall_seconds(command)
        times = {label: [] for label in timed}
        for _ in range(repeats):
            for label, command in timed.items():
                times[label].append(startup.wall_seconds(command))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"| command | median s | × import torch | bar |\n|---|---|---|---|")
    for label, values in times.items():
        bar = startup.BARS.get(label)
        ratio = statistics.median(values) / torch_s
        verdict = "" if bar is None else f"≤ {bar} {'met' if ratio <= bar else 'NOT met'}"
        print(f"| `{label}` | {statistics.median(values):.3f} | {ratio:.2f} | {verdict} |")


def section_floor(run: arpro.Run, x: torch.Tensor, repeats: int) -> None:
    """(denoiser forward + detector forward/backward) / denoiser forward, at x's batch; beside it the
    denoiser forward under ``torch.inference_mode`` and, for images, in ``channels_last``, two candidates."""
    repairer, detector = run.repairer.eval(), run.detector.eval()
    t = torch.full((len(x),), 500)
    noisy = torch.randn_like(x)
    images = noisy.dim() == 4

    def denoise_no_grad():
        with torch.no_grad():
            repairer(noisy, t)

    def denoise_inference():
        with torch.inference_mode():
            repairer(noisy, t)

    def denoise_channels_last():
        with torch.no_grad():
            repairer(noisy.contiguous(memory_format=torch.channels_last), t)

    def detector_pass():
        z = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(detector.decompose(z).score.sum(), z)

    timed = {"no_grad": denoise_no_grad, "inference": denoise_inference, "detector": detector_pass}
    if images:
        timed["channels_last"] = denoise_channels_last
    times = {label: [] for label in timed}
    for _ in range(repeats):
        for label, call in timed.items():
            if label == "channels_last":
                repairer.to(memory_format=torch.channels_last)
            started = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - started)
            if label == "channels_last":
                repairer.to(memory_format=torch.contiguous_format)
    ms = {label: 1000 * statistics.median(v) for label, v in times.items()}
    last = f"{ms['channels_last']:.2f}" if images else "n/a"
    print(f"| {run.spec.detector} | {len(x)} | {ms['no_grad']:.2f} | {ms['detector']:.2f} | "
          f"{(ms['no_grad'] + ms['detector']) / ms['no_grad']:.2f} | {ms['inference']:.2f} | {last} |")


def section_arms(run: arpro.Run, x: torch.Tensor, batch: int, repeats: int, fast: dict) -> None:
    """Every arm at the defaults, and infill and guided as before issue 14, interleaved; ``fast`` keeps the
    defaults' guided seconds and figures for the paper section (same inputs, seeds and settings)."""
    name = run.spec.detector
    modes = {"default": (settings_for(run), arpro.ARMS),
             "before": (settings_for(run, **BEFORE[name]), ("infill", "guided"))}
    seconds = {mode: {arm: [] for arm in arms} for mode, (_, arms) in modes.items()}
    figures = {}
    for _ in range(repeats):
        for mode, (settings, arms) in modes.items():
            s, figures[mode] = timed_repair(run, x, settings, arms, batch)
            for arm in arms:
                seconds[mode][arm].append(s[arm])
    for mode, (settings, arms) in modes.items():
        med = {arm: statistics.median(seconds[mode].get(arm, [float("nan")])) for arm in arpro.ARMS}
        shown = (*BEFORE[name], "steps", "guidance_scale")
        changed = {k: v for k, v in settings.to_dict().items() if k in shown}
        print(f"| {name} | {mode} {changed} | {len(x)} | {med['baseline']:.3f} | {med['infill']:.3f} | "
              f"{med['guided']:.3f} | {med['guided'] / med['infill']:.2f} | {summary(figures[mode])} |")
    fast[name] = ({"guided": statistics.median(seconds["default"]["guided"])}, figures["default"])


def section_batch(run: arpro.Run, x: torch.Tensor, repeats: int) -> None:
    settings = settings_for(run)
    per_input = {}
    for b in (1, len(x)):
        values = {"infill": [], "guided": []}
        alone = x[:2]  # batch 1: two inputs, one at a time
        for _ in range(repeats):
            s, _ = timed_repair(run, x if b > 1 else alone, settings, ("infill", "guided"), b)
            for arm in values:
                values[arm].append(s[arm] / (len(x) if b > 1 else len(alone)))
        per_input[b] = {arm: statistics.median(v) for arm, v in values.items()}
    one, full = per_input[1], per_input[len(x)]
    print(f"| {run.spec.detector} | {1000 * one['infill']:.2f} / {1000 * one['guided']:.2f} | {len(x)} | "
          f"{1000 * full['infill']:.2f} / {1000 * full['guided']:.2f} | "
          f"{one['infill'] / full['infill']:.1f}× / {one['guided'] / full['guided']:.1f}× |")


def section_paper(run: arpro.Run, x: torch.Tensor, batch: int, known: dict) -> None:
    """The guided arm at the defaults (from the arms section when it ran) against paper mode."""
    name = run.spec.detector
    fast_s, fast = known.get(name) or timed_repair(run, x, settings_for(run), ("guided",), batch)
    paper_mode = settings_for(run, **{**BEFORE[name], **PAPER, "steps": run.repairer.train_timesteps})
    paper_s, paper = timed_repair(run, x, paper_mode, ("guided",), batch)
    ms_fast, ms_paper = statistics.median(fast["Ms"]), statistics.median(paper["Ms"])
    ms_ok = ms_fast <= ms_paper + 0.05 * abs(ms_paper)
    hold_ok = statistics.fmean(fast["all_hold"]) >= statistics.fmean(paper["all_hold"])
    speed = paper_s["guided"] / fast_s["guided"]
    print(f"| {name} | {len(x)} | {fast_s['guided']:.2f} | {paper_s['guided']:.2f} | {speed:.1f}× | "
          f"{summary(fast)} | {summary(paper)} | Ms {'met' if ms_ok else 'NOT met'}, all-hold "
          f"{'met' if hold_ok else 'NOT met'}, speed {'met' if speed >= 10 else 'NOT met'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a few minutes on 2 CPU cores")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS[:-1]))
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--split", choices=("report", "validation"), default="report")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions of the timed arms")
    parser.add_argument("--count", type=int, default=None, help="inputs per detector (default: by mode and domain)")
    parser.add_argument("--candidate", action="append", default=[], type=json.loads,
                        help='settings to try in the candidates section, as JSON, e.g. \'{"guide_every": 3}\'')
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    print(f"# benchmarks/speed.py {' '.join(sys.argv[1:])}: {'quick' if quick else 'full'} mode, "
          f"split {args.split}, {os.cpu_count()} CPUs {conditions()}")
    if "startup" in args.only:
        section_startup(5 if quick else 7)
    runs = {name: arpro.resolve(arpro.RunSpec(detector=name, device="cpu"), progress=False) for name in args.detectors}
    counts = {name: args.count or (full_count(name) // 4 if quick else full_count(name)) for name in runs}
    batches = {name: min(counts[name], 8 if name in VISION else 64) for name in runs}
    x = {name: inputs(run, counts[name], args.split) for name, run in runs.items()}
    fast: dict = {}  # the defaults' guided seconds and figures, by detector
    if "floor" in args.only:
        print(f"\n## physical floor of guidance, per step {conditions()}\n")
        print("| detector | batch | denoiser forward ms | detector forward+backward ms | floor | "
              "denoiser, inference_mode ms | denoiser, channels_last ms |\n|---|---|---|---|---|---|---|")
        for name, run in runs.items():
            section_floor(run, x[name][: batches[name]], 5 if quick else 11)
    if "arms" in args.only:
        print(f"\n## arms at the defaults, seconds for all inputs, medians of {repeats} {conditions()}\n")
        print("| detector | settings | inputs | baseline s | infill s | guided s | guided / infill | guided medians |")
        print("|---|---|---|---|---|---|---|---|")
        for name, run in runs.items():
            section_arms(run, x[name], batches[name], repeats, fast)
    if "batch" in args.only:
        print(f"\n## batch scaling at the defaults, ms per input (infill / guided), one repetition {conditions()}\n")
        print("| detector | batch 1 | batch | full batch | batch 1 / full |\n|---|---|---|---|---|")
        for name, run in runs.items():
            section_batch(run, x[name][: batches[name]], 1)
    if "paper" in args.only:
        print(f"\n## fast default vs paper mode (guided arm) {conditions()}\n")
        print("| detector | inputs | default s | paper s | paper / default | default medians | paper medians | bar |")
        print("|---|---|---|---|---|---|---|---|")
        for name, run in runs.items():
            section_paper(run, x[name], batches[name], fast)
    if "candidates" in args.only:
        print(f"\n## candidate settings, guided arm {conditions()}\n")
        print("| detector | settings | inputs | guided s | guided medians |\n|---|---|---|---|---|")
        for name, run in runs.items():
            tried = []
            for given in [{}, BEFORE[name], *args.candidate]:
                if settings_for(run, **given) in tried:
                    continue
                tried.append(settings_for(run, **given))
                seconds, figures = timed_repair(run, x[name], settings_for(run, **given), ("guided",), batches[name])
                print(f"| {name} | {given or 'default'} | {len(x[name])} | {seconds['guided']:.2f} | "
                      f"{summary(figures)} |")
    print(f"\ndone {conditions()}")


if __name__ == "__main__":
    main()
