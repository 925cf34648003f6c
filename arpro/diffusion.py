"""Schedulers and the denoiser training loop shared by every repairer.

Schedulers are diffusers' own; arpro never re-implements a noise schedule.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from arpro.errors import ArproError
from arpro.progress import progress_bar

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
    model,
    train: Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
    extra_loss=None,
) -> list[float]:
    """Train a repairer's network on normal samples with the standard DDPM objective.

    The target is the noise (``prediction_type="epsilon"``) or ``x0`` (``"sample"``);
    ``extra_loss(x0, prediction)`` adds a model-specific term (e.g. Diffusion-TS's
    Fourier loss). AdamW, as in the paper. Returns the loss per step.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scheduler = model.make_scheduler("ddpm")
    alphas_cumprod = scheduler.alphas_cumprod
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.x_mean = train.mean(0)
    model.train()
    losses: list[float] = []
    with progress_bar(f"training {model.name}", total=steps, enabled=progress) as advance:
        for _ in range(steps):
            idx = torch.randint(0, train.shape[0], (min(batch_size, train.shape[0]),), generator=generator)
            x0 = train[idx]
            t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            x_t = scheduler.add_noise(x0, noise, t)
            prediction = model(x_t, t)
            target = noise if model.prediction_type == "epsilon" else x0
            loss = torch.nn.functional.mse_loss(prediction, target)
            if extra_loss is not None:
                loss = loss + extra_loss(x0, prediction)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            advance(loss=f"{loss.item():.4f}")
    model.eval()
    return losses
