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
clean steps then denoise the whole input, so that omega's repair agrees with its surroundings.
An in-filling arm's repair is then put back into ``x_bad`` through omega, as a file is written:
omega_bar is ``x_bad`` exactly whatever ``infill_stop`` is, and P1–P4 judge that repair.
``guide_every = N > 1`` (not in the paper) guides only every N-th step, counted back from the
last, with ``N·eta_t``: guidance then costs 1/N of a detector forward and backward per step;
with ``guide_at = "end"`` the same number of guided steps are the last ones in a row.
Optionally each sample's gradient is capped in RMS (``grad_clip``) so a step can't diverge.
Hard constraints (arpro/plugin_api/constraints.py) enter as ``frozen`` input elements, in-filled from
``x_bad`` at every step of an in-filling arm (after ``infill_stop`` too), and as ``bounds``:
each step's x̂0 is clamped to them (the network output is rebuilt to predict the clamped x̂0,
so the scheduler's x_{t-1} follows from it) and so is the final repair.
The baselines are this same loop with ``lambda = 0`` (no guidance) and/or without (6). The arms run
as one batch: each row has its own flags for (5)–(6) and guidance (loss and gradient on guided rows
only). BLAS picks kernels by batch size, so every denoiser call has one size, an arm's rows or
``repairer.min_batch`` if more (padded: small arms share a call), and each arm is bit-identical alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from arpro.algorithm.settings import RepairSettings
from arpro.errors import ArproError
from arpro.plugin_api import registry
from arpro.plugin_api.models import Detector, Repairer
from arpro.plugin_api.protocols import Decomposition, Property, PropertyContext
from arpro.runtime.progress import progress_bar, progress_phase

Loss = Callable[[Tensor], Tensor]  # x -> per-sample L(x), [B]


def property_loss(
    detector: Detector, properties: Sequence[Property], weights: dict[str, float], ctx: PropertyContext
) -> Loss:
    """``L(x) = Σ_k lambda_k L_k(x)`` (eq. 7), decomposing ``x`` once for all properties; constraints
    (``guides = False``) act through ``frozen``/``bounds`` instead, so they are left out."""
    properties = [p for p in properties if p.guides]
    need_detector = any(p.needs_detector for p in properties)

    def loss(x: Tensor) -> Tensor:
        fix = detector.decompose(x) if need_detector else None
        return sum(weights.get(p.name, 1.0) * property_call(p, "loss", ctx, x, fix) for p in properties)

    return loss


def property_call(prop: Property, method: str, *args: object) -> Any:
    """``prop.method(*args)``; an exception of the plugin's code becomes one error naming the property."""
    with registry.blame("property", prop.name, f"in {method}()"):
        return getattr(prop, method)(*args)


def check_guidance(detector: Detector, properties: Sequence[Property], weights: dict[str, float],
                   ctx: PropertyContext) -> None:
    """Refuse a guiding property with a positive weight whose loss has no gradient to ``x``:
    it would silently guide nothing. Probed once, at ``x_bad``'s first input (not a guided step's cost)."""
    one = replace(ctx, x_bad=ctx.x_bad[:1], bad=Decomposition(ctx.bad.alpha[:1], ctx.bad.beta[:1]), omega=ctx.omega[:1],
                  omega_input=ctx.omega_input[:1], delta2=ctx.delta2[:1], delta4=ctx.delta4[:1])
    x = one.x_bad.detach().requires_grad_(True)
    with torch.enable_grad():
        fix = detector.decompose(x) if any(p.needs_detector for p in properties) else None
        for p in properties:
            if p.guides and weights.get(p.name, 1.0) > 0 and not property_call(p, "loss", one, x, fix).requires_grad:
                raise ArproError(f"property {p.name!r} guides the repair, but its loss has no gradient with respect "
                                 f"to x; make it differentiable, give it --weight {p.name}=0, or set guides = False")


NOISE_BLOCK_BYTES = 2**20  # per sample: in-filling noise is drawn a block of steps at a time, up to this size


