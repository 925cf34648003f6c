"""An embedded stand-in for real grayscale surface-inspection images (KolektorSDD-like), generated.

No file is read or downloaded: training picture ``i`` is drawn from
``numpy.random.default_rng([0, 0, i])``, and test picture ``i`` from ``[seed, 1, i]`` (normal)
or ``[seed, 2, i]`` (defective), so a picture depends on nothing else, and the option ``seed``
draws a fresh test set for the same training pictures (and the same bundled models): settings
were chosen on seed 0 (the default), and docs/explanation/vision.md reports seed 1. A picture is a
machined metal part seen from above, at a native size of its own: the long side is 1-2.5x
``image_size`` and the aspect ratio (width/height) 0.45-1, so most pictures are tall, like
KolektorSDD's. Every picture, normal or not, has

- **uneven illumination**: a linear ramp and a broad hot spot of random place and strength
  (a nuisance the detector must not flag, not a defect);
- machining streaks at a small random angle, fine grain, and the part's straight edge near
  the left or right side, beyond which lies the dark background.

A defective picture has one defect of a kind cycling through :data:`DEFECT_KINDS`, sized in
model pixels (at ``image_size``) whatever the native size:

- ``crack``: a thin (1-2 px) meandering dark line, 15-40 % of the long side, contrast only
  2-5x the grain's (low contrast), sometimes with a branch;
- ``pit``: one to three blowholes, radius 1.5-4 px, a dark centre with a lit rim;
- ``fray``: a stretch of the part's edge torn into a ragged line up to 2-5 px deep;
- ``dent``: an uneven spot, the shading of a bump 4-8 px wide (one side lit, one in shadow),
  at most 3-6x the grain's contrast.

The picture is letterboxed into the model's square like a user's file (``images.letterbox_rgb``:
aspect kept, mirrored padding), and its pixel mask likewise (``letterbox_mask``), so
``Split.masks`` is the set of pixels the defect changed. ``Split.kinds`` is ``good`` or the kind.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

import arpro
from arpro import ArproError
from arpro_vision.base import ImageDataset
from arpro_vision.images import letterbox_mask, letterbox_rgb, to_tensor

DEFECT_KINDS = ("crack", "pit", "fray", "dent")
GRAIN = 0.025  # std of the fine grain, the unit of "low contrast"


def native_size(rng: np.random.Generator, side: int) -> tuple[int, int]:
    """(height, width) of one picture: long side 1-2.5x ``side``, width/height 0.45-1."""
    height = int(round(side * rng.uniform(1.0, 2.5)))
    width = max(side // 2, int(round(height * rng.uniform(0.45, 1.0))))
    return height, width


def normal_surface(rng: np.random.Generator, height: int, width: int, scale: float) -> tuple[np.ndarray, dict]:
    """A defect-free picture in [0, 1] and where its part edge is (for ``fray``)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    long_side = max(height, width)
    level = rng.uniform(0.35, 0.6)
    ramp = rng.uniform(-0.12, 0.12, size=2)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    spread = rng.uniform(0.3, 0.7) * long_side
    light = (ramp[0] * (yy / height - 0.5) + ramp[1] * (xx / width - 0.5)
             + rng.uniform(0.0, 0.15) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spread**2)))
    angle = rng.uniform(-0.2, 0.2)
    across = yy * np.cos(angle) - xx * np.sin(angle)  # streaks run along x, tilted
    profile = gaussian_filter(rng.normal(0, 1, size=int(height + width) + 8), 1.2 * scale)
    profile = profile / (profile.std() + 1e-8)
    streaks = 0.02 * np.interp(across + width + 4, np.arange(profile.size), profile)
    grain = gaussian_filter(rng.normal(0, 1, size=(height, width)), 0.7 * scale)
    grain = GRAIN * grain / (grain.std() + 1e-8)
    image = level + light + streaks + grain
    side = "left" if rng.random() < 0.5 else "right"
    edge = rng.uniform(0.06, 0.18) * width
    outside = xx < edge if side == "left" else xx > width - 1 - edge
    background = 0.08 + 0.01 * rng.normal(0, 1, size=(height, width))
    image = np.where(outside, background, image)
    return image.astype(np.float32), {"side": side, "edge": edge, "background": background}


