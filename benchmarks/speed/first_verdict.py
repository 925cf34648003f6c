"""Time to a first verdict: train the detector, train (or index) the repairer, `arpro check`, per domain.

    python -c "from benchmarks.speed.first_verdict import run; print(run(quick=True))"

Each domain runs the documented commands as a user types them, in fresh processes with the
``arpro`` console script beside this Python: ``arpro train detector``, ``arpro train repairer``,
``arpro check`` on the two checkpoints; or, in a domain with a training-free repairer, no
``arpro train repairer`` at all (repairer "-": the check takes the training-free one, as it does
by default where the domain's repairer has no checkpoint). The rows give the wall time of each command and of all
three, and the quality the check prints (detector AUROC beside its domain's baseline detector's on
the same split, in-fill ratio, P1, all-hold and TNR on the inputs the detector flags), at 1 and 2 threads (``--threads`` and ``OMP_NUM_THREADS``).

Domains: KolektorSDD (``mvtec:commutator``) and the Tennessee Eastman data (``ts-csv``), read from
``../shared/data`` beside the repository (or ``ARPRO_SHARED_DATA``), and the tabular default
(the embedded breast-cancer table). A domain whose data is missing gets a row that says so.
Both modes time that default (the tabular default, which has no training-free repairer, trains
its ``mlp-ddpm``) at one thread and at two; the full mode adds the trained default repairers
(``ddpm``, ``diffusion-ts``) at one thread, except where a CPU cannot train one (``CPU_OUT_OF_REACH``:
the row says why).
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

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("ARPRO_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARPRO = str(Path(sys.executable).with_name("arpro"))
BARS_S = {"kolektorsdd": 600, "tep": 600, "tabular": 60}  # issue 31: time to first verdict, one thread
CPU_OUT_OF_REACH = {"ddpm": "not run without a GPU: at 256 px a training step takes 72 s on one CPU thread, about 60 h "
                            "for its 3,000 steps (docs/decisions/vision-repairer-defaults.md)"}


def domains(quick: bool) -> list[dict]:
    """What is run: per domain its data options, detector and the repairers to time."""
    kolektor = ["--dataset", "mvtec:commutator", "--data-root", str(DATA / "kolektorsdd")]
    tep = ["--dataset", "ts-csv", "--data-root", str(DATA / "tep")]
    return [
        {"domain": "kolektorsdd", "data": kolektor, "needs": DATA / "kolektorsdd", "detector": "patchcore",
         # the repairer must see the pictures at the detector's size (patchcore reads files at 256 px)
         "repairer_data": [*kolektor, "--option", "image_size=256"],
         "repairers": [None] if quick else [None, "ddpm"]},
        {"domain": "tep", "data": tep, "needs": DATA / "tep", "detector": "gpt2", "repairer_data": tep,
         "repairers": [None] if quick else [None, "diffusion-ts"]},
        {"domain": "tabular", "data": [], "needs": None, "detector": "gaussian", "repairer_data": [],
         "repairers": ["mlp-ddpm"]},
    ]


def timed(command: list[str], threads: int) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ARPRO_NUM_THREADS": str(threads), "COLUMNS": "400"}
    start = time.perf_counter()
    proc = subprocess.run([ARPRO, *command, "--threads", str(threads)], capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc


def check_figures(stdout: str) -> dict:
    """The check's printed figures: AUROC, in-fill ratio, and P1, all-hold and TNR on the flagged inputs."""
    def find(pattern: str) -> float | None:
        match = re.search(pattern, stdout)
        return float(match.group(1)) if match else None

    flagged = re.search(r"\(flagged by the detector\)\s*│\s*(.*?)\s*│", stdout)
    repair = flagged.group(1) if flagged else ""
    verdict = next((line.removeprefix("verdict: ") for line in stdout.splitlines() if line.startswith("verdict:")), None)
    auroc = find(r"detector AUROC \(test split\)\s*│\s*([0-9.]+)")
    baseline = re.search(r"baseline (\S+) AUROC, same split\s*│\s*([0-9.]+|the checked detector)", stdout)
    return {"auroc": auroc, "baseline": baseline.group(1) if baseline else None,  # the checked one may be the baseline
            "baseline_auroc": (_field(baseline.group(2), r"([0-9.]+)") or auroc) if baseline else None,
            "infill_ratio": find(r"in-fill ratio to the naive fill\s*│\s*([0-9.]+)"),
            "p1": _field(repair, r"P1 ([0-9.]+)"), "all_hold": _field(repair, r"all hold ([0-9.]+)"),
            "tnr": _field(repair, r"TNR ([0-9.]+)"), "verdict": verdict}


def _field(text: str, pattern: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def first_verdict(domain: dict, repairer: str | None, threads: int, work: Path) -> dict:
    """One row: the commands' wall times and the check's figures (``repairer`` None: none trained, the default)."""
    row = {"domain": domain["domain"], "detector": domain["detector"], "repairer": repairer or "-", "threads": threads}
    if domain["needs"] is not None and not domain["needs"].exists():
        return {**row, "skipped": f"no data at {domain['needs']}"}
    if repairer in CPU_OUT_OF_REACH and not torch.cuda.is_available():
        return {**row, "skipped": CPU_OUT_OF_REACH[repairer]}
    detector, repaired = work / f"{domain['domain']}-{threads}-det.safetensors", work / f"{repairer}-{threads}.safetensors"
    steps = {
        "train_detector_s": ["train", "detector", "--detector", domain["detector"], *domain["data"], "--out",
                             str(detector), "--overwrite"],
        "train_repairer_s": ["train", "repairer", "--repairer", repairer, *domain["repairer_data"], "--out",
                             str(repaired), "--overwrite"],
        "check_s": ["check", "--detector", domain["detector"], "--detector-checkpoint", str(detector), *domain["data"],
                    *(["--repairer", repairer, "--repairer-checkpoint", str(repaired)] if repairer else [])],
    }
    if repairer is None:
        del steps["train_repairer_s"]
    for key, command in steps.items():
        seconds, proc = timed(command, threads)
        row[key] = round(seconds, 1)
        verdict = key == "check_s" and proc.returncode == 1 and "\nverdict: " in proc.stdout  # problems found: a verdict
        if proc.returncode != 0 and not verdict:
            return {**row, "failed": f"arpro {' '.join(command[:2])}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
    row.update(check_figures(proc.stdout))
    row["total_s"] = round(sum(row.get(key, 0) for key in steps), 1)
    row["bar_s"] = BARS_S[domain["domain"]]
    return row


def run(quick: bool) -> dict:
    """Rows per domain, repairer and thread count; wall times in seconds (on whatever load the machine has)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 2):
            for domain in domains(quick):
                for repairer in domain["repairers"][: 1 if threads > 1 else None]:  # trained repairers: one thread
                    rows.append(first_verdict(domain, repairer, threads, Path(tmp)))
    return {"rows": rows, "load_average": os.getloadavg()[0], "bars_s": BARS_S}
