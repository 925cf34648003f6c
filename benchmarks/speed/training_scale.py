"""`arpro train` throughput with 1 process against 2 (Lightning Fabric, DDP), start-up subtracted.

Runs `arpro train repairer --repairer diffusion-ts --dataset process --model-option
train_steps=200` (quick: 20) with `--devices 1` and with `--devices 2`; the batch is per process,
so 2 processes see twice the samples per step. Start-up (imports, data, process launch) is timed
with `train_steps=1` and subtracted. Reports samples per second and the ratio.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import arpro
from benchmarks.harness import BenchmarkError

DEVICES = 2


def timed_train(steps: int, devices: int, out: Path) -> float:
    arpro_cli = str(Path(sys.executable).with_name("arpro"))
    command = [arpro_cli, "train", "repairer", "--repairer", "diffusion-ts", "--dataset", "process",
               "--model-option", f"train_steps={steps}", "--devices", str(devices), "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def run(quick: bool) -> dict:
    steps = 20 if quick else 200
    batch = arpro.get("repairer", "diffusion-ts").for_dataset(arpro.get("dataset", "process")()).config["batch_size"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, DEVICES):
            startup = timed_train(1, devices, Path(tmp) / f"warm{devices}.safetensors")
            total = timed_train(steps, devices, Path(tmp) / f"run{devices}.safetensors")
            training = total - startup
            if training < 0.2 * total:  # start-up's noise would be most of the figure
                raise BenchmarkError(f"{devices} process(es): {steps} steps took {training:.1f} s beyond a "
                                     f"{startup:.1f} s start-up; too little to measure on this machine now")
            rows.append({"processes": devices, "wall s": total, "training s": training,
                         "samples/s": steps * batch * devices / training})
    return {"steps": steps, "batch per process": batch,
            f"samples/s, {DEVICES} processes / 1": rows[1]["samples/s"] / rows[0]["samples/s"], "rows": rows}
