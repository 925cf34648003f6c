"""The one training loop every ``fit`` uses, on Lightning Fabric (one CPU process by default;
under :func:`use_fabric` with several, data-parallel: each rank draws its own batches, DDP
averages the gradients), on the device and at the precision the Fabric is given, and the
denoiser objective every repairer trains with."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from arpro.errors import ArproError
from arpro.runtime.devices import check_device, check_precision, current_fabric, launch_fabric, use_fabric
from arpro.runtime.progress import progress_bar, progress_phase

if TYPE_CHECKING:
    from arpro.plugin_api.models import Model, Repairer

LossFn = Callable[[Tensor, torch.Generator], Tensor]
RANK_SEED_STRIDE = 2**32


def rank_seed(seed: int, rank: int) -> int:
    """The seed rank ``rank`` trains with: ``seed + rank * 2**32``.

    Rank 0 uses exactly ``seed``, so one process reproduces single-process training; for
    seeds below ``2**32`` no two (seed, rank) pairs share a random stream.
    """
    return seed + rank * RANK_SEED_STRIDE


def _label(model: nn.Module) -> str:
    return getattr(model, "name", type(model).__name__)


class _LossModule(nn.Module):
    """Owns ``model`` and computes ``loss_fn`` in its forward, so DDP sees the loss's graph."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        return self.loss_fn(batch, generator)


def _rounds(n: int, *, steps: int, batch_size: int, epochs: bool, generator: torch.Generator,
            seed: int, rank: int, world: int) -> Iterator[list[Tensor]]:
    """Index batches, one list per progress tick (a step, or an epoch), drawn lazily so that
    batch draws and ``loss_fn``'s draws interleave in a fixed order."""
    if not epochs:
        for _ in range(steps):
            yield [torch.randint(0, n, (min(batch_size, n),), generator=generator)]
        return
    shuffle = torch.Generator().manual_seed(seed)  # the same permutation on every rank
    usable = n - n % world  # equal shards, so every rank takes the same number of steps
    for _ in range(steps):
        yield list(torch.randperm(n, generator=shuffle)[:usable][rank::world].split(batch_size))


def fit_loop(
    model: nn.Module,
    loss_fn: LossFn,
    train: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    weight_decay: float = 0.01,
    cosine: bool = False,
    parameters: Iterable[nn.Parameter] | None = None,
    epochs: bool = False,
    progress: bool = True,
    description: str | None = None,
) -> list[float]:
    """Train ``model`` with AdamW on ``loss_fn(batch, generator)``; return each step's loss (this rank's).

    Each of ``steps`` steps draws ``batch_size`` samples of ``train`` with replacement; with
    ``epochs=True``, ``steps`` counts epochs, each a fresh shuffle in batches of ``batch_size``
    (the last one smaller), split across ranks. ``batch_size`` is per process (Lightning's
    convention). ``generator`` is the rank's generator, seeded with :func:`rank_seed`, which
    also seeds torch's global RNG. ``weight_decay`` defaults to AdamW's own; ``cosine`` anneals
    the learning rate to 0 over all steps; ``parameters`` (default: all of ``model``'s) are the
    ones the optimizer updates.
    """
    if train.shape[0] == 0 or steps < 0 or batch_size < 1:
        raise ArproError(f"cannot train {_label(model)} on {train.shape[0]} samples, {steps} steps, batches of {batch_size}")
    fabric = current_fabric()
    rank, world = fabric.global_rank, fabric.world_size
    own_seed = rank_seed(seed, rank)
    torch.manual_seed(own_seed)
    generator = torch.Generator().manual_seed(own_seed)
    trained = model.parameters() if parameters is None else parameters
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=weight_decay)
    per_round = math.ceil((train.shape[0] // world) / batch_size) if epochs else 1
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps * per_round)) if cosine else None
    module, optimizer = fabric.setup(_LossModule(model, loss_fn), optimizer)
    rounds = _rounds(train.shape[0], steps=steps, batch_size=batch_size, epochs=epochs, generator=generator,
                     seed=seed, rank=rank, world=world)
    losses: list[float] = []
    model.train()
    description = description or f"training {_label(model)}"
    with progress_bar(description, total=steps, enabled=progress and rank == 0) as advance:
        for batches in rounds:
            for idx in batches:
                loss = module(fabric.to_device(train[idx]), generator)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                losses.append(loss.item())
            advance(**({"loss": f"{losses[-1]:.4f}"} if losses else {}))
    model.eval().cpu()  # between calls a model lives on the CPU; place() moves it for a run
    return losses


