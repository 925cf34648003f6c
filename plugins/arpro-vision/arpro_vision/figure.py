"""``repair.png``, the figure a person reads: per input, the input, omega over it, the
ground-truth mask over it where known, each arm's repair, and the repair's difference.

A user's file (an :class:`ImageInfo`) is drawn as it is written: at its own resolution and
mode, cropped to the picture (no letterbox padding), each arm composited as
:meth:`ImageDataset.write_repairs` composites it. A dataset sample is drawn at the model's
resolution, which is then its own. One-channel pictures (a file in L, LA or I;16, or a
sample whose three channels are equal) are drawn in gray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import arpro  # noqa: E402
from arpro_vision.images import LUMA, ImageInfo, composite, full_size_mask, to_uint8  # noqa: E402

MAX_ROWS = 6
MIN_PANEL_INCHES = 2.6  # a 64 px sample is enlarged (nearest) so that its titles stay legible
MAX_PANEL_PIXELS = 1024  # a larger picture is shown smaller: its panel's longer side at this many pixels
DPI = 100
FONT = 11  # points at the smallest panel; larger panels get proportionally larger titles
OVERLAY = {"ω": (1.0, 0.15, 0.1), "truth": (0.1, 0.8, 0.2)}  # red omega, green ground truth


def as_drawn(x: torch.Tensor, info: ImageInfo | None, region: torch.Tensor | None = None, gray: bool = False) -> np.ndarray:
    """``x`` ``[3, S, S]`` as drawn: with ``info``, composited into the original through ``region``
    (None: the original itself) and cropped to it, as uint8; else the model's square, in gray
    (its luma, as a grayscale file is written) when ``gray``."""
    if info is None:
        rgb = to_uint8(x)
        return np.rint(rgb @ np.array(LUMA)).astype(np.uint8) if gray else rgb
    pixels = info.pixels if region is None else np.asarray(composite(x, region, info))
    if pixels.dtype != np.uint8:  # 16-bit gray: its own min..max, as it was read
        low, high = info.value_range
        pixels = np.clip((pixels.astype(np.float64) - low) / (high - low) * 255, 0, 255).astype(np.uint8)
    return (pixels[..., 0] if info.grayscale else pixels[..., :3]) if pixels.ndim == 3 else pixels


def _mask(mask: torch.Tensor, info: ImageInfo | None) -> np.ndarray:
    """A ``[S, S]`` (or ``[C, S, S]``) 0/1 mask at the picture's size, as written."""
    mask = mask.amax(0) if mask.dim() == 3 else mask
    return full_size_mask(mask, info) if info is not None else mask.detach().float().numpy() > 0.5


def _overlay(picture: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """``picture`` in RGB with ``mask`` tinted half-way to ``colour``."""
    rgb = np.repeat(picture[..., None], 3, -1) if picture.ndim == 2 else picture[..., :3]
    rgb = rgb.astype(np.float32) / 255
    rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array(colour, np.float32)
    return rgb


def repair_figure(result: arpro.RepairResult, path: Path, infos: Sequence[ImageInfo | None] = (),
            truth: torch.Tensor | None = None) -> Path:
    """One row per input (at most ``MAX_ROWS``): input | ω over it | truth over it (given
    ``truth`` ``[B, ...]``) | each arm run | |repair − input| of the last arm, with the
    score before → after above each repair."""
    n = min(len(result), MAX_ROWS)
    arms = list(result.arms)
    last = arms[-1] if arms else None
    columns = ["input", "ω"] + (["truth"] if truth is not None else []) + arms + (["difference"] if last else [])
    first = infos[0] if infos else None
    width, height = first.size if first is not None else tuple(result.x_bad.shape[-1:-3:-1])
    scale = min(1.0, MAX_PANEL_PIXELS / max(width, height))
    panel_w = max(MIN_PANEL_INCHES, width * scale / DPI)
    panel_h = panel_w * height / width + 0.5  # room for the title
    font = max(FONT, round(FONT * panel_w / MIN_PANEL_INCHES / 2))
    fig, axes = plt.subplots(n, len(columns), figsize=(panel_w * len(columns), panel_h * n), squeeze=False)
    for i in range(n):
        info = infos[i] if i < len(infos) else None
        omega = result.omega_input[i].amax(0)
        gray = bool((result.x_bad[i] == result.x_bad[i, :1]).all())  # a 1-channel sample, repeated over three
        before = as_drawn(result.x_bad[i], info, gray=gray)
        panels: dict[str, tuple[np.ndarray, str]] = {
            "input": (before, f"input  s = {float(result.score_bad[i]):.3g}"),
            "ω": (_overlay(before, written := _mask(omega, info), OVERLAY["ω"]), f"ω: {written.mean():.1%} of the picture"),
        }
        if truth is not None:
            panels["truth"] = (_overlay(before, _mask(truth[i], info), OVERLAY["truth"]), "ground truth")
        repaired = before
        for name in arms:
            arm = result.arms[name]
            region = torch.ones_like(omega) if name == "baseline" else omega
            repaired = as_drawn(arm.x_fix[i], info, region if info is not None else None, gray)
            note = " (regenerates everything)" if name == "baseline" else ""
            panels[name] = (repaired, f"{name}{note}\ns {float(result.score_bad[i]):.3g} → {float(arm.score[i]):.3g}")
        if last:
            diff = np.abs(repaired.astype(np.float32) - before.astype(np.float32))
            panels["difference"] = (diff.sum(-1) if diff.ndim == 3 else diff, f"|{last} − input|")
        for ax, column in zip(axes[i], columns):
            picture, title = panels[column]
            ax.set_xticks([])
            ax.set_yticks([])
            gray = picture.ndim == 2
            cmap = "magma" if column == "difference" else "gray" if gray else None
            limits = (0, None) if column == "difference" else (0, 255) if gray else (None, None)
            ax.imshow(picture, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
            ax.set_title(title, fontsize=font)
        label = result.ids[i] if result.ids else str(i)
        axes[i, 0].set_ylabel(label, fontsize=font)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
