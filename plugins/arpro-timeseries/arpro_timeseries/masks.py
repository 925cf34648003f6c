"""The regions a repair of a window regenerates, as ``arpro check`` in-fills them: every repairer of windows
uses them."""

from __future__ import annotations

import torch
from torch import Tensor


class WindowMasks:
    """Mixin for this plugin's repairers: ``Repairer.infill_masks`` for its samples."""

    def infill_masks(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """A block of a fifth of the time steps (all features, a known step on each side) and a random quarter
        of the features (all time steps): the regions a repair of a window regenerates."""
        t, d = self.x_mean.shape
        length = max(1, t // 5)
        starts = torch.randint(1, max(2, t - length), (n,), generator=generator)
        steps = torch.arange(t)
        block = ((steps >= starts[:, None]) & (steps < starts[:, None] + length)).float()
        chosen = torch.stack([torch.randperm(d, generator=generator)[: max(1, d // 4)] for _ in range(n)])
        features = torch.zeros(n, d).scatter_(1, chosen, 1.0)
        return {"time block": block[:, :, None].expand(n, t, d).clone(),
                "feature subset": features[:, None, :].expand(n, t, d).clone()}
