"""arpro: explain anomalies by repairing them (AR-Pro, NeurIPS 2024).

    >>> import arpro
    >>> run = arpro.resolve(arpro.RunSpec(detector="gaussian"))       # doctest: +SKIP
    >>> result = run.repair(run.dataset.test().anomalous().x[:8])      # doctest: +SKIP
    >>> result.arms["guided"].metrics["Ms"]                            # doctest: +SKIP

The names below are the public API, for users and plugins alike. They are imported on
first use, so ``import arpro`` (and ``arpro --version``) stays cheap.
"""

from __future__ import annotations

import importlib

from arpro._version import __version__

_MODULES = {
    "arpro.result": ("ArmResult", "RepairResult"),
    "arpro.errors": ("ArproError",),
    "arpro.hookspecs": ("hookimpl",),
    "arpro.plugins": ("get", "get_default"),
    "arpro.protocols": ("Decomposition", "Property", "PropertyContext", "TrainingStats", "Dataset", "Split", "InputBatch"),
    "arpro.constraints": ("Constraint",),
    "arpro.models": ("Model", "Detector", "Repairer"),
    "arpro.settings": ("ARMS", "RepairSettings"),
    "arpro.spec": ("RunSpec", "Run", "resolve", "load_dataset"),
    "arpro.checkpoint": ("obtain_model",),
    "arpro.api": ("repair", "compute_omega"),
    "arpro.training": ("fit_loop", "fit_options", "train_denoiser"),
    "arpro.devices": ("launch_fabric", "place"),
    "arpro.schedulers": ("make_scheduler",),
    "arpro.summary": ("conformal_threshold",),
    "arpro.evaluate": ("auroc", "f1", "scores", "CONFORMAL_MINIMUM"),
    "arpro.limits": ("check_csv_size",),
    "arpro.progress": ("progress_bar", "progress_phase"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'arpro' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
