"""Figures in the layout of the paper's Figure 6: original, baseline and guided repair of
chosen features, omega (the cells the repair may change) shaded, and each one's score."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import arpro  # noqa: E402

MAX_INPUTS = 4
FEATURES_PER_FIGURE = 4
STYLE = {
    "input": dict(color="black", lw=1.4, label="original"),
    "baseline": dict(color="tab:blue", lw=1.1, ls="--", label="baseline"),
    "infill": dict(color="tab:orange", lw=1.0, ls=":", label="in-filling"),
    "guided": dict(color="tab:green", lw=1.4, label="guided (AR-Pro)"),
}


def chosen_features(omega: np.ndarray, k: int = FEATURES_PER_FIGURE) -> list[int]:
    """The features with the most time steps in omega (``omega`` is ``[T, D]``)."""
    counts = omega.sum(0)
    order = [int(j) for j in np.argsort(-counts, kind="stable")]
    flagged = [j for j in order if counts[j] > 0]
    return (flagged or order)[:k]


def spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True as (first, last) index pairs."""
    out, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i - 1))
            start = None
    return out


def plot_repairs(result: arpro.RepairResult, columns: list[str], out_dir: Path, to_units, arms=("baseline", "guided")) -> list[Path]:
    """One PNG per input (first ``MAX_INPUTS``): a panel per chosen feature, in the file's units."""
    paths = []
    for i in range(min(len(result), MAX_INPUTS)):
        omega = result.omega_input[i].numpy() > 0.5
        features = chosen_features(omega)
        series = {"input": to_units(result.x_bad[i])}
        for arm in arms:
            if arm in result.arms:
                series[arm] = to_units(result.arms[arm].x_fix[i])
        fig, axes = plt.subplots(1, len(features), figsize=(3.6 * len(features), 2.8), squeeze=False)
        steps = np.arange(omega.shape[0])
        for ax, j in zip(axes[0], features):
            for first, last in spans(omega[:, j]):
                ax.axvspan(first - 0.5, last + 0.5, color="tab:red", alpha=0.18, lw=0)
            for arm, values in series.items():
                ax.plot(steps, values[:, j], **STYLE.get(arm, {"label": arm}))
            ax.set_title(columns[j], fontsize=9)
            ax.set_xlabel("time step", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7, loc="best")
        scores = f"s(x_bad) = {float(result.score_bad[i]):.2f}" + "".join(
            f", {arm} s(x_fix) = {float(result.arms[arm].score[i]):.2f}" for arm in arms if arm in result.arms)
        fig.suptitle(f"{result.ids[i]}: {scores}; shaded: omega, the cells the repair may change", fontsize=9)
        fig.tight_layout()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(result.ids[i]))
        path = Path(out_dir) / f"repair-{i:02d}-{safe}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
