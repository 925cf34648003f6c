"""A third-party arpro plugin: a detector and a property.

Install it with ``pip install ./examples/arpro-example-plugin``; ``arpro list-plugins``
then shows ``mean-abs`` and ``sparsity`` under distribution ``arpro-example-plugin``.
This module registers the classes by import path and imports no torch, so ``arpro``
starts as fast with the plugin installed as without it; ``models.py`` holds the classes.
"""

import arpro


@arpro.hookimpl
def arpro_register_detectors(register):
    register("arpro_example.models:MeanAbsoluteDeviation", name="mean-abs", domain="tabular",
             description="Absolute deviation of each column from its normal mean; beta = 0.")


@arpro.hookimpl
def arpro_register_properties(register):
    register("arpro_example.models:Sparsity", name="sparsity",
             description="Sparse repair: the L1 size of the change inside omega stays under delta2.")
