"""Figures in the layout of the paper's Figure 6: the original and every arm's repair of the
window's most flagged sensors, omega (the cells the repair may change) shaded red, the labelled
anomalous cells (where the set labels them) hatched green, and each one's score."""

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


def plot_repairs(result: arpro.RepairResult, columns: list[str], out_dir: Path, to_units,
                 truth: np.ndarray | None = None) -> list[Path]:
    """One PNG per input (first ``MAX_INPUTS``): a panel per chosen feature, in the file's units,
    with every arm run; ``truth`` ``[B, T, D]`` marks the labelled anomalous cells."""
    paths, arms = [], list(result.arms)
    for i in range(min(len(result), MAX_INPUTS)):
        omega = result.omega_input[i].numpy() > 0.5
        features = chosen_features(omega)
        series = {"input": to_units(result.x_bad[i])}
        for arm in arms:
            series[arm] = to_units(result.arms[arm].x_fix[i])
        fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 3.4), squeeze=False)
        steps = np.arange(omega.shape[0])
        for ax, j in zip(axes[0], features):
            for first, last in spans(omega[:, j]):
                ax.axvspan(first - 0.5, last + 0.5, color="tab:red", alpha=0.18, lw=0)
            for first, last in spans(truth[i][:, j] > 0.5) if truth is not None else ():
                ax.axvspan(first - 0.5, last + 0.5, fill=False, hatch="//", edgecolor="tab:green", lw=0)
            for arm, values in series.items():
                ax.plot(steps, values[:, j], **STYLE.get(arm, {"label": arm}))
            ax.set_title(columns[j], fontsize=11)
            ax.set_xlabel("time step", fontsize=10)
            ax.tick_params(labelsize=9)
        axes[0, 0].legend(fontsize=9, loc="best")
        scores = ", ".join(f"{arm} {float(result.score_bad[i]):.3g} → {float(result.arms[arm].score[i]):.3g}" for arm in arms)
        marks = "red: omega, the cells the repair may change" + ("; hatched: labelled anomalous" if truth is not None else "")
        fig.suptitle(f"{result.ids[i]}: s {scores}\n{marks}", fontsize=11)
        fig.tight_layout()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(result.ids[i]))
        path = Path(out_dir) / f"repair-{i:02d}-{safe}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
