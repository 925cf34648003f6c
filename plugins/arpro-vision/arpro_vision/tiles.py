"""Tiled repair (dataset option ``tiled=true``): the DDPM works on the full-resolution image.

The repair runs in the image's own pixel space ``[B, 3, H, W]``. Two wrappers adapt the
models to it (``ImageDataset.models_for`` puts them in place for a user's ``--input`` file):

- :class:`TiledDetector` letterboxes the full-resolution image into the detector's S×S
  square (antialiased bicubic resize, mirrored padding; differentiable), so the score,
  omega and the guidance gradient are the detector's own, computed on the whole image;
  omega is mapped back to full size by nearest neighbour.
- :class:`TiledRepairer` predicts the noise with the S-pixel DDPM on overlapping S×S
  crops of the full-resolution canvas, a quarter tile of overlap, blended with weights that
  fall off towards each crop's edge. Crops are taken only where they touch the region the
  engine in-fills (omega, told by :meth:`~arpro.Repairer.prefill`); elsewhere the noise
  is the one that denoises to the input exactly (the in-filled region's complement is the
  input, noised), so the UNet runs on omega's neighbourhood only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import arpro
from arpro import ArproError
from arpro_vision.images import Letterbox


def letterbox_tensor(x: Tensor, box: Letterbox) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, S, S]`` as :func:`~arpro_vision.images.letterbox_rgb` does, differentiably."""
    inner = F.interpolate(x, size=(box.height, box.width), mode="bicubic", antialias=True, align_corners=False)
    rows, columns = box.sources()  # the square's index maps into the picture's place in it
    return inner[:, :, rows - box.top][:, :, :, columns - box.left]


class TiledDetector(arpro.Detector):
    """An S-pixel image detector applied to full-resolution ``[B, 3, H, W]`` inputs."""

    name = "tiled"
    domain = "image"

    def __init__(self, detector: arpro.Detector, size: tuple[int, int]) -> None:
        super().__init__()
        self.detector = detector
        self.box = Letterbox.fit(size, detector.tau.shape[-1])
        self.name = detector.name  # the report names the detector that scores
        self.guidance_scale = detector.guidance_scale
        self.tau, self.train_scores = detector.tau, detector.train_scores

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        return self.detector.decompose(letterbox_tensor(x, self.box))

    def input_mask(self, omega: Tensor, input_shape: torch.Size) -> Tensor:
        """Feature omega ``[B, S, S]`` -> ``[B, 3, H, W]``: padding cropped, nearest neighbour."""
        b = self.box
        inside = omega[:, b.top : b.top + b.height, b.left : b.left + b.width].unsqueeze(1)
        full = F.interpolate(inside.float(), size=tuple(input_shape[-2:]), mode="nearest-exact")
        return full.expand(-1, input_shape[1], -1, -1).to(omega.dtype)

    def feature_mask(self, input_mask: Tensor) -> Tensor:
        """A full-resolution mask on the detector's square: a feature is in it when half its area is. A mask
        already on the square (``InputBatch.valid``: where the picture lies in it) is kept as it is."""
        if input_mask.dim() == 3 and tuple(input_mask.shape[-2:]) == tuple(self.tau.shape[-2:]):
            return input_mask
        mask = input_mask.amax(1, keepdim=True) if input_mask.dim() == 4 else input_mask.unsqueeze(1)
        square = letterbox_tensor(mask.float(), self.box)
        return (square[:, 0] >= 0.5).to(input_mask.dtype)

    def fit(self, train: Tensor, **options) -> None:
        raise ArproError("a tiled detector is not trained: train the detector itself, at its own image size")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of ``tile``-long windows every ``stride`` covering ``[0, length)``, the last flush with the end."""
    starts = list(range(0, length - tile + 1, stride))
    return starts if starts[-1] == length - tile else [*starts, length - tile]


class TiledRepairer(arpro.Repairer):
    """An S-pixel image DDPM in-filling full-resolution ``[B, 3, H, W]`` images crop by crop."""

    name = "tiled"
    domain = "image"

    def __init__(self, repairer: arpro.Repairer, size: tuple[int, int], max_batch: int = 32) -> None:
        super().__init__()
        self.repairer = repairer
        self.name = repairer.name
        self.prediction_type = repairer.prediction_type
        self.tile = repairer.x_mean.shape[-1]
        width, height = size
        if min(width, height) < self.tile:
            raise ArproError(f"tiled repair needs an image at least {self.tile} px on each side (the DDPM's size), "
                             f"not {width}x{height}; leave tiled off for it")
        self.max_batch = max_batch
        self.config = {**repairer.config, "input_shape": [3, height, width]}
        mean = repairer.x_mean.flatten(1).mean(1) if repairer.x_mean.numel() else torch.zeros(3)
        self.x_mean = mean.view(3, 1, 1).expand(3, height, width).contiguous()
        self.alphas_cumprod = repairer.make_scheduler("ddpm").alphas_cumprod
        self.x_bad: Tensor | None = None
        self.active: Tensor | None = None  # [B, H, W] bool: the region the engine in-fills

    def prefill(self, x_bad: Tensor, omega_input: Tensor) -> Tensor:
        """Also remember the input and the in-filled region: crops go where they touch it."""
        self.x_bad, self.active = x_bad, omega_input.amax(1) > 0
        return super().prefill(x_bad, omega_input)

    def windows(self, shape: torch.Size) -> list[tuple[int, int, int]]:
        """(sample, top, left) of each crop to run: every crop that touches the active region."""
        tile, (height, width) = self.tile, shape[-2:]
        stride = tile - tile // 4
        tops, lefts = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
        found = []
        for b in range(shape[0]):
            active = self.active[b] if self.active is not None else torch.ones(height, width, dtype=torch.bool)
            found += [(b, y, x) for y in tops for x in lefts if active[y : y + tile, x : x + tile].any()]
        return found

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        tile = self.tile
        ramp = torch.minimum(torch.arange(1, tile + 1), torch.arange(tile, 0, -1)).float()
        weight = torch.outer(ramp, ramp).clamp(max=(tile // 4) ** 2) / (tile // 4) ** 2  # flat centre, falls at the edge
        total = torch.zeros_like(x_t)
        weights = torch.zeros(x_t.shape[0], 1, *x_t.shape[-2:], dtype=x_t.dtype)
        windows = self.windows(x_t.shape)
        for chunk in range(0, len(windows), self.max_batch):
            part = windows[chunk : chunk + self.max_batch]
            crops = torch.stack([x_t[b, :, y : y + tile, x : x + tile] for b, y, x in part])
            output = self.repairer(crops, t[[b for b, _, _ in part]])
            for (b, y, x), out in zip(part, output):
                total[b, :, y : y + tile, x : x + tile] += out * weight
                weights[b, :, y : y + tile, x : x + tile] += weight
        covered = weights > 0
        blended = total / weights.clamp(min=1e-12)
        if self.x_bad is None:
            return torch.where(covered, blended, torch.zeros_like(blended))
        a = self.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
        exact = self.x_bad if self.prediction_type == "sample" else (x_t - a.sqrt() * self.x_bad) / (1 - a).sqrt()
        return torch.where(covered, blended, exact)

    def fit(self, train: Tensor, **options) -> None:
        raise ArproError("a tiled repairer is not trained: train the DDPM itself, at its own image size")
