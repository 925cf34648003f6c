"""arpro plugin for tabular data: one feature score per column.

Each class is registered by its import path, so listing plugins imports no torch.
"""

import arpro


@arpro.hookimpl
def arpro_register_detectors(register):
    register("arpro_tabular.detectors:GaussianDetector", name="gaussian", domain="tabular", default=True,
             description="Per-column Gaussian negative log-likelihood (paper Example 2.3).")
    register("arpro_tabular.detectors:AutoencoderDetector", name="autoencoder", domain="tabular",
             description="Per-column squared reconstruction error of an MLP autoencoder (paper Example 2.2).")
    register("arpro_tabular.pca:PCARowsDetector", name="pca-rows", domain="tabular", baseline=True,
             description="PCA of the normal rows; score = Q (squared residual) + Hotelling T² of the row.")


@arpro.hookimpl
def arpro_register_repairers(register):
    register("arpro_tabular.repairer:MlpDDPM", name="mlp-ddpm", domain="tabular", default=True,
             description="DDPM with a residual-MLP noise predictor for table rows.")


@arpro.hookimpl
def arpro_register_datasets(register):
    register("arpro_tabular.datasets:BreastCancer", name="breast-cancer", domain="tabular", default=True,
             description="scikit-learn's breast-cancer table: benign rows normal, malignant rows anomalous (embedded).")
    register("arpro_tabular.datasets:CsvTable", name="csv", domain="tabular",
             description="Any CSV: numeric feature columns and an optional 0/1 label column (--data-root FILE).")
