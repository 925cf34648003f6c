"""arpro plugin for multivariate time-series windows ``[B, T, D]``: one feature score per (time step, feature).

Each class is registered by its import path, so listing plugins imports neither torch nor transformers.
"""

import arpro


@arpro.hookimpl
def arpro_register_detectors(register):
    register("arpro_timeseries.detectors:GPT2Detector", name="gpt2", domain="timeseries", default=True,
             description="GPT-2 backbone (transformers GPT2Model) reconstructing each window; score = squared error.")
    register("arpro_timeseries.detectors:Llama2Detector", name="llama2", domain="timeseries",
             description="Llama-2 backbone (transformers LlamaModel) reconstructing each window; score = squared error.")
    register("arpro_timeseries.pca:PCADetector", name="pca", domain="timeseries", baseline=True,
             description="PCA of the normal rows; score = Q (squared residual) + Hotelling T², summed over the window.")


@arpro.hookimpl
def arpro_register_repairers(register):
    register("arpro_timeseries.repairer:DiffusionTS", name="diffusion-ts", domain="timeseries", default=True,
             description="Diffusion-TS (Yuan & Qiao, ICLR 2024): interpretable trend + seasonal + residual "
                         "x0-predicting denoiser.")
    register("arpro_timeseries.nearest:NearestWindow", name="nearest-window", domain="timeseries", baseline=True,
             description="In-fills from the nearest normal training windows; no training (fit keeps them in seconds).")


@arpro.hookimpl
def arpro_register_datasets(register):
    register("arpro_timeseries.process:Process", name="process", domain="timeseries", default=True,
             description="A simulated three-stage water process with injected attacks and faults (embedded; no data needed).")
    register("arpro_timeseries.layouts:SWaT", name="swat", domain="timeseries",
             description="SWaT (iTrust) in its published CSV layout: SWaT_Dataset_Normal*.csv / SWaT_Dataset_Attack*.csv.")
    register("arpro_timeseries.layouts:WADI", name="wadi", domain="timeseries",
             description="WADI (iTrust) in its published CSV layout: WADI_14days*.csv / WADI_attackdata*.csv.")
    register("arpro_timeseries.layouts:HAI", name="hai", domain="timeseries",
             description="HAI (ETRI/NSR) in its published CSV layout: train*.csv / test*.csv (20.07, 21.03, 22.04).")
    register("arpro_timeseries.layouts:TimeSeriesCsv", name="ts-csv", domain="timeseries",
             description="Any time-series CSV (--data-root FILE.csv; a folder with train.csv, train/ or anomaly-free/ "
                         "beside test.csv or test/; or a folder of experiment CSVs, or of subfolders of them).")
