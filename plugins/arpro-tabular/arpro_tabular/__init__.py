"""arpro plugin for tabular data: one feature score per column."""

import arpro

from arpro_tabular.datasets import BreastCancer, CsvTable
from arpro_tabular.detectors import AutoencoderDetector, GaussianDetector
from arpro_tabular.repairer import MlpDDPM


@arpro.hookimpl
def arpro_register_detectors(register):
    register(GaussianDetector)
    register(AutoencoderDetector)


@arpro.hookimpl
def arpro_register_repairers(register):
    register(MlpDDPM)


@arpro.hookimpl
def arpro_register_datasets(register):
    register(BreastCancer)
    register(CsvTable)
