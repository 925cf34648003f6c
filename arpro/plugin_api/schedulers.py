"""diffusers' DDPM and DDIM schedulers, set up the way every arpro repairer trains.

arpro never re-implements a noise schedule. Each scheduler is imported from its own module,
not diffusers' package root, which would import much of diffusers.
"""

from __future__ import annotations

import sys

from arpro.errors import ArproError

SCHEDULERS = ("ddpm", "ddim")


def make_scheduler(kind: str, *, num_train_timesteps: int, beta_schedule: str, prediction_type: str, **betas: float):
    """A diffusers scheduler of ``kind`` ("ddpm" or "ddim") with the given training schedule
    (``betas``: ``beta_start``, ``beta_end``, default diffusers')."""
    options = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type=prediction_type,
                   clip_sample=False, **betas)
    import_diffusers()
    if kind == "ddpm":
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        return DDPMScheduler(**options)
    if kind == "ddim":
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler

        return DDIMScheduler(**options, set_alpha_to_one=True)
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
