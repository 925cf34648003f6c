"""`arpro repair` of a 1024x768 image against the same image at 64x64, end to end (bar: <= 3x).

Writes a generated grayscale defect image (scikit-image's brick photograph, enlarged, with fine
noise and a painted scratch) and the same image resized to 64x64, then times `arpro repair
--detector fastflow --input FILE --figure` on each in fresh processes, alternating, 2 times each
(quick: 1), start-up included; the best of each. Also checks that the large repair is written at
1024x768 grayscale with every pixel outside omega unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SIZE = (1024, 768)
BAR = 3.0


def defect_image(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    """The brick surface a 64 px model knows, enlarged to ``size``, with a painted scratch."""
    w, h = size
    crop = skimage.data.brick()[400:448, 0:64]  # rows >= 384: the textures test strip
    surface = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    surface += np.random.default_rng(seed).normal(0, 4, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    surface[(np.abs((yy - 300) - 0.4 * (xx - 400)) < 12) & (xx > 300) & (xx < 700)] = 15
    return Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8), mode="L")


def timed_repair(image: Path, out: Path) -> float:
    arpro = str(Path(sys.executable).with_name("arpro"))
    started = time.perf_counter()
    subprocess.run([arpro, "repair", "--detector", "fastflow", "--input", str(image), "--out", str(out),
                    "--overwrite", "--quiet", "--figure"], check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def run(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big, small = folder / "big.png", folder / "small.png"
        defect_image().save(big)
        defect_image().resize((64, 64), Image.Resampling.BICUBIC).save(small)
        times: dict[str, list[float]] = {"64x64": [], "1024x768": []}
        for _ in range(1 if quick else 2):
            times["64x64"].append(timed_repair(small, folder / "small"))
            times["1024x768"].append(timed_repair(big, folder / "big"))
        original = np.asarray(Image.open(big))
        with Image.open(folder / "big" / "big_repair.png") as written:
            repaired, size, mode = np.asarray(written), written.size, written.mode
        omega = np.asarray(Image.open(folder / "big" / "big_omega.png")) > 0
    ratio = min(times["1024x768"]) / min(times["64x64"])
    return {"64x64 s (best)": min(times["64x64"]), "1024x768 s (best)": min(times["1024x768"]),
            "ratio": ratio, f"met (<= {BAR:g})": ratio <= BAR, "written size": f"{size[0]}x{size[1]} {mode}",
            "omega share": float(omega.mean()),
            "pixels outside omega unchanged": bool(np.array_equal(repaired[~omega], original[~omega]))}
