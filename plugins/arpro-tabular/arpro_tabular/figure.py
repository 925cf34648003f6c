"""A figure a person can read: each repaired row as standardised values, omega shaded."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import arpro  # noqa: E402

MAX_ROWS = 4
COLOURS = {"baseline": "tab:red", "infill": "tab:orange", "guided": "tab:green"}


def plot_rows(result: arpro.RepairResult, columns: list[str], path: Path) -> Path:
    """Input vs each arm's repair for the first rows, in standard units; omega columns shaded."""
    n = min(len(result), MAX_ROWS)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.6 * n), squeeze=False, sharex=True)
    positions = range(len(columns))
    for i, ax in enumerate(axes[:, 0]):
        for j in result.omega[i].nonzero().flatten().tolist():
            ax.axvspan(j - 0.5, j + 0.5, color="tab:red", alpha=0.12, lw=0)
        ax.plot(positions, result.x_bad[i].numpy(), "o-", color="tab:blue", label="input", ms=3)
        for arm_name, arm in result.arms.items():
            ax.plot(positions, arm.x_fix[i].numpy(), ".--", color=COLOURS.get(arm_name), label=arm_name, lw=1)
        ax.set_ylabel("z-score")
        scores = "".join(f", {name} {float(arm.score[i]):.1f}" for name, arm in result.arms.items())
        ax.set_title(f"{result.ids[i]}  (omega shaded; s(x_bad) = {float(result.score_bad[i]):.1f}, s(x_fix): {scores[2:]})",
                     fontsize=9)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=4)
    axes[-1, 0].set_xticks(list(positions), columns, rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
