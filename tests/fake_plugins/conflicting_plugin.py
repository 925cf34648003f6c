"""A plugin that claims a detector name the tabular plugin already has."""

import arpro


@arpro.hookimpl
def arpro_register_detectors(register):
    register("arpro_tabular.detectors:GaussianDetector", name="gaussian", domain="tabular",
             description="Same name, different distribution.")
