"""``arpro.repair(x_bad, detector, repairer)``: omega, the property context, the three arms, the verdicts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from arpro.algorithm.best_of import DRAW_SEED_STRIDE, best_of
from arpro.algorithm.engine import check_guidance, guided_masked_diffusion, property_call, property_loss
from arpro.algorithm.properties import DEFAULT_PROPERTIES, PropertySpec, expand_properties, make_property, property_record
from arpro.algorithm.settings import ARMS, MASK_RULES, RepairSettings
from arpro.errors import ArproError
from arpro.plugin_api import registry
from arpro.plugin_api.constraints import apply_constraints
from arpro.plugin_api.models import Detector, Repairer
from arpro.plugin_api.protocols import Dataset, Decomposition, Property, PropertyContext, TrainingStats
from arpro.plugin_api.result import ArmResult, RepairResult

P2_TOLERANCE_PER_ELEMENT = 0.01  # default delta2 = 0.01 · |omega_bar| (input elements outside omega)
P4_TOLERANCE_OF_TRAIN_STD = 0.1  # default delta4 = 0.1 · std of the detector's training scores


def compute_omega(detector: Detector, bad: Decomposition, mask: str | Tensor, quantile: float = 0.9) -> Tensor:
    """The anomalous-feature mask omega ``[B, *F]`` (float 0/1) of ``x_bad``.

    - ``"train"`` (paper): ``alpha_i(x_bad) >= tau_i``, tau the training quantile per feature;
    - ``"top"`` (reference code): alpha at or above the input's own ``quantile`` of alpha;
    - ``"top-train"``: both, so that an input's top elements that score as normal ones do stay in omega_bar;
    - a tensor: a mask given on the input ``[B, *X]`` or on the features ``[B, *F]``.
    """
    alpha = bad.alpha.detach()
    if isinstance(mask, Tensor):
        omega = detector.feature_mask(mask.to(alpha.dtype))
        if omega.shape != alpha.shape:
            raise ArproError(f"mask of shape {tuple(mask.shape[1:])} does not fit features {tuple(alpha.shape[1:])}")
        return (omega > 0.5).to(alpha.dtype)
    if mask not in MASK_RULES:
        raise ArproError(f"mask must be {', '.join(map(repr, MASK_RULES))} or a mask tensor, not {mask!r}")
    if mask != "top" and not detector.is_calibrated:
        raise ArproError(f"detector {detector.name!r} has no training thresholds; fit it first or use --mask top")
    keep = alpha >= detector.tau.to(alpha.device) if mask != "top" else torch.ones_like(alpha, dtype=torch.bool)
    if mask != "train":  # and at or above the input's own quantile
        cut = torch.quantile(alpha.flatten(1).float(), quantile, dim=1).to(alpha.dtype)
        keep &= alpha >= cut.view(-1, *[1] * (alpha.dim() - 1))
    return keep.to(alpha.dtype)


def check_input(x_bad: Tensor, repairer: Repairer) -> None:
    """Refuse inputs a repair cannot be meaningful for, with a message that says why."""
    if not torch.is_floating_point(x_bad):
        raise ArproError(f"input must be floating point, got {x_bad.dtype}")
    if not torch.isfinite(x_bad).all():
        bad = (~torch.isfinite(x_bad)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ArproError(f"input contains NaN or Inf (samples {bad}); clean or drop them first")
    expected = tuple(repairer.x_mean.shape)
    if expected and tuple(x_bad.shape[1:]) != expected:
        raise ArproError(f"input has shape {tuple(x_bad.shape[1:])} per sample, but the models expect {expected}")


def check_steps(steps: int, train_timesteps: int) -> None:
    """The reverse process cannot take more steps than the repairer was trained with."""
    if steps > train_timesteps:
        raise ArproError(f"--steps {steps} is more than the repairer's {train_timesteps} training timesteps")


def check_weights(weights: dict[str, float], guiding: Sequence[Property]) -> None:
    """A lambda is given only to a property that guides: constraints act by projection."""
    names = [p.name for p in guiding if p.guides]
    if unknown := [name for name in weights if name not in names]:
        raise ArproError(f"weight given for {unknown[0]!r}, which is not a guiding property ({', '.join(names)}); "
                         "constraints act by projection and take no weight")


def reported_properties(guiding: Sequence[Property]) -> tuple[Property, ...]:
    """The (made) guiding properties, then those of P1–P4 not among them: what every result reports."""
    names = {p.name for p in guiding}
    return (*guiding, *[registry.get("property", n)() for n in DEFAULT_PROPERTIES if n not in names])


def resolve_settings(settings: RepairSettings | None, detector: Detector, repairer: Repairer,
                     guiding: Sequence[Property]) -> RepairSettings:
    """The settings a repair runs with: the detector's where none are given; ``--steps`` and weights checked."""
    settings = RepairSettings.for_detector(detector) if settings is None else settings.resolved_for(detector)
    check_steps(settings.steps, repairer.train_timesteps)
    check_weights(settings.weights, guiding)
    return settings