def _segments_distance(yy: np.ndarray, xx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of every pixel to a polyline through ``points`` ``[n, 2]`` (y, x)."""
    distance = np.full(yy.shape, np.inf, dtype=np.float32)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        distance = np.minimum(distance, np.hypot(yy - y0 - t * dy, xx - x0 - t * dx))
    return distance


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float) -> np.ndarray:
    points, heading_now = [start], heading
    for _ in range(max(2, int(length / step))):
        heading_now += rng.normal(0, 0.35)
        points.append(points[-1] + step * np.array([np.sin(heading_now), np.cos(heading_now)]))
    return np.array(points)


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator, scale: float,
               part: dict) -> tuple[np.ndarray, np.ndarray]:
    """Put one defect of ``kind`` on a picture; return (picture, mask of the changed pixels)."""
    height, width = image.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    inner = (part["edge"] + 6 * scale, width - part["edge"] - 6 * scale)  # the part, away from its edge
    if part["side"] == "left":
        x_lo, x_hi = inner[0], width - 4 * scale
    else:
        x_lo, x_hi = 4 * scale, inner[1]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(x_lo, max(x_lo + 1, x_hi))
    out = image.copy()
    if kind == "crack":
        length = rng.uniform(0.15, 0.4) * max(height, width)
        points = _walk(rng, np.array([cy, cx]), rng.uniform(0, 2 * np.pi), length, 3 * scale)
        half = 0.5 * rng.uniform(1.0, 2.0) * scale + 0.5
        distance = _segments_distance(yy, xx, points)
        if rng.random() < 0.4:  # a branch from a point along the crack
            fork = points[len(points) // 2]
            distance = np.minimum(distance, _segments_distance(yy, xx, _walk(rng, fork, rng.uniform(0, 2 * np.pi),
                                                                              0.4 * length, 3 * scale)))
        change = -rng.uniform(2.0, 5.0) * GRAIN * np.clip(1 - distance / half, 0, 1)
    elif kind == "pit":
        change = np.zeros_like(image)
        for _ in range(int(rng.integers(1, 4))):
            py, px = cy + rng.normal(0, 4 * scale), cx + rng.normal(0, 4 * scale)
            radius = rng.uniform(1.5, 4.0) * scale
            r = np.hypot(yy - py, xx - px) / radius
            lit = np.clip(((yy - py) * -0.6 + (xx - px) * 0.8) / radius, -1, 1)  # the rim facing the light
            depth = rng.uniform(5.0, 10.0) * GRAIN
            change += np.where(r <= 1, -depth * (1 - 0.5 * r**2), 0) + np.where((r > 0.7) & (r <= 1.3), 2 * GRAIN * lit, 0)
    elif kind == "fray":
        run = rng.uniform(0.2, 0.5) * height
        y0 = rng.uniform(0, height - run)
        depth = rng.uniform(2.0, 5.0) * scale
        jag = np.abs(np.cumsum(rng.normal(0, 0.8 * scale, size=height)))
        jag = np.clip(jag / (jag.max() + 1e-8) * depth + rng.uniform(0, 0.8 * scale, size=height), 0, depth)
        jag = np.where((np.arange(height) >= y0) & (np.arange(height) < y0 + run), jag, 0)[:, None]
        edge = part["edge"]
        torn = (xx >= edge) & (xx < edge + jag) if part["side"] == "left" else (xx <= width - 1 - edge) & (xx > width - 1 - edge - jag)
        change = np.where(torn, part["background"] - image, 0)
    elif kind == "dent":
        sigma = rng.uniform(4.0, 8.0) * scale / 2
        phi = rng.uniform(0, 2 * np.pi)
        dy, dx = yy - cy, xx - cx
        bump = np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
        change = rng.uniform(5.0, 10.0) * GRAIN * (dy * np.sin(phi) + dx * np.cos(phi)) / sigma * bump
    else:
        raise ArproError(f"unknown surface defect kind {kind!r}; choose from {', '.join(DEFECT_KINDS)}")
    out = np.clip(out + change, 0, 1)
    mask = np.abs(out - image) > 0.5 * GRAIN
    return out.astype(np.float32), mask


class Surface(ImageDataset):
    """Generated grayscale surface-inspection pictures: cracks, pits, frayed edges, dents; varied sizes (no files).

    Options: ``image_size`` (64), ``n_train`` (200), ``n_test_normal`` (30),
    ``n_test_anomalous`` (40, kinds in turn), ``seed`` (0: the test pictures; settings were
    chosen on seed 0, and docs/explanation/vision.md reports seed 1).
    """

    name = "surface"  # needs no files, but is not the image domain's default (textures is): not ``embedded``
    accepted_options = (*ImageDataset.accepted_options, "n_train", "n_test_normal", "n_test_anomalous", "seed")

    def categories(self) -> list[str]:
        return []

    def _int(self, key: str, default: int, low: int = 0) -> int:
        value = self.options.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ArproError(f"surface option {key} must be an integer >= {low}, not {value!r}")
        return value

    def picture(self, stream: int, i: int, kind: str | None) -> tuple[torch.Tensor, np.ndarray]:
        """Picture ``i`` of ``stream``, letterboxed: ``[3, S, S]`` in [-1, 1] and its ``[S, S]`` mask."""
        side = self.image_size
        rng = np.random.default_rng([self._int("seed", 0) if stream else 0, stream, i])
        height, width = native_size(rng, side)
        scale = max(height, width) / side  # native pixels per model pixel
        image, part = normal_surface(rng, height, width, scale)
        mask = np.zeros((height, width), bool)
        if kind is not None:
            image, mask = add_defect(image, kind, rng, scale, part)
        gray = (image * 255).round().astype(np.uint8)
        square, _ = letterbox_rgb(np.repeat(gray[..., None], 3, axis=-1), side)
        return to_tensor(square), letterbox_mask(mask.astype(np.float32), side)

    @cached_property
    def _train(self) -> arpro.Split:
        n = self._int("n_train", 200, low=1)
        x = torch.stack([self.picture(0, i, None)[0] for i in range(n)])
        return arpro.Split(x, torch.zeros(n, dtype=torch.long), None, [f"train/good_{i:03d}" for i in range(n)])

    @cached_property
    def _test(self) -> arpro.Split:
        n_normal, n_bad = self._int("n_test_normal", 30), self._int("n_test_anomalous", 40)
        kinds = ["good"] * n_normal + [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_bad)]
        pictures = [self.picture(1, i, None) for i in range(n_normal)]
        pictures += [self.picture(2, i, kinds[n_normal + i]) for i in range(n_bad)]
        ids = [f"test/good_{i:03d}" for i in range(n_normal)] + [f"test/{k}_{i:03d}" for i, k in enumerate(kinds[n_normal:])]
        size = self.image_size
        x = torch.stack([p[0] for p in pictures]) if pictures else torch.zeros(0, 3, size, size)
        masks = torch.from_numpy(np.stack([p[1] for p in pictures])) if pictures else torch.zeros(0, size, size)
        labels = torch.tensor([0] * n_normal + [1] * n_bad, dtype=torch.long)
        return arpro.Split(x, labels, masks, ids, kinds)

    def train(self) -> arpro.Split:
        return self._train

    def test(self) -> arpro.Split:
        return self._test
