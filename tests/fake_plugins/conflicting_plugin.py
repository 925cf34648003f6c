"""A plugin that claims a detector name the tabular plugin already has."""

import arpro
from arpro_tabular.detectors import GaussianDetector


class AnotherGaussian(GaussianDetector):
    """Same name, different distribution."""

    name = "gaussian"


@arpro.hookimpl
def arpro_register_detectors(register):
    register(AnotherGaussian)
