"""Property-guided diffusion with masked in-filling: eqs. 4–7 of the paper.

For t = T..1 (or t0..1 when starting from the noised input, SDEdit-style):

    x̂_{t-1}      = denoise_step(x_t) − eta_t ∇L(·)              (4)
    x_bad,{t-1}  = sqrt(a_{t-1}) x_bad + sqrt(1 − a_{t-1}) eps     (5)
    x_{t-1}      = omega_bar ⊙ x_bad,{t-1} + omega ⊙ x̂_{t-1}      (6)
    L            = Σ_k lambda_k L_k                                 (7)

``denoise_step`` is a diffusers scheduler step on the repairer's output. The gradient of
L is taken at ``x_t`` (the paper, ``guide_on="xt"``) or at the scheduler's denoised
estimate ``x̂0`` (``guide_on="x0"``); either way it costs one detector forward and
backward per step and never back-propagates through the denoiser. At the last step
``x_bad,0 = x_bad``, so with in-filling the repair equals ``x_bad`` exactly on omega_bar.
``infill_stop > 0`` (not in the paper) ends (5)–(6) once t < infill_stop·T: the last, nearly
clean steps then denoise the whole input, so omega_bar may move a little (M_d > 0) to agree
with the repaired omega, and P2's gradient on omega_bar takes effect.
Optionally each sample's gradient is capped in RMS (``grad_clip``) so a step can't diverge.
The baselines are this same loop with ``lambda = 0`` (no guidance) and/or without (6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from arpro.errors import ArproError
from arpro.models import Detector, Repairer
from arpro.progress import progress_bar
from arpro.protocols import Property, PropertyContext
from arpro.settings import RepairSettings

Loss = Callable[[Tensor], Tensor]  # x -> per-sample L(x), [B]


def property_loss(
    detector: Detector, properties: Sequence[Property], weights: dict[str, float], ctx: PropertyContext
) -> Loss:
    """``L(x) = Σ_k lambda_k L_k(x)`` (eq. 7), decomposing ``x`` once for all properties."""
    need_detector = any(p.needs_detector for p in properties)

    def loss(x: Tensor) -> Tensor:
        fix = detector.decompose(x) if need_detector else None
        return sum(weights.get(p.name, 1.0) * p.loss(ctx, x, fix) for p in properties)

    return loss


def _per_sample_noise(shape: torch.Size, generators: list[torch.Generator]) -> Tensor:
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators])


def denoising_timesteps(scheduler, settings: RepairSettings) -> Tensor:
    """The scheduler's timesteps for ``settings.steps``, cut to ``<= t0·T`` for an SDEdit start."""
    scheduler.set_timesteps(settings.steps)
    timesteps = scheduler.timesteps
    if settings.start == "sdedit":
        limit = settings.t0 * scheduler.config.num_train_timesteps
        timesteps = timesteps[timesteps < limit]
        if len(timesteps) == 0:
            raise ArproError(f"--t0 {settings.t0} leaves no denoising steps at --steps {settings.steps}")
    return timesteps


def guided_masked_diffusion(
    x_bad: Tensor,
    omega_input: Tensor,
    repairer: Repairer,
    settings: RepairSettings,
    seeds: Sequence[int],
    *,
    loss: Loss | None,
    eta: float,
    infill: bool,
    progress: bool = True,
    label: str = "repair",
) -> Tensor:
    """Run eqs. 4–6 from ``x_bad`` and return ``x_fix``; ``loss=None`` is the unguided loop.

    Randomness is drawn per sample from generators seeded by ``seeds``, one stream for the
    denoising chain and one for the in-filling noise of eq. 5, so every arm (guided or not,
    in-filling or not) starts from the same noise and a sample's result does not depend on
    the batch it is in.
    """
    scheduler = repairer.make_scheduler(settings.scheduler)
    timesteps = denoising_timesteps(scheduler, settings)
    chain = [torch.Generator().manual_seed(int(s)) for s in seeds]
    infill_noise = [torch.Generator().manual_seed(int(s) + 1_000_003) for s in seeds]
    alphas_cumprod = scheduler.alphas_cumprod
    omega_bar = 1 - omega_input
    infill_from = settings.infill_stop * scheduler.config.num_train_timesteps

    eps = _per_sample_noise(x_bad.shape, chain)
    if settings.start == "noise":
        x_t = eps
    else:
        x_t = scheduler.add_noise(repairer.prefill(x_bad, omega_input), eps, timesteps[:1])

    with progress_bar(label, total=len(timesteps), enabled=progress) as advance:
        for i, t in enumerate(timesteps):
            t_batch = t.expand(x_bad.shape[0])
            with torch.no_grad():
                output = repairer(x_t, t_batch)
            step = scheduler.step(output, t, x_t, generator=chain)
            x_hat = step.prev_sample  # (4), denoising part
            if loss is not None:
                at = x_t if settings.guide_on == "xt" else step.pred_original_sample
                eta_t = eta * (math.sqrt(1 - alphas_cumprod[t].item()) if settings.eta_schedule == "sigma" else 1.0)
                x_hat = x_hat - eta_t * _gradient(loss, at, settings.grad_clip)  # (4), guidance term
            if infill and t >= infill_from:
                if i + 1 < len(timesteps):  # (5) at the next step's noise level
                    x_bad_t = scheduler.add_noise(x_bad, _per_sample_noise(x_bad.shape, infill_noise), timesteps[i + 1 : i + 2])
                else:
                    x_bad_t = x_bad  # a_0 = 1: the last step keeps x_bad exactly
                x_t = omega_bar * x_bad_t + omega_input * x_hat  # (6)
            else:
                x_t = x_hat
            advance()
    return x_t.detach()


def _gradient(loss: Loss, x: Tensor, clip: float) -> Tensor:
    """``∇L`` per sample; with ``clip > 0``, scaled down where its RMS per element exceeds ``clip``.

    Raw gradients of a detector's score can be large enough for a fixed step to diverge;
    the cap bounds each guidance step at ``eta_t · clip`` per element (RMS) whatever the
    detector's score scale, and leaves small gradients untouched.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(x).sum(), x)
    if clip > 0:
        rms = grad.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (grad.dim() - 1))
        grad = grad * torch.clamp(clip / (rms + 1e-12), max=1.0)
    return grad
