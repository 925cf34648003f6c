"""Where and how the work runs: devices and precision (Lightning Fabric), threads, progress bars."""
