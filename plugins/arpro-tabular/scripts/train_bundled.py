"""Train the tabular plugin's bundled checkpoints on the embedded breast-cancer table, with `arpro train`.

    OMP_NUM_THREADS=1 python plugins/arpro-tabular/scripts/train_bundled.py all          # every shipped file
    OMP_NUM_THREADS=1 python plugins/arpro-tabular/scripts/train_bundled.py gaussian --out /tmp/g.safetensors

Each shipped file is one `arpro train` command (``RECIPES``); the repairer is trained on every
benign training row (``--holdout 0``), as the shipped one was; `arpro train repairer`
keeps 10% back by default. The shipped repairer predates mlp-ddpm's cosine learning-rate default:
its recipe names the constant 3e-3 it was trained with, so that the documented figures measured
on it stay reproducible.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from arpro_tabular.bundled import CHECKPOINTS

RECIPES = {
    "gaussian": ["detector", "--detector", "gaussian"],
    "autoencoder": ["detector", "--detector", "autoencoder"],
    "mlp-ddpm": ["repairer", "--repairer", "mlp-ddpm", "--holdout", "0",
                 "--model-option", "lr=3e-3", "--model-option", "lr_schedule=constant"],
}


def train(name: str, out: Path) -> None:
    arpro = str(Path(sys.executable).with_name("arpro"))  # the console script of this environment
    subprocess.run([arpro, "train", *RECIPES[name], "--out", str(out), "--overwrite"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["all", *RECIPES])
    parser.add_argument("--out", type=Path, default=None, help="default: the plugin's checkpoints folder")
    args = parser.parse_args()
    for name in RECIPES if args.model == "all" else [args.model]:
        train(name, args.out if args.model != "all" and args.out else CHECKPOINTS / f"{name}-breast-cancer.safetensors")


if __name__ == "__main__":
    main()