def fit_options(model: nn.Module, options: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """``steps``, ``batch_size`` and ``lr`` for one ``fit`` call: the call's options, else the
    model's config (``train_steps``, ``batch_size``, ``lr``), else ``defaults``."""
    config = getattr(model, "config", {})
    keys = {"steps": ("train_steps", int), "batch_size": ("batch_size", int), "lr": ("lr", float)}
    resolved = {}
    for key, (config_key, kind) in keys.items():
        value = options.get(key, config.get(config_key, defaults.get(key)))
        if value is None:
            raise ArproError(f"{_label(model)}: no {key} given and no {config_key} in its config")
        resolved[key] = kind(value)
    return resolved


def train_denoiser(
    model: Repairer,
    train: Tensor,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = True,
    extra_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    weighting: str = "uniform",
) -> list[float]:
    """Train a repairer's network on normal samples with the standard DDPM objective.

    The target is the noise (``prediction_type="epsilon"``) or ``x0`` (``"sample"``);
    ``extra_loss(x0, prediction)`` adds a model-specific term per sample (shape ``[B]``, e.g.
    Diffusion-TS's Fourier loss). ``weighting="snr+1"`` weights each sample's x0 loss by
    ``1 / (1 − ᾱ_t)``, the v-prediction objective written on x0 (Salimans & Ho, 2022), so the
    low-noise steps, where x0 is almost the input, weigh as much as the others. ``steps``,
    ``batch_size`` and ``lr`` default to the model's config (``train_steps``, ``batch_size``,
    ``lr``; else batch 64, lr 1e-4). AdamW, as in the paper, through
    :func:`arpro.workflows.train.fit_loop`. Returns the loss per step.
    """
    if weighting not in ("uniform", "snr+1") or (weighting == "snr+1" and model.prediction_type != "sample"):
        raise ArproError(f"weighting {weighting!r} is not one for prediction_type {model.prediction_type!r}")
    given = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr).items() if v is not None}
    scheduler = model.make_scheduler("ddpm")
    timesteps = len(scheduler.alphas_cumprod)
    model.x_mean = train.mean(0)

    def loss_fn(x0: Tensor, generator: torch.Generator) -> Tensor:
        t = torch.randint(0, timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # drawn on the CPU on every device
        prediction = model(scheduler.add_noise(x0, noise, t), t)
        target = noise if model.prediction_type == "epsilon" else x0
        loss = (prediction - target).pow(2).flatten(1).mean(1)
        if extra_loss is not None:
            loss = loss + extra_loss(x0, prediction)
        if weighting == "snr+1":
            loss = loss / (1 - scheduler.alphas_cumprod.to(x0.device)[t])
        return loss.mean()

    options = fit_options(model, given, batch_size=64, lr=1e-4)
    return fit_loop(model, loss_fn, train, seed=seed, progress=progress, **options)


def train_and_save(kind: str, name: str, out: Path, *, overwrite: bool = False, model_options: dict[str, Any] | None = None,
                   devices: int = 1, strategy: str = "ddp", num_nodes: int = 1, seed: int = 0, dataset: str | None = None,
                   data_root: Path | None = None, dataset_options: dict[str, Any] | None = None, device: str = "auto",
                   precision: str = "32", checkpoint_format: str = "arpro", holdout: float = 0.1) -> Model | None:
    """``arpro train``: fit a fresh ``kind`` ``name`` on the dataset's normal samples and save it to ``out``
    (a ``.safetensors`` file, or the model's own ``folder_format``), training on ``device`` at ``precision``.

    A repairer is validated on held-out normal samples (the dataset's validation split, else a
    ``holdout`` share of its training split): its in-fill figure is printed and stored in the header.
    With ``devices * num_nodes > 1`` every rank trains (DDP keeps them equal) and rank 0
    writes the checkpoint and returns the model; the other ranks return ``None``.
    """
    from arpro.io.checkpoint import check_training_data, save, save_folder
    from arpro.io.outputs import staging
    from arpro.io.run_spec import dataset_defaults, load_dataset
    from arpro.plugin_api import registry
    from arpro.workflows import infill_quality

    cls = registry.get(kind, name)
    device = check_device(device)
    check_precision(precision, device.partition(":")[0])
    if devices < 1 or num_nodes < 1:
        raise ArproError("--devices and --num-nodes must be at least 1")
    folder = checkpoint_format != "arpro"
    if folder and checkpoint_format != cls.folder_format:
        raise ArproError(f"--format must be arpro{' or ' + cls.folder_format if cls.folder_format else ''} for {kind} "
                         f"{name!r}, not {checkpoint_format!r}")
    defaults = dataset_defaults(cls, dataset, cls.domain) if kind == "detector" else {}
    data = load_dataset(dataset, data_root, domain=cls.domain, **{**defaults, **(dataset_options or {})})
    if out.is_dir() and not folder:
        raise ArproError(f"--out {out} is a folder; give the checkpoint file to write, e.g. {out / (name + '.safetensors')}")
    if out.exists() and not overwrite:
        raise ArproError(f"{out} already exists; pass --overwrite to replace it")
    overrides = model_options or {}
    cls.check_config(overrides, "--model-option")
    torch.manual_seed(seed)  # the initial weights: torch seeds its global generator at random in each process
    try:
        model = cls.for_dataset(data, **overrides)
    except TypeError as error:
        raise ArproError(f"{kind} {name!r} does not take --model-option {', '.join(overrides)}: {error}") from None
    with staging(out, directory=folder):  # after the checks of the options, so that a bad one creates no folder
        pass  # an --out that cannot be written fails now, not after training
    train, held_out = infill_quality.split(data, holdout) if kind == "repairer" else (data.train().x, None)
    check_training_data(train, data)
    distributed = devices * num_nodes > 1
    fabric = launch_fabric(devices, strategy, num_nodes, device=device, precision=precision) \
        if distributed or (device, precision) != ("cpu", "32") else None
    with nullcontext() if fabric is None else use_fabric(fabric), \
            progress_phase(f"fitting {kind} {name}", enabled=not distributed):  # its silent stretches included
        model.fit(train, seed=seed, progress=True)
    if distributed:
        fabric.barrier()
        if fabric.global_rank != 0:
            return None
    figure = infill_quality.validate(model, held_out, seed=seed) if held_out is not None else None
    if folder:  # the model's own format has no place for arpro's validation figure: it is printed only
        save_folder(model, out)
    else:
        save(model, out, {infill_quality.METADATA_KEY: figure} if figure else None)
    return model