def data_context(detector: Detector, dataset: Dataset | None, stats: TrainingStats | None) -> dict:
    """The PropertyContext fields that describe the data: names, training statistics, value range."""
    if dataset is not None and stats is None:
        stats = TrainingStats(lambda: dataset.train().x)
    return {"detector": detector, "feature_names": dataset.feature_names() if dataset else None, "stats": stats,
            "value_range": dataset.value_range if dataset else None}


def repair(x_bad: Tensor, detector: Detector, repairer: Repairer, *,
           properties: Sequence[PropertySpec] = DEFAULT_PROPERTIES, settings: RepairSettings | None = None,
           mask: str | Tensor | None = None, seed: int | Sequence[int] = 0, arms: Sequence[str] = ARMS,
           ids: list[str] | None = None, progress: bool = True, dataset: Dataset | None = None,
           stats: TrainingStats | None = None) -> RepairResult:
    """Repair ``x_bad`` ``[B, *X]``: the guided repair and its unguided baselines, judged by P1–P4.

    ``properties`` names the properties that guide the repair (names, ``(name, options)`` pairs or
    instances; ``"+NAME"`` adds to P1–P4); the result always reports P1–P4 as well. ``mask``
    (a rule of ``MASK_RULES``, or a tensor on the input or the features) replaces ``settings.mask``. ``dataset``
    (and its training ``stats``, computed when not given) tells properties the feature names and ranges.
    Sample ``i`` draws its noise from ``seed + i`` in every arm (or from ``seed[i]``, given one per sample).
    """
    guiding = tuple(make_property(spec) for spec in expand_properties(properties))
    return run_arms(x_bad, detector, repairer, guiding=guiding, reported=reported_properties(guiding),
                    settings=resolve_settings(settings, detector, repairer, guiding), mask=mask, seed=seed, arms=arms,
                    ids=ids, progress=progress, dataset=dataset, stats=stats)


def run_arms(x_bad: Tensor, detector: Detector, repairer: Repairer, *, guiding: Sequence[Property],
             reported: Sequence[Property], settings: RepairSettings, mask: str | Tensor | None,
             seed: int | Sequence[int], arms: Sequence[str], ids: list[str] | None, progress: bool,
             dataset: Dataset | None, stats: TrainingStats | None) -> RepairResult:
    """:func:`repair` after its resolution step (which :class:`arpro.Run` took once for all its repairs):
    the arms on ``x_bad`` as one batch, judged by the ``reported`` properties."""
    check_input(x_bad, repairer)
    unknown_arms = set(arms) - set(ARMS)
    if unknown_arms or not arms:
        raise ArproError(f"unknown arm(s) {sorted(unknown_arms)}; choose from {', '.join(ARMS)}" if unknown_arms
                         else f"no arm to run; choose from {', '.join(ARMS)}")
    detector.eval().requires_grad_(False)
    repairer.eval().requires_grad_(False)

    with torch.no_grad():
        bad = detector.decompose(x_bad)
    if isinstance(mask, Tensor) and tuple(mask.shape) not in (tuple(x_bad.shape), tuple(bad.alpha.shape)):
        raise ArproError(f"mask of shape {tuple(mask.shape)} fits neither the inputs {tuple(x_bad.shape)} "
                         f"nor their features {tuple(bad.alpha.shape)}")
    omega = compute_omega(detector, bad, settings.mask if mask is None else mask, settings.mask_quantile)
    data = data_context(detector, dataset, stats)
    omega_input = detector.input_mask(omega, x_bad.shape).to(x_bad.dtype)
    if any(not p.guides for p in guiding):  # hard constraints: frozen elements leave omega, out-of-range ones join
        unconstrained = PropertyContext(x_bad, bad, omega, omega_input, *_tolerances(detector, omega_input, 0, 0), **data)
        omega, frozen, bounds = apply_constraints(guiding, unconstrained)
        omega_input = detector.input_mask(omega, x_bad.shape).to(x_bad.dtype) * (1 if frozen is None else 1 - frozen)
    else:
        frozen = bounds = None
    tolerances = _tolerances(detector, omega_input, settings.delta2, settings.delta4)
    ctx = PropertyContext(x_bad, bad, omega, omega_input, *tolerances, **data)
    if "guided" in arms:
        check_guidance(detector, guiding, settings.weights, ctx)
    messages = _mask_messages(omega, ids)

    k = settings.samples  # best-of-K: K draws per input in one batch, draw-major; draw 0 is the K = 1 repair
    first = [seed + i for i in range(x_bad.shape[0])] if isinstance(seed, int) else [int(s) for s in seed]
    if len(first) != x_bad.shape[0]:
        raise ArproError(f"{len(first)} seeds given for {x_bad.shape[0]} inputs")
    seeds = [s + draw * DRAW_SEED_STRIDE for draw in range(k) for s in first]

    def repeat(t: Tensor | None) -> Tensor | None:  # [B, ...] -> [K·B, ...], draw-major
        return t if t is None or k == 1 else t.repeat(k, *[1] * (t.dim() - 1))

    if bounds is not None and bounds[0].dim() == x_bad.dim():  # per-input bounds (widened where frozen)
        bounds = (repeat(bounds[0]), repeat(bounds[1]))

    draws_ctx = ctx if k == 1 else replace(
        ctx, x_bad=repeat(x_bad), bad=Decomposition(repeat(bad.alpha), repeat(bad.beta)), omega=repeat(omega),
        omega_input=repeat(omega_input), delta2=repeat(ctx.delta2), delta4=repeat(ctx.delta4))
    run = [a for a in ARMS if a in arms]  # one batch, arm-major: each arm's rows as if run alone

    def stack(t: Tensor | None) -> Tensor | None:
        return t if t is None or len(run) == 1 else torch.cat([t] * len(run))

    n = draws_ctx.x_bad.shape[0]
    infill = torch.tensor([a != "baseline" for a in run]).repeat_interleave(n)
    guide = torch.tensor([a == "guided" for a in run]).repeat_interleave(n)
    loss = property_loss(detector, guiding, settings.weights, draws_ctx) if "guided" in run else None
    if bounds is not None and bounds[0].dim() == x_bad.dim():
        bounds = (stack(bounds[0]), stack(bounds[1]))
    started = time.perf_counter()
    x_fix = guided_masked_diffusion(stack(draws_ctx.x_bad), stack(draws_ctx.omega_input), repairer, settings, seeds * len(run),
                                    loss=loss, eta=settings.guidance_scale, infill=infill, guide=guide, arm_rows=n,
                                    progress=progress, label=f"{'+'.join(run)} repair", frozen=stack(repeat(frozen)),
                                    bounds=bounds)
    results: dict[str, ArmResult] = {}
    for j, arm in enumerate(run):
        results[arm] = evaluate_repair(detector, reported, draws_ctx, x_fix[j * n:(j + 1) * n].clone(), 0.0)
        if k > 1:
            results[arm] = best_of(results[arm], k, omega_input, settings.confidence)
    seconds = time.perf_counter() - started
    for arm in results.values():  # the arms ran as one batch: each reports that batch's wall time
        arm.seconds = seconds

    used = {**settings.to_dict(), "properties": [property_record(p) for p in guiding], "seed": seed,
            "detector": detector.name, "repairer": repairer.name,
            "detector_checkpoint": str(detector.loaded_from) if getattr(detector, "loaded_from", None) else None}
    return RepairResult(
        x_bad=x_bad, omega=omega, omega_input=omega_input, score_bad=bad.score, arms=results,
        metric_names={p.name: p.metric_name for p in reported}, settings=used,
        ids=ids or [str(i) for i in range(x_bad.shape[0])],
        messages=messages, alpha_bad=bad.alpha,
    )


