"""The embedded default: real texture photographs from scikit-image, with synthetic defects.

``skimage.data.brick()``, ``grass()`` and ``gravel()`` are 512x512 grayscale photographs
that ship inside scikit-image (no download). Each is split into two disjoint strips:
rows 0-383 give the normal **training** patches, rows 384-511 the **test** patches, so no
test pixel was ever seen in training. A patch is a ``patch_size`` (64) pixel crop, resized
to ``image_size`` (64 by default) and repeated over three channels, in [-1, 1].

The test split holds ``n_test_normal`` clean patches and ``n_test_anomalous`` patches with
one synthetic defect each, with its exact pixel mask. Defect ``i`` of a category is drawn
from ``numpy.random.default_rng([seed, category_index, i])``, so it depends on nothing
else (not on the other options, the order of calls, or the torch RNG). Kinds cycle
through:

- ``scratch``: a straight line 1.5-3 px wide (at 64 px), 30-60 % of the patch long,
  random angle, near-white or near-black;
- ``hole``: a near-black ellipse, radii 8-16 % of the patch, with slight noise;
- ``stain``: an irregular blob (radius modulated by two random harmonics), radii
  10-20 %, blended 65 % with a random rust, green, blue or purple tint;
- ``paste``: an ellipse cut from the *same place* of a patch of another texture of the
  set (brick gets grass or gravel, and so on), radii 12-22 %.

The mask is exactly the set of pixels the defect changed (``Split.masks``, ``[N, H, W]``).
"""

from __future__ import annotations

from functools import cache, cached_property

import numpy as np
import torch

import arpro
from arpro import ArproError
from arpro_vision.base import ImageDataset

CATEGORIES = ("brick", "grass", "gravel")
DEFECT_KINDS = ("scratch", "hole", "stain", "paste")
TRAIN_ROWS = 384  # rows [0, 384) train, [384, 512) test
TINTS = np.array([[0.55, 0.25, 0.08], [0.15, 0.45, 0.10], [0.10, 0.20, 0.60], [0.45, 0.10, 0.45]], dtype=np.float32)


@cache
def texture(category: str) -> np.ndarray:
    """The full 512x512 photograph of ``category`` as float32 in [0, 1]."""
    import skimage.data

    if category not in CATEGORIES:
        raise ArproError(f"textures has no category {category!r}; choose one of: {', '.join(CATEGORIES)}")
    image = getattr(skimage.data, category)()
    if image.ndim == 3:
        image = image[..., :3].mean(-1)
    image = image.astype(np.float32) / 255.0
    image.setflags(write=False)
    return image


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a ``[p, p]`` or ``[p, p, C]`` float patch to ``size``."""
    if patch.shape[0] == size:
        return patch
    t = torch.from_numpy(np.ascontiguousarray(patch)).float()
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="area" if size < patch.shape[0] else "bilinear")
    out = out[0, 0] if patch.ndim == 2 else out[0].permute(1, 2, 0)
    return out.numpy()


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float, angle: float, wobble=None) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    if wobble is not None:
        theta = np.arctan2(v, u)
        (a1, p1), (a2, p2) = wobble
        r = r / (1 + a1 * np.sin(2 * theta + p1) + a2 * np.sin(3 * theta + p2))
    return r <= 1.0


def _segment(size: int, y0: float, x0: float, y1: float, x1: float, width: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    py, px = yy - y0, xx - x0
    dy, dx = y1 - y0, x1 - x0
    t = np.clip((py * dy + px * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
    dist = np.hypot(py - t * dy, px - t * dx)
    return dist <= width / 2


def add_defect(
    rgb: np.ndarray, kind: str, rng: np.random.Generator, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``kind`` on ``rgb`` (``[S, S, 3]`` in [0, 1]); return (image, mask).

    ``other`` is a same-size patch of another texture, used by ``paste``.
    """
    size = rgb.shape[0]
    unit = size / 64.0
    out = rgb.copy()
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.15, 0.3) * size
        width = max(1.0, rng.uniform(1.5, 3.0) * unit)
        dy, dx = half * np.sin(angle), half * np.cos(angle)
        mask = _segment(size, cy - dy, cx - dx, cy + dy, cx + dx, width)
        value = rng.uniform(0.9, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.08)
        out[mask] = value
    elif kind == "hole":
        ry, rx = rng.uniform(0.08, 0.16, size=2) * size
        mask = _ellipse(size, cy, cx, ry, rx, rng.uniform(0, np.pi))
        noise = rng.normal(0.05, 0.02, size=(size, size, 1)).clip(0, 0.15)
        out = np.where(mask[..., None], np.broadcast_to(noise, out.shape), out)
    elif kind == "stain":
        ry, rx = rng.uniform(0.10, 0.20, size=2) * size
        wobble = [(rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi)) for _ in range(2)]
        mask = _ellipse(size, cy, cx, ry, rx, rng.uniform(0, np.pi), wobble)
        tint = TINTS[rng.integers(len(TINTS))]
        out = np.where(mask[..., None], 0.35 * out + 0.65 * tint, out)
    elif kind == "paste":
        ry, rx = rng.uniform(0.12, 0.22, size=2) * size
        mask = _ellipse(size, cy, cx, ry, rx, rng.uniform(0, np.pi))
        out = np.where(mask[..., None], other, out)
    else:
        raise ArproError(f"unknown defect kind {kind!r}; choose from {', '.join(DEFECT_KINDS)}")
    changed = np.abs(out - rgb).max(-1) > 0
    return out.astype(np.float32), (mask & changed).astype(np.float32)


