"""Train the time-series plugin's bundled checkpoints on the embedded plant (the same path as `arpro train`).

    OMP_NUM_THREADS=1 python plugins/arpro-timeseries/scripts/train_bundled.py all        # every shipped file
    OMP_NUM_THREADS=1 python plugins/arpro-timeseries/scripts/train_bundled.py gpt2 --model-option bottleneck=11
    OMP_NUM_THREADS=1 python plugins/arpro-timeseries/scripts/train_bundled.py gpt2 --steps 2 --out /tmp/x.safetensors

``all`` writes the shipped files with their recipes (``RECIPES``: the detectors have an 11-unit
bottleneck; without the option the default, PCA's rule, gives 8 units on the plant). One model is
``cls.for_dataset(dataset)``, ``fit(dataset.train().x, seed=0)``, ``arpro.checkpoint.save``, i.e.

    arpro train detector --detector gpt2 --dataset process --model-option bottleneck=11 --out FILE
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import arpro
from arpro import checkpoint
from arpro.algorithm.settings import parse_options
from arpro_timeseries.bundled import CHECKPOINTS

RECIPES = {"gpt2": {"bottleneck": 11}, "llama2": {"bottleneck": 11}, "diffusion-ts": {}}  # the shipped files' options


def train(name: str, options: dict, steps: int | None, seed: int, out: Path, chunk: int = 0,
          resume: Path | None = None, lr: float | None = None) -> None:
    """Fit one model on the seed-0 plant and save it to ``out`` (every ``chunk`` steps, if given)."""
    kind = "repairer" if name == "diffusion-ts" else "detector"
    dataset = arpro.get("dataset", "process")()
    if resume:
        model = checkpoint.load(resume, kind, name)
    else:
        torch.manual_seed(seed)  # the initial weights, as arpro train seeds them
        model = arpro.get(kind, name).for_dataset(dataset, **options)
    steps = steps or model.config["train_steps"]
    started = time.perf_counter()
    chunk = chunk or steps
    for i, done in enumerate(range(0, steps, chunk)):  # chunks restart the optimizer; seeds differ per chunk
        model.fit(dataset.train().x, seed=seed + i, progress=False, steps=min(chunk, steps - done),
                  **({} if lr is None else {"lr": lr}))
        checkpoint.save(model, out)
        print(f"{name}: {done + min(chunk, steps - done)} steps, {time.perf_counter() - started:.0f} s", flush=True)
    print(f"{name}: trained in {time.perf_counter() - started:.0f} s, saved {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["all", *RECIPES])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the model's train_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="default: the plugin's checkpoints folder")
    parser.add_argument("--chunk", type=int, default=0, help="save a checkpoint every CHUNK steps (0: only at the end)")
    parser.add_argument("--resume", type=Path, default=None, help="continue training this checkpoint instead of a fresh model")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's lr)")
    parser.add_argument("--model-option", action="append", default=[], help="model config KEY=VALUE (JSON values where they parse)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "all":
        for name, recipe in RECIPES.items():
            train(name, recipe, None, 0, CHECKPOINTS / f"{name}-process.safetensors")
        return
    out = args.out or CHECKPOINTS / f"{args.model}-process.safetensors"
    train(args.model, parse_options(args.model_option, "--model-option"), args.steps, args.seed, out, args.chunk, args.resume, args.lr)


if __name__ == "__main__":
    main()
