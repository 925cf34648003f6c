"""Native-resolution repair against a 64 px repair of the same image, as a user runs them.

    python benchmarks/native_resolution.py [--repeats 2] [--detector fastflow] [--out runs/native_resolution]

Writes a generated 1024x768 grayscale defect image (scikit-image's brick photograph, test
rows, enlarged, with fine noise and a dark painted scratch) and the same image resized to
64x64 beforehand, then times ``arpro repair --detector fastflow --input FILE`` on each, in
fresh processes, alternating, ``--repeats`` times each (the bundled checkpoints, default
settings: DDIM, 50 steps, the three arms). Prints each time (the best of the repeats, as a
process would take it, start-up included), the ratio, the torch thread count, and checks
that the 1024x768 repair is 1024x768 grayscale with every pixel outside omega unchanged.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from machine import describe

SIZE = (1024, 768)


def defect_image(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    """The brick surface a 64 px model knows, enlarged to ``size``, with a painted scratch."""
    w, h = size
    crop = skimage.data.brick()[400:448, 0:64]  # rows >= 384: the textures test strip
    surface = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    surface += np.random.default_rng(seed).normal(0, 4, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    surface[(np.abs((yy - 300) - 0.4 * (xx - 400)) < 12) & (xx > 300) & (xx < 700)] = 15
    return Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8), mode="L")


def timed_repair(image: Path, out: Path, detector: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "arpro.cli", "repair", "--detector", detector, "--input", str(image),
                    "--out", str(out), "--overwrite", "--quiet", "--figure"], check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--detector", default="fastflow")
    parser.add_argument("--out", type=Path, default=Path("runs/native_resolution"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    big, small = args.out / "big.png", args.out / "small.png"
    defect_image().save(big)
    defect_image().resize((64, 64), Image.Resampling.BICUBIC).save(small)
    times: dict[str, list[float]] = {"64x64": [], "1024x768": []}
    for _ in range(args.repeats):
        times["64x64"].append(timed_repair(small, args.out / "small", args.detector))
        times["1024x768"].append(timed_repair(big, args.out / "big", args.detector))
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"arpro repair --detector {args.detector}, default settings; torch threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={threads}), {os.cpu_count()} CPUs; best of {args.repeats} fresh processes; {describe()}")
    for name, values in times.items():
        print(f"  {name:9s} input: {min(values):6.1f} s   (all: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = min(times["1024x768"]) / min(times["64x64"])
    print(f"  ratio 1024x768 / 64x64: {ratio:.2f}x (bar: <= 3x)")
    original = np.asarray(Image.open(big))
    with Image.open(args.out / "big" / "big_repair.png") as written:
        repaired, size, mode = np.asarray(written), written.size, written.mode
    omega = np.asarray(Image.open(args.out / "big" / "big_omega.png")) > 0
    identical = bool(np.array_equal(repaired[~omega], original[~omega]))
    print(f"  written repair: {size[0]}x{size[1]} {mode}; omega covers {omega.mean():.1%}; "
          f"pixels outside omega identical to the input: {identical}")


if __name__ == "__main__":
    main()
