"""Quality benchmarks: detection AUROC and repair metrics on the embedded and the shared data."""
