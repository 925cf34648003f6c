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
    "arpro.plugin_api.result": ("ArmResult", "RepairResult"),
    "arpro.errors": ("ArproError",),
    "arpro.plugin_api.hookspecs": ("hookimpl",),
    "arpro.plugin_api.registry": ("get", "get_default"),
    "arpro.plugin_api.protocols": ("Decomposition", "Property", "PropertyContext", "TrainingStats", "Dataset", "Split", "InputBatch"),
    "arpro.plugin_api.constraints": ("Constraint",),
    "arpro.plugin_api.models": ("Model", "Detector", "Repairer"),
    "arpro.algorithm.settings": ("ARMS", "RepairSettings"),
    "arpro.io.run_spec": ("RunSpec", "Run", "resolve", "load_dataset"),
    "arpro.io.checkpoint": ("obtain_model",),
    "arpro.algorithm.service": ("repair", "compute_omega"),
    "arpro.workflows.train": ("fit_loop", "fit_options", "train_denoiser"),
    "arpro.runtime.devices": ("launch_fabric", "place"),
    "arpro.plugin_api.schedulers": ("make_scheduler", "import_diffusers"),
    "arpro.metrics": ("auroc", "f1", "scores", "conformal_threshold", "CONFORMAL_MINIMUM", "tnr_threshold", "region_detail"),
    "arpro.io.limits": ("check_csv_size",),
    "arpro.runtime.threads": ("choose_threads",),
    "arpro.runtime.progress": ("progress_bar", "progress_phase"),
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