def _noise_per_step(shape: torch.Size, generators: list[torch.Generator], steps: int) -> Iterator[Tensor]:
    """Each step's ``[len(generators), *shape[1:]]`` noise, drawn per generator a block of steps at a time
    (a call per step was an eighth of a 16-draw tabular repair); the block depends on the shape alone."""
    block = max(1, min(steps, NOISE_BLOCK_BYTES // (4 * math.prod(shape[1:]))))
    while True:
        yield from torch.stack([torch.randn((block, *shape[1:]), generator=g) for g in generators], 1)


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
    infill: bool | Tensor,
    guide: Tensor | None = None,
    arm_rows: int | None = None,
    progress: bool = True,
    label: str = "repair",
    frozen: Tensor | None = None,
    bounds: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Run eqs. 4–6 from ``x_bad`` and return ``x_fix``; ``loss=None`` is the unguided loop.

    ``infill`` and ``guide`` may be per-row flags (``[B]`` bool) so that several arms run as one
    batch: (5)–(6) apply to the ``infill`` rows, and ``loss`` (over the ``guide`` rows only, all rows
    when ``guide`` is None) to the guided ones; ``arm_rows``, each arm's rows (default all), sets the
    denoiser's call size. Randomness is drawn per sample from generators seeded by ``seeds``, one for
    the denoising chain and one for eq. 5's in-filling noise, so every arm starts from the same noise
    and a sample's noise does not depend on the batch it is in.
    ``frozen`` (``[B, *X]``, 1 = keep ``x_bad``) and ``bounds`` (low, high) are the hard constraints.
    """
    scheduler = repairer.make_scheduler(settings.scheduler)
    timesteps = denoising_timesteps(scheduler, settings)
    everyone = torch.arange(x_bad.shape[0])
    fill = everyone[infill] if isinstance(infill, Tensor) else everyone if infill else everyone[:0]  # rows of (5)–(6)
    guided = None if guide is None else everyone[guide]
    chain = [torch.Generator().manual_seed(int(s)) for s in seeds]
    fill_seeds = [int(seeds[j]) for j in fill.tolist()]
    distinct = {s: n for n, s in enumerate(dict.fromkeys(fill_seeds))}  # stacked arms share seeds: one stream each
    infill_gens = [torch.Generator().manual_seed(s + 1_000_003) for s in distinct]
    infill_noise = _noise_per_step(x_bad.shape, infill_gens, len(timesteps))  # drawn from at the first next()
    noise_rows = torch.tensor([distinct[s] for s in fill_seeds], dtype=torch.long)
    alphas_cumprod = scheduler.alphas_cumprod
    x_bad_f, omega_f = x_bad[fill], omega_input[fill]
    omega_bar_f, frozen_f = 1 - omega_f, None if frozen is None else frozen[fill].bool()
    infill_from = settings.infill_stop * scheduler.config.num_train_timesteps

    arm_rows = arm_rows or len(x_bad)
    blocks = [slice(i, i + arm_rows) for i in range(0, len(x_bad), arm_rows)]
    eps = next(_noise_per_step(x_bad.shape, chain, 1))
    if settings.start == "noise":
        x_t = eps
    else:  # each block's prefill: the arms' blocks hold the same inputs, so a repairer's remembered prefill fits all
        with progress_phase(f"{label}: the repairer's start", enabled=progress):  # nearest-patches: 36 s at 256 px
            prefilled = torch.cat([repairer.prefill(x_bad[b], omega_input[b]) for b in blocks])
        x_t = scheduler.add_noise(prefilled, eps, timesteps[:1])

    with progress_bar(label, total=len(timesteps), enabled=progress) as advance:
        for i, t in enumerate(timesteps):
            with torch.no_grad():
                output = _denoise(repairer, x_t, t, max(arm_rows, repairer.min_batch))
            if bounds is not None:
                output = _predicting_clamped_x0(output, x_t, alphas_cumprod[t], repairer.prediction_type, bounds)
            step = scheduler.step(output, t, x_t, generator=chain)
            x_hat = step.prev_sample  # (4), denoising part
            if loss is not None and guided_step(len(timesteps) - 1 - i, len(timesteps), settings):
                at = x_t if settings.guide_on == "xt" else _x0(step, scheduler)
                eta_t = eta * settings.guide_every  # a step guided for the unguided ones before it
                eta_t *= math.sqrt(1 - alphas_cumprod[t].item()) if settings.eta_schedule == "sigma" else 1.0
                if guided is None:
                    x_hat = x_hat - eta_t * _gradient(loss, at, settings.grad_clip)  # (4), guidance term
                else:  # the same term on the guided rows alone: no detector cost for the others
                    term = eta_t * _gradient(loss, at[guided], settings.grad_clip)
                    x_hat = x_hat.index_copy(0, guided, x_hat[guided] - term)
            if len(fill) and (t >= infill_from or frozen is not None):
                if i + 1 < len(timesteps):  # (5) at the next step's noise level
                    x_bad_t = scheduler.add_noise(x_bad_f, next(infill_noise)[noise_rows],
                                                  timesteps[i + 1 : i + 2])
                else:
                    x_bad_t = x_bad_f  # a_0 = 1: the last step keeps x_bad exactly
                if t >= infill_from:
                    filled = omega_bar_f * x_bad_t + omega_f * x_hat[fill]  # (6)
                else:  # after infill_stop, frozen elements stay in-filled
                    filled = torch.where(frozen_f, x_bad_t, x_hat[fill])
                x_t = x_hat.index_copy(0, fill, filled)
            else:
                x_t = x_hat
            advance()
    if len(fill):  # omega_bar may have drifted after infill_stop: the repair is omega's part of it, in x_bad
        x_t = x_t.index_copy(0, fill, torch.where(omega_f > 0, x_t[fill], x_bad_f))
    return x_t.detach() if bounds is None else x_t.detach().clamp(*bounds)


def _x0(step, scheduler) -> Tensor:
    """The step's x̂0: DDPM and DDIM return it; DPM-Solver++ keeps it as its last model output."""
    return step.pred_original_sample if hasattr(step, "pred_original_sample") else scheduler.model_outputs[-1]


def guided_step(back: int, steps: int, settings: RepairSettings) -> bool:
    """Whether the step ``back`` steps before the last of ``steps`` is guided: every one, every
    ``guide_every``-th (``guide_at="spread"``), or as many at the end in a row (``"end"``)."""
    if settings.guide_at == "end":
        return back < math.ceil(steps / settings.guide_every)
    return back % settings.guide_every == 0


def _denoise(repairer: Repairer, x_t: Tensor, t: Tensor, rows: int) -> Tensor:
    """The repairer's output in calls of exactly ``rows`` rows, the last one zero-padded."""
    x = torch.cat([x_t, x_t.new_zeros(pad, *x_t.shape[1:])]) if (pad := -len(x_t) % rows) else x_t
    t = t.expand(rows)
    return torch.cat([repairer(x[i:i + rows], t) for i in range(0, len(x), rows)])[:len(x_t)]


def _predicting_clamped_x0(output: Tensor, x_t: Tensor, alpha_cumprod: Tensor, prediction_type: str,
                           bounds: tuple[Tensor, Tensor]) -> Tensor:
    """The network output that predicts x̂0 clamped to ``bounds``: then the scheduler's
    ``pred_original_sample`` is the projected x̂0 and its x_{t-1} is built from it."""
    if prediction_type == "sample":
        return output.clamp(*bounds)
    a = alpha_cumprod.to(x_t.dtype)
    x0 = (x_t - (1 - a).sqrt() * output) / a.sqrt()
    return (x_t - a.sqrt() * x0.clamp(*bounds)) / (1 - a).sqrt()


def _gradient(loss: Loss, x: Tensor, clip: float) -> Tensor:
    """``∇L`` per sample; with ``clip > 0``, scaled down where its RMS per element exceeds ``clip``.

    Raw gradients of a detector's score can be large enough for a fixed step to diverge;
    the cap bounds each guidance step at ``eta_t · clip`` per element (RMS) whatever the
    detector's score scale, and leaves small gradients untouched.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        total = loss(x).sum()
    if not total.requires_grad:  # only weight-0 or constant losses: check_guidance allowed them, they guide nothing
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(total, x)
    if clip > 0:
        rms = grad.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (grad.dim() - 1))
        grad = grad * torch.clamp(clip / (rms + 1e-12), max=1.0)
    return grad
