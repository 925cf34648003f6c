"""Data-parallel training throughput: `arpro train` with 1 process against N processes (Lightning Fabric, DDP).

    python benchmarks/training_scale.py [--repairer diffusion-ts] [--steps 200] [--devices 2]

Runs, in one go, ``arpro train repairer --repairer R --model-option train_steps=STEPS`` once
with ``--devices 1`` (torch using every core) and once with ``--devices N --strategy ddp``
(each process using cores / N). The batch size is per process, so N processes see N times the
samples per step. Prints wall time, samples per second and the ratio. Start-up (imports,
dataset, process launch) is measured separately with ``train_steps=1`` and subtracted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arpro.plugin_api import registry
from machine import describe


def timed_train(repairer: str, dataset: str, steps: int, devices: int, out: Path) -> float:
    command = [sys.executable, "-m", "arpro.cli", "train", "repairer", "--repairer", repairer, "--dataset", dataset,
               "--model-option", f"train_steps={steps}", "--devices", str(devices), "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repairer", default="diffusion-ts")
    parser.add_argument("--dataset", default="process")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    model = registry.get("repairer", args.repairer)
    dataset = registry.get("dataset", args.dataset)()
    batch = model.for_dataset(dataset).config["batch_size"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, args.devices):
            startup = timed_train(args.repairer, args.dataset, 1, devices, Path(tmp) / f"warm{devices}.safetensors")
            total = timed_train(args.repairer, args.dataset, args.steps, devices, Path(tmp) / f"run{devices}.safetensors")
            training = max(total - startup, 1e-9)
            rows.append((devices, total, training, args.steps * batch * devices / training))
    print(f"{args.repairer} on {args.dataset}: {args.steps} steps, batch {batch} per process; parent: {describe()}")
    print("| processes | wall s | training s (start-up subtracted) | samples/s |")
    print("|---|---|---|---|")
    for devices, total, training, rate in rows:
        print(f"| {devices} | {total:.1f} | {training:.1f} | {rate:.0f} |")
    print(f"\nsamples/s, {args.devices} processes vs 1: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
