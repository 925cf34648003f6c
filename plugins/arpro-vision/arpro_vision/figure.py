"""The paper's Figure 4 layout: input, omega, baseline repair, guided repair, difference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import arpro  # noqa: E402
from arpro_vision.images import LUMA, ImageInfo, to_uint8  # noqa: E402

MAX_ROWS = 6


def figure4(result: arpro.RepairResult, path: Path, infos: Sequence[ImageInfo | None] = ()) -> Path:
    """One row per input (at most ``MAX_ROWS``): input | ω | baseline repair | guided repair |
    |guided − input| (summed over channels), at the model's resolution, which is what the
    detector saw. Arms that were not run are left blank; a row with an :class:`ImageInfo` in
    ``infos`` (a user's file) shows the picture only, without its mirrored padding, and in
    gray when the file is grayscale, as it is written."""
    n = min(len(result), MAX_ROWS)
    titles = ["input", "ω (omega)", "baseline repair", "guided repair", "difference"]
    fig, axes = plt.subplots(n, 5, figsize=(10, 2.1 * n + 0.3), squeeze=False)
    guided = result.arms.get("guided")
    baseline = result.arms.get("baseline")
    for i in range(n):
        omega = result.omega[i]
        if omega.dim() == 3:
            omega = omega.amax(0)
        panels = [to_uint8(result.x_bad[i]), omega.float().numpy()]
        panels.append(to_uint8(baseline.x_fix[i]) if baseline is not None else None)
        panels.append(to_uint8(guided.x_fix[i]) if guided is not None else None)
        diff = None
        if guided is not None:
            diff = (guided.x_fix[i] - result.x_bad[i]).abs().sum(0).numpy()
        panels.append(diff)
        info = infos[i] if i < len(infos) else None
        if info is not None:
            panels = [None if p is None else info.box.crop(p) for p in panels]
            if info.grayscale:  # input and repairs as the written L files have them
                panels[:4] = [p if p is None or j == 1 else p @ np.array(LUMA) for j, p in enumerate(panels[:4])]
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is not None:
                cmap = "magma" if j == 4 else ("gray" if panel.ndim == 2 else None)
                vmin, vmax = (0, None) if j in (1, 4) else (0, 255) if panel.ndim == 2 else (None, None)
                ax.imshow(panel, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
        label = result.ids[i] if result.ids else str(i)
        score = f"s={float(result.score_bad[i]):.3g}"
        if guided is not None:
            score += f"\n→ {float(guided.score[i]):.3g}"
        axes[i, 0].set_ylabel(f"{label}\n{score}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
