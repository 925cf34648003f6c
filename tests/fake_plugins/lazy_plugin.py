"""A plugin whose registered import paths are wrong: one names no module, one the wrong class."""

import arpro


@arpro.hookimpl
def arpro_register_detectors(register):
    register("no_such_module_for_arpro:Ghost", name="ghost", domain="tabular", description="Never importable.")
    register("arpro_tabular.detectors:GaussianDetector", name="impostor", domain="tabular")
