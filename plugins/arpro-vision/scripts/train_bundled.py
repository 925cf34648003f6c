"""Train the bundled 64x64 checkpoints, textures:brick and surface (the same path as `arpro train`).

    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py all    # every shipped file, as below
    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py ddpm --steps 4000 --chunk 250 --lr 2e-4
    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py fastflow
    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py efficientad
    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py ddpm --dataset surface --steps 900 \
        --chunk 150 --lr 2e-4 --batch-size 8 --channels 16 32 32 64
    OMP_NUM_THREADS=1 python plugins/arpro-vision/scripts/train_bundled.py patchnn --dataset surface

Each model is built with ``cls.for_dataset(dataset)``, fitted with ``fit(dataset.train().x)``
and written with ``arpro.io.checkpoint.save``. The DDPM is fitted in chunks of ``--chunk``
steps (AdamW restarted per chunk, seed = chunk index) and saved after every chunk, so a
usable checkpoint exists whenever the run is stopped; its config records the steps done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import arpro
from arpro.io import checkpoint
from arpro_vision.bundled import CHECKPOINTS

torch.set_num_threads(1)
RECIPES = [  # the shipped files, in the docstring's order
    ["ddpm", "--steps", "4000", "--chunk", "250", "--lr", "2e-4"],
    ["fastflow"],
    ["efficientad"],
    ["ddpm", "--dataset", "surface", "--steps", "900", "--chunk", "150", "--lr", "2e-4", "--batch-size", "8",
     "--channels", "16", "32", "32", "64"],
    ["patchnn", "--dataset", "surface"],
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=["all", "ddpm", "fastflow", "efficientad", "patchnn"])
    parser.add_argument("--dataset", choices=["textures", "surface"], default="textures")
    parser.add_argument("--category", default="brick")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="the DDPM's block_out_channels")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for recipe in RECIPES if args.model == "all" else [None]:
        train(args if recipe is None else parser.parse_args(recipe))


def train(args: argparse.Namespace) -> None:
    """Fit one model as ``args`` say and save it."""
    category = args.category if args.dataset == "textures" else None
    dataset = arpro.get("dataset", args.dataset)(root=None, category=category)
    train = dataset.train().x
    stem = f"textures-{args.category}" if args.dataset == "textures" else args.dataset
    out = args.out or CHECKPOINTS / f"{args.model}-{stem}-64.safetensors"
    kind = "repairer" if args.model == "ddpm" else "detector"
    cls = arpro.get(kind, args.model)
    torch.manual_seed(0)  # the initial weights, as arpro train seeds them (torch's own start-up seed is random)
    model = cls.for_dataset(dataset, **({"block_out_channels": args.channels} if args.channels else {}))
    if args.lr is not None:
        model.config["lr"] = args.lr
    if args.batch_size is not None:
        model.config["batch_size"] = args.batch_size
    started = time.time()
    if kind == "repairer":
        total = args.steps or model.config["train_steps"]
        done = 0
        while done < total:
            n = min(args.chunk, total - done)
            model.fit(train, seed=done // args.chunk, progress=False, steps=n)
            done += n
            model.config["train_steps"] = done
            checkpoint.save(model, out)
            print(f"{time.strftime('%H:%M:%S')} ddpm {done}/{total} steps, {time.time() - started:.0f}s", flush=True)
    else:
        if args.steps is not None:
            model.config["train_steps"] = args.steps
        model.fit(train, seed=0, progress=False)
        checkpoint.save(model, out)
        print(f"{time.strftime('%H:%M:%S')} {args.model} done in {time.time() - started:.0f}s -> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