def evaluate_repair(
    detector: Detector, properties: Sequence[Property], ctx: PropertyContext, x_fix: Tensor, seconds: float
) -> ArmResult:
    """Every property's metric and verdict for ``x_fix``. A repair whose values, or whose score or the
    input's, are not finite (a score that overflowed) failed: no property holds for it."""
    failed = ~x_fix.flatten(1).isfinite().all(1)
    with torch.no_grad():
        fix = detector.decompose(x_fix)
        failed |= ~fix.score.isfinite() | ~ctx.bad.score.isfinite()
        metrics, holds = {}, {}
        for p in properties:
            value = property_call(p, "metric", ctx, x_fix, fix)
            metrics[p.metric_name] = value
            holds[p.name] = property_call(p, "holds", ctx, value) & ~failed
    return ArmResult(x_fix=x_fix, score=fix.score, metrics=metrics, holds=holds, seconds=seconds, failed=failed)


def _tolerances(detector: Detector, omega_input: Tensor, delta2: float | None, delta4: float | None):
    batch = omega_input.shape[0]
    if delta2 is None:
        d2 = P2_TOLERANCE_PER_ELEMENT * (1 - omega_input).flatten(1).sum(1)
    else:
        d2 = torch.full((batch,), float(delta2))
    if delta4 is None:
        spread = detector.train_scores.std().item() if detector.train_scores.numel() > 1 else 0.0
        d4 = torch.full((batch,), P4_TOLERANCE_OF_TRAIN_STD * spread)
    else:
        d4 = torch.full((batch,), float(delta4))
    return d2, d4


MASK_MESSAGES = {
    0.0: "omega is empty (no feature is flagged anomalous); with in-filling the repair returns the input "
         "unchanged, and P3 cannot hold (M_omega = 0)",
    1.0: "omega covers every feature; the whole input is regenerated, P2 holds trivially (M_d = 0) and "
         "M_omega_bar compares beta alone",
}


def _mask_messages(omega: Tensor, ids: list[str] | None) -> list[str]:
    fractions = omega.flatten(1).mean(1).tolist()
    return [f"input {ids[i] if ids else i}: {MASK_MESSAGES[f]}" for i, f in enumerate(fractions) if f in MASK_MESSAGES]
