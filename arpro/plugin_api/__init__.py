"""The plugin API: hook specs, the registry of plugins, the protocols and base classes detectors,
repairers, properties, constraints and datasets implement, and the result types they return.
The bottom layer above ``arpro.errors``: it imports nothing else of arpro."""
