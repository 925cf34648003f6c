"""The region a repair of a picture regenerates, as ``arpro check`` in-fills it: every repairer of pictures uses it."""

from __future__ import annotations

import torch
from torch import Tensor


class SquareMasks:
    """Mixin for this plugin's repairers: ``Repairer.infill_masks`` for its samples."""

    def infill_masks(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """A square of a quarter of the side at a random place: the region a repair of a local defect regenerates."""
        shape = tuple(self.x_mean.shape)
        h, w = shape[-2:]
        side = max(1, min(h, w) // 4)
        mask = torch.zeros(n, *shape)
        for i in range(n):
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            mask[i, ..., top : top + side, left : left + side] = 1.0
        return {"square block": mask}