class Textures(ImageDataset):
    """scikit-image texture photographs (brick, grass, gravel) with seeded synthetic defects (embedded).

    Options: ``image_size`` (64), ``patch_size`` (64, source pixels per patch), ``n_train``
    (200), ``n_test_normal`` (20), ``n_test_anomalous`` (30), ``seed`` (0).
    """

    name = "textures"
    embedded = True
    accepted_options = (*ImageDataset.accepted_options, "patch_size", "n_train", "n_test_normal", "n_test_anomalous", "seed")

    def categories(self) -> list[str]:
        return list(CATEGORIES)

    @property
    def cat(self) -> str:
        category = self.category or "brick"
        if category not in CATEGORIES:
            raise ArproError(f"textures has no category {category!r}; choose one of: {', '.join(CATEGORIES)}")
        return category

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self.options.get(key, default))
        except (TypeError, ValueError):
            raise ArproError(f"textures option {key} must be an integer, not {self.options.get(key)!r}") from None

    def _patches(self, image: np.ndarray, rows: tuple[int, int], n: int, rng: np.random.Generator):
        p = self._int("patch_size", 64)
        ys = rng.integers(rows[0], rows[1] - p + 1, size=n)
        xs = rng.integers(0, image.shape[1] - p + 1, size=n)
        return [(int(y), int(x)) for y, x in zip(ys, xs)]

    def _crop(self, image: np.ndarray, y: int, x: int) -> np.ndarray:
        p = self._int("patch_size", 64)
        gray = _resize(image[y : y + p, x : x + p], self.image_size)
        return np.repeat(gray[..., None], 3, axis=-1)

    @staticmethod
    def _tensor(patches: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).contiguous() * 2 - 1

    @cached_property
    def _train(self) -> arpro.Split:
        image = texture(self.cat)
        seed = self._int("seed", 0)
        rng = np.random.default_rng([seed, CATEGORIES.index(self.cat), 0])
        spots = self._patches(image, (0, TRAIN_ROWS), self._int("n_train", 200), rng)
        x = self._tensor([self._crop(image, y, xx) for y, xx in spots]).float()
        ids = [f"{self.cat}/train/{i:03d}" for i in range(len(spots))]
        return arpro.Split(x, torch.zeros(len(spots), dtype=torch.long), None, ids)

    @cached_property
    def _test(self) -> arpro.Split:
        image = texture(self.cat)
        seed = self._int("seed", 0)
        index = CATEGORIES.index(self.cat)
        others = [texture(c) for c in CATEGORIES if c != self.cat]
        n_normal, n_bad = self._int("n_test_normal", 20), self._int("n_test_anomalous", 30)
        rng = np.random.default_rng([seed, index, 1])
        spots = self._patches(image, (TRAIN_ROWS, image.shape[0]), n_normal + n_bad, rng)
        patches, masks, ids = [], [], []
        size = self.image_size
        for i, (y, x) in enumerate(spots[:n_normal]):
            patches.append(self._crop(image, y, x))
            masks.append(np.zeros((size, size), np.float32))
            ids.append(f"{self.cat}/test/good_{i:03d}")
        for i, (y, x) in enumerate(spots[n_normal:]):
            kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
            rng_i = np.random.default_rng([seed, index, 2, i])
            other = self._crop(others[i % len(others)], y, x)
            bad, mask = add_defect(self._crop(image, y, x), kind, rng_i, other)
            patches.append(bad)
            masks.append(mask)
            ids.append(f"{self.cat}/test/{kind}_{i:03d}")
        labels = torch.tensor([0] * n_normal + [1] * n_bad, dtype=torch.long)
        x = self._tensor(patches).float().clamp(-1, 1)
        kinds = [identifier.split("/")[-1].rsplit("_", 1)[0] for identifier in ids]  # good, scratch, hole, ...
        return arpro.Split(x, labels, torch.from_numpy(np.stack(masks)), ids, kinds)

    def train(self) -> arpro.Split:
        return self._train

    def test(self) -> arpro.Split:
        return self._test
