"""Schedulers and the denoiser training loop shared by every repairer.

Schedulers are diffusers' own; arpro never re-implements a noise schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from arpro.errors import ArproError
from arpro.training import fit_loop, fit_options

if TYPE_CHECKING:
    from arpro.protocols import Repairer

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def make_scheduler(kind: str, *, num_train_timesteps: int, beta_schedule: str, prediction_type: str):
    """A diffusers scheduler of ``kind`` ("ddpm" or "ddim") with the given training schedule."""
    if kind not in SCHEDULERS:
        raise ArproError(f"unknown scheduler {kind!r}; choose one of: {', '.join(SCHEDULERS)}")
    options = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    if kind == "ddim":
        options["set_alpha_to_one"] = True
    return SCHEDULERS[kind](**options)


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
) -> list[float]:
    """Train a repairer's network on normal samples with the standard DDPM objective.

    The target is the noise (``prediction_type="epsilon"``) or ``x0`` (``"sample"``);
    ``extra_loss(x0, prediction)`` adds a model-specific term (e.g. Diffusion-TS's
    Fourier loss). ``steps``, ``batch_size`` and ``lr`` default to the model's config
    (``train_steps``, ``batch_size``, ``lr``; else batch 64, lr 1e-4). AdamW, as in the
    paper, through :func:`arpro.training.fit_loop`. Returns the loss per step.
    """
    given = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr).items() if v is not None}
    scheduler = model.make_scheduler("ddpm")
    timesteps = len(scheduler.alphas_cumprod)
    model.x_mean = train.mean(0)

    def loss_fn(x0: Tensor, generator: torch.Generator) -> Tensor:
        t = torch.randint(0, timesteps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        prediction = model(scheduler.add_noise(x0, noise, t), t)
        target = noise if model.prediction_type == "epsilon" else x0
        loss = torch.nn.functional.mse_loss(prediction, target)
        return loss if extra_loss is None else loss + extra_loss(x0, prediction)

    options = fit_options(model, given, batch_size=64, lr=1e-4)
    return fit_loop(model, loss_fn, train, seed=seed, progress=progress, **options)
