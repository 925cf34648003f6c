"""The one training loop every ``fit`` uses, in one plain CPU process by default, else on Lightning
Fabric (under :func:`use_fabric` with several processes, data-parallel: each rank draws its own
batches, DDP averages the gradients), on the device and at the precision the Fabric is given, and
the denoiser objective every repairer trains with."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from arpro.errors import ArproError
from arpro.runtime.devices import check_device, check_precision, current_fabric, launch_fabric, use_fabric
from arpro.runtime.progress import progress_bar, progress_phase

if TYPE_CHECKING:
    from arpro.plugin_api.models import Model, Repairer

LossFn = Callable[[Tensor, torch.Generator], Tensor]
RANK_SEED_STRIDE = 2**32


@dataclass(frozen=True)
class EarlyStop:
    """Score the weights being trained ``evaluations`` times, evenly over the steps (``score(model)``,
    lower is better), and stop after ``patience`` scores in a row without a new best, keeping the
    best-scored weights."""

    score: Callable[[nn.Module], float]
    evaluations: int = 10
    patience: int = 2
    name: str = "score"


_EARLY_STOP: ContextVar[EarlyStop | None] = ContextVar("early_stop", default=None)


@contextmanager
def early_stopping(stop: EarlyStop | None) -> Iterator[None]:
    """Make :func:`fit_loop` inside the ``with`` block stop early by ``stop`` (``None``: never)."""
    token = _EARLY_STOP.set(stop)
    try:
        yield
    finally:
        _EARLY_STOP.reset(token)


def _ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """The EMA update of diffusers' ``EMAModel``: decay ``min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so that a short run's average is not dominated by its random start."""

    def update(averaged: list[Tensor], current: list[Tensor], n: Tensor | int) -> None:
        weight = min(decay, (1 + int(n)) / (10 + int(n)))
        for a, c in zip(averaged, current):
            a.lerp_(c, 1 - weight)

    return update


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
    warmup: int = 0,
    ema_decay: float = 0.0,
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
    also seeds torch's global RNG. ``weight_decay`` defaults to AdamW's own; ``warmup`` optimizer
    steps raise the learning rate linearly from 0 (diffusers' schedules), after which ``cosine``
    anneals it to 0 over the remaining steps; ``ema_decay`` > 0 keeps an exponential moving average
    of the weights (as diffusers' training examples do), and the model ends with the averaged
    weights; ``parameters`` (default: all of ``model``'s) are the ones the optimizer updates.
    Inside :func:`early_stopping` (one process only) training may end before ``steps``.
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
    schedule = _schedule(optimizer, warmup, max(1, steps * per_round), cosine)
    module, optimizer = fabric.setup(_LossModule(model, loss_fn), optimizer)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema(ema_decay)) if ema_decay > 0 else None
    stop = _EARLY_STOP.get() if world == 1 else None
    every = max(1, steps // stop.evaluations) if stop is not None else 0
    best: tuple[float, int, Tensor] | None = None  # (score, step, weights)
    rounds = _rounds(train.shape[0], steps=steps, batch_size=batch_size, epochs=epochs, generator=generator,
                     seed=seed, rank=rank, world=world)
    losses: list[float] = []
    done = 0
    model.train()
    description = description or f"training {_label(model)}"
    with progress_bar(description, total=steps, enabled=progress and rank == 0) as advance:
        for done, batches in enumerate(rounds, 1):
            for idx in batches:
                loss = module(fabric.to_device(train[idx]), generator)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(loss.item())
            advance(**({"loss": f"{losses[-1]:.4f}"} if losses else {}))
            if stop is not None and done % every == 0 and done < steps:
                best = _score(stop, model if ema is None else ema.module, done, best)
                if done - best[1] >= every * stop.patience:
                    print(f"early stop at step {done} of {steps}: the {stop.name} has not improved on {best[0]:.3g} (step "
                          f"{best[1]}) in {stop.patience} evaluations; keeping step {best[1]}'s weights", flush=True)
                    break
    if ema is not None:
        vector_to_parameters(parameters_to_vector(ema.module.parameters()), model.parameters())
    if best is not None and done < steps:
        vector_to_parameters(best[2], model.parameters())
    model.eval().cpu()  # between calls a model lives on the CPU; place() moves it for a run
    return losses


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, cosine: bool):
    """diffusers' learning-rate schedule: linear warm-up, then cosine decay to 0 or constant; ``None`` when neither."""
    if cosine:
        from diffusers.optimization import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if warmup:
        from diffusers.optimization import get_constant_schedule_with_warmup

        return get_constant_schedule_with_warmup(optimizer, warmup)
    return None


