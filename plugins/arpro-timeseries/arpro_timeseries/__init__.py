"""arpro plugin for multivariate time-series windows ``[B, T, D]``: one feature score per (time step, feature)."""

import arpro

from arpro_timeseries.detectors import GPT2Detector, Llama2Detector
from arpro_timeseries.layouts import HAI, WADI, SWaT, TimeSeriesCsv
from arpro_timeseries.process import Process
from arpro_timeseries.repairer import DiffusionTS


@arpro.hookimpl
def arpro_register_detectors(register):
    register(GPT2Detector)
    register(Llama2Detector)


@arpro.hookimpl
def arpro_register_repairers(register):
    register(DiffusionTS)


@arpro.hookimpl
def arpro_register_datasets(register):
    register(Process)
    register(SWaT)
    register(WADI)
    register(HAI)
    register(TimeSeriesCsv)
