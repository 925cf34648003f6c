"""arpro: explain anomalies by repairing them (AR-Pro, NeurIPS 2024).

    >>> import arpro
    >>> result = arpro.repair(x_bad, detector, repairer)   # doctest: +SKIP
    >>> result.arms["guided"].metrics["Ms"]                 # doctest: +SKIP
"""

__version__ = "0.1.0"

from arpro.api import compute_omega, obtain_model, repair  # noqa: E402
from arpro.engine import RepairSettings  # noqa: E402
from arpro.errors import ArproError  # noqa: E402
from arpro.hookspecs import hookimpl  # noqa: E402
from arpro.protocols import (  # noqa: E402
    Dataset,
    Decomposition,
    Detector,
    InputBatch,
    Property,
    PropertyContext,
    Repairer,
    Split,
)
from arpro.result import ARMS, ArmResult, RepairResult  # noqa: E402

__all__ = [
    "ARMS",
    "ArmResult",
    "ArproError",
    "Dataset",
    "Decomposition",
    "Detector",
    "InputBatch",
    "Property",
    "PropertyContext",
    "RepairResult",
    "RepairSettings",
    "Repairer",
    "Split",
    "__version__",
    "compute_omega",
    "hookimpl",
    "obtain_model",
    "repair",
]
