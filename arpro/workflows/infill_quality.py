"""Does a repairer in-fill well? Its unguided in-fill, through arpro's own loop, against a naive fill.

A repair regenerates the masked region ω of an input from its surroundings. A repairer that
does that worse than filling ω with the training mean (or, along time, by linear interpolation)
makes every explanation built on it worse than no model at all; this module measures it on
held-out normal samples, with the masks the repairer's domain repairs with (``Repairer.infill_masks``:
by default a random quarter of the features; the built-in plugins add time blocks and image squares).

The figure is the mean squared in-fill error over the masked elements, in the model's space, of
the repairer and of the naive fill: the training mean, which is also where a repair's in-fill
starts (``Repairer.prefill``). ``ratio`` is the repairer's error over the naive fill's, the worst
over the masks; the repairer beats the naive fill when ``ratio < 1``. For time blocks, linear
interpolation between the block's neighbours is reported beside them: on smooth signals it is a
harder bar, which a good repairer roughly matches.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from arpro.algorithm.engine import guided_masked_diffusion
from arpro.algorithm.settings import RepairSettings
from arpro.io.checkpoint import read_metadata
from arpro.plugin_api.models import Repairer

HOLDOUT_FRACTION = 0.1  # share of the normal training samples `arpro train repairer` keeps for validation
HOLDOUT_SEED = 0  # the split is the same whatever --seed trains with
MAX_SAMPLES = 32  # held-out samples in-filled per mask
METADATA_KEY = "arpro_validation"  # where a checkpoint's header holds the figure
TIME_BLOCK = "time block"  # a mask of this name (see Repairer.infill_masks) is also filled by linear interpolation


def split(dataset, fraction: float = HOLDOUT_FRACTION) -> tuple[Tensor, Tensor | None]:
    """``(train, held_out)`` for a repairer: the dataset's validation split when it has one (windows
    of a series overlap, so a random share of them would leak), else a fixed seeded ``fraction`` of
    its training split (at least one sample; ``None`` when ``fraction`` is 0)."""
    validation, train = dataset.validation(), dataset.train().x
    if validation is not None and len(validation) > 0:
        return train, validation.x
    n_out = min(len(train) - 1, max(1, round(fraction * len(train)))) if fraction > 0 else 0
    if n_out < 1:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return train[order[n_out:].sort().values], train[order[:n_out].sort().values]


def _interpolated(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` [N, T, D] with each masked time block replaced by the line between its neighbours."""
    known = mask[:, :, 0] == 0  # [N, T]; every block has a known step on each side
    steps = torch.arange(x.shape[1]).expand_as(known)
    before = torch.where(known, steps, -1).cummax(1).values  # the last known step at or before t
    after = torch.where(known, steps, x.shape[1]).flip(1).cummin(1).values.flip(1)  # the first at or after t
    span = (after - before).clamp_min(1)
    weight = ((steps - before) / span).double()[:, :, None]
    x64 = x.double()
    left = x64.gather(1, before[:, :, None].expand_as(x))
    right = x64.gather(1, after[:, :, None].expand_as(x))
    return (left + weight * (right - left)).to(x.dtype)


def _masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> float:
    return float(((a - b).pow(2) * mask).sum() / mask.sum().clamp_min(1))


@torch.no_grad()
def measure(repairer: Repairer, held_out: Tensor, *, settings: RepairSettings | None = None, seed: int = 0,
            progress: bool = False) -> dict:
    """The in-fill figure of ``repairer`` on (at most ``MAX_SAMPLES`` of) ``held_out`` normal samples.

    ``settings`` are the repair loop's (default: :class:`RepairSettings`' defaults); the
    in-fill is the unguided in-filling arm of a repair, sample ``i`` seeded with ``seed + i``.
    """
    settings = settings or RepairSettings()
    x = held_out[torch.linspace(0, len(held_out) - 1, min(len(held_out), MAX_SAMPLES)).round().long()].float()
    generator = torch.Generator().manual_seed(seed)
    kinds = {}
    for kind, mask in repairer.infill_masks(x.shape[0], generator).items():
        filled = guided_masked_diffusion(x, mask, repairer, settings, [seed + i for i in range(x.shape[0])], loss=None,
                                         eta=0.0, infill=True, progress=progress, label=f"in-fill check ({kind})")
        naive = {"training mean": _masked_mse(repairer.x_mean.expand_as(x), x, mask)}
        if kind == TIME_BLOCK:
            naive["linear interpolation"] = _masked_mse(_interpolated(x, mask), x, mask)
        model = _masked_mse(filled, x, mask)
        kinds[kind] = {"repairer": model, **naive, "ratio": model / max(naive["training mean"], 1e-12)}
    ratio = max(k["ratio"] for k in kinds.values())
    return {"n": x.shape[0], "masks": kinds, "ratio": ratio, "beats_naive": ratio < 1.0}


def describe(figure: dict) -> str:
    """One line: the repairer's in-fill error against the naive fill, per mask."""
    return f"in-fill error on {figure['n']} held-out normal samples (MSE): " + "; ".join(
        f"{kind}: repairer {m['repairer']:.3g} vs training mean {m['training mean']:.3g}"
        + (f" (linear interpolation {m['linear interpolation']:.3g})" if "linear interpolation" in m else "")
        for kind, m in figure["masks"].items())


def warning(figure: dict) -> str | None:
    """The warning to print when the repairer does not beat the naive fill, else ``None``."""
    if figure["beats_naive"]:
        return None
    return (f"the repairer in-fills worse than the training mean (error ratio {figure['ratio']:.2f} >= 1): repairs built "
            "on it are not to be trusted; train it longer (--model-option train_steps=N)")


def validate(repairer: Repairer, held_out: Tensor, *, seed: int = 0) -> dict:
    """:func:`measure`, printed: the figure's line, and a ``warning:`` line when it loses to the naive fill."""
    import sys

    figure = measure(repairer, held_out, seed=seed, progress=True)
    print(describe(figure), flush=True)
    message = warning(figure)
    if message:
        print("warning: " + message, file=sys.stderr)
    return figure


def recorded(path: Path | None) -> dict | None:
    """The figure a checkpoint's header holds (written by ``arpro train repairer``), if any; one that
    does not read as a figure counts as none, and is measured again."""
    if path is None:
        return None
    text = read_metadata(path).get(METADATA_KEY)
    try:
        figure = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return figure if isinstance(figure, dict) and {"masks", "ratio", "beats_naive", "n"} <= set(figure) else None