def _score(stop: EarlyStop, model: nn.Module, step: int, best: tuple[float, int, Tensor] | None):
    """The best (score, step, weights) after scoring ``model``'s weights at ``step``."""
    model.eval()
    score = stop.score(model)
    model.train()
    return (score, step, parameters_to_vector(model.parameters()).detach().clone()) if best is None or score < best[0] else best


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
    steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
    seed: int = 0, progress: bool = True,
    extra_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    weighting: str = "uniform",
    warmup: float = 0.0, cosine: bool = False, ema_decay: float = 0.999,
) -> list[float]:
    """Train a repairer's network on normal samples with the standard DDPM objective.

    The target is the noise (``prediction_type="epsilon"``) or ``x0`` (``"sample"``);
    ``extra_loss(x0, prediction)`` adds a model-specific term per sample (shape ``[B]``, e.g.
    Diffusion-TS's Fourier loss). ``weighting="snr+1"`` weights each sample's x0 loss by
    ``1 / (1 − ᾱ_t)``, the v-prediction objective written on x0 (Salimans & Ho, 2022), so the
    low-noise steps, where x0 is almost the input, weigh as much as the others. ``steps``,
    ``batch_size`` and ``lr`` default to the model's config (``train_steps``, ``batch_size``,
    ``lr``; else batch 64, lr 1e-4). AdamW, as in the paper, through
    :func:`arpro.workflows.train.fit_loop`, with a ``warmup`` share of the steps and ``cosine``
    decay (off unless a model asks: docs/decisions/denoiser-lr-schedule.md) and EMA weights (``ema_decay``, on:
    diffusers' training examples' 0.999). Returns the loss per step.
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
    return fit_loop(model, loss_fn, train, seed=seed, progress=progress, warmup=round(warmup * options["steps"]),
                    cosine=cosine, ema_decay=ema_decay, **options)


def infill_stop(held_out: Tensor, seed: int) -> EarlyStop | None:
    """Early stopping on the held-out in-fill ratio, measured cheaply (16 samples, 20 denoising steps;
    the checkpoint's figure uses more) every tenth of the steps. None below 8 samples: 2 TEP windows'
    ratio was noise enough to stop diffusion-ts at 3,000 of 10,000 steps."""
    from arpro.algorithm.settings import RepairSettings
    from arpro.workflows import infill_quality

    if len(held_out) < 8:
        print(f"note: {len(held_out)} held-out samples are too few to stop early on; training every step", file=sys.stderr)
        return None
    settings = RepairSettings(steps=20)
    few = held_out[torch.linspace(0, len(held_out) - 1, min(len(held_out), 16)).round().long()]
    return EarlyStop(lambda m: infill_quality.measure(m, few, settings=settings, seed=seed)["ratio"],
                     name="held-out in-fill ratio")


def train_and_save(kind: str, name: str, out: Path, *, overwrite: bool = False, model_options: dict[str, Any] | None = None,
                   devices: int = 1, strategy: str = "ddp", num_nodes: int = 1, seed: int = 0, dataset: str | None = None,
                   data_root: Path | None = None, dataset_options: dict[str, Any] | None = None, device: str = "auto",
                   precision: str = "32", checkpoint_format: str = "arpro", holdout: float = 0.1,
                   early_stop: bool = True) -> Model | None:
    """``arpro train``: fit a fresh ``kind`` ``name`` on the dataset's normal samples and save it to ``out``
    (a ``.safetensors`` file, or the model's own ``folder_format``), training on ``device`` at ``precision``.

    A repairer is validated on held-out normal samples (the dataset's validation split, else a
    ``holdout`` share of its training split): its in-fill figure is printed and stored in the header.
    With ``early_stop``, training scores the held-out in-fill ratio cheaply every tenth of its steps
    and stops when it has not improved twice in a row (:func:`infill_stop`).
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
            progress_phase(f"fitting {kind} {name}", enabled=not distributed), \
            early_stopping(infill_stop(held_out, seed) if early_stop and held_out is not None else None):
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
