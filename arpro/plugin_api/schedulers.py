"""diffusers' schedulers, set up the way every arpro repairer trains: DDPM, DDIM, and the
multistep solver DPM-Solver++, which reaches the same sample in fewer steps.

arpro never re-implements a noise schedule. Each scheduler is imported from its own module,
not diffusers' package root, which would import much of diffusers. DPM-Solver++ keeps its last
x̂0 predictions (``model_outputs``) and steps from the ``x_t`` it is given, so the repair loop's
in-fill and guidance may edit ``x_t`` between steps, as diffusers' in-painting pipelines do. UniPC
is left out: its corrector rebuilds ``x_t`` from the previous step's unedited sample, which
would undo them (docs/decisions/multistep-schedulers.md).
"""

from __future__ import annotations

import sys

from arpro.errors import ArproError

SCHEDULERS = ("ddpm", "ddim", "dpm++")


def make_scheduler(kind: str, *, num_train_timesteps: int, beta_schedule: str, prediction_type: str, **betas: float):
    """A diffusers scheduler of ``kind`` (one of :data:`SCHEDULERS`) with the given training schedule
    (``betas``: ``beta_start``, ``beta_end``, default diffusers')."""
    options = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type=prediction_type,
                   **betas)
    import_diffusers()
    if kind == "ddpm":
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        return DDPMScheduler(**options, clip_sample=False)
    if kind == "ddim":
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler

        return DDIMScheduler(**options, clip_sample=False, set_alpha_to_one=True)
    if kind == "dpm++":
        from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(**options, algorithm_type="dpmsolver++", solver_order=2)
    raise ArproError(f"unknown scheduler {kind!r}; choose one of: {', '.join(SCHEDULERS)}")


def import_diffusers() -> None:
    """Import diffusers' root before a first ``from diffusers... import``, without ``torch._dynamo`` (2 s of
    start-up): ``diffusers.utils`` imports it only for a ``torch.compile`` hint, with a no-op fallback."""
    if "diffusers" in sys.modules or "torch._dynamo" in sys.modules:
        return
    sys.modules["torch._dynamo"] = None  # type: ignore[assignment]  # makes that import fail; later ones work
    try:
        import diffusers  # noqa: F401
    finally:
        del sys.modules["torch._dynamo"]
