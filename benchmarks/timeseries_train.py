"""Train the time-series plugin's bundled checkpoints (the same path as `arpro train`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_train.py gpt2 --model-option bottleneck=11
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_train.py llama2 --model-option bottleneck=11
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_train.py diffusion-ts
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_train.py gpt2 --model-option normalise=window --out FILE

(the shipped detectors have an 11-unit bottleneck; without the option the default, PCA's rule, gives 8
units on the plant and a different file) is equivalent to

    arpro train detector --detector gpt2 --dataset process --model-option bottleneck=11 --out plugins/arpro-timeseries/arpro_timeseries/checkpoints/gpt2-process.safetensors
    arpro train repairer --repairer diffusion-ts --dataset process --out .../diffusion-ts-process.safetensors

i.e. ``cls.for_dataset(dataset)``, ``fit(dataset.train().x, seed=0)``, ``arpro.io.checkpoint.save``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from arpro.algorithm.settings import parse_options
from arpro.io import checkpoint
from arpro.plugin_api import registry
from machine import describe

CHECKPOINTS = Path(__file__).resolve().parents[1] / "plugins/arpro-timeseries/arpro_timeseries/checkpoints"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["gpt2", "llama2", "diffusion-ts"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the model's train_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--chunk", type=int, default=0, help="save a checkpoint every CHUNK steps (0: only at the end)")
    parser.add_argument("--resume", type=Path, default=None, help="continue training this checkpoint instead of a fresh model")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's lr)")
    parser.add_argument("--model-option", action="append", default=[], help="model config KEY=VALUE (JSON values where they parse)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    kind = "repairer" if args.model == "diffusion-ts" else "detector"
    dataset = registry.get("dataset", "process")()
    if args.resume:
        model = checkpoint.load(args.resume, kind, args.model)
    else:
        torch.manual_seed(args.seed)  # the initial weights, as arpro train seeds them
        model = registry.get(kind, args.model).for_dataset(dataset, **parse_options(args.model_option, "--model-option"))
    options = {} if args.lr is None else {"lr": args.lr}
    steps = args.steps or model.config["train_steps"]
    out = args.out or CHECKPOINTS / f"{args.model}-process.safetensors"
    started = time.perf_counter()
    chunk = args.chunk or steps
    for i, done in enumerate(range(0, steps, chunk)):  # chunks restart the optimizer; seeds differ per chunk
        model.fit(dataset.train().x, seed=args.seed + i, progress=False, steps=min(chunk, steps - done), **options)
        checkpoint.save(model, out)
        print(f"{args.model}: {done + min(chunk, steps - done)} steps, {time.perf_counter() - started:.0f} s", flush=True)
    print(f"{args.model}: trained in {time.perf_counter() - started:.0f} s, saved {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
