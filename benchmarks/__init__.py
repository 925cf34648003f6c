"""arpro's benchmarks: ``python -m benchmarks list|run NAME|all [--quick]|render`` (see README.md)."""
