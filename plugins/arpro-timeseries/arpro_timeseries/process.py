"""The simulated three-stage water process (``--dataset process``): embedded, no data needed.

The rows come from :mod:`arpro_timeseries.simulate`; windowing is
:class:`arpro_timeseries.windows.TimeSeriesDataset`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arpro_timeseries.simulate import COLUMNS as PROCESS_COLUMNS
from arpro_timeseries.simulate import simulate
from arpro_timeseries.windows import Rows, TimeSeriesDataset, whole_option


class Process(TimeSeriesDataset):
    """A simulated three-stage water process with injected attacks and faults (embedded; no data needed).

    Options: ``seed`` (0), ``train_steps`` (8000), ``validation_steps`` (2000),
    ``test_steps`` (12000) simulated rows, ``window`` (64), ``stride`` (8),
    ``test_stride`` (16). The train and validation series are attack-free; the test series
    has an attack or fault every 150–330 steps (stuck sensor, spike, drift, actuator
    manipulation, line blockage, sensor bias, cavitation noise).
    """

    name = "process"
    embedded = True
    accepted_options = (*TimeSeriesDataset.accepted_options, "seed", "train_steps", "validation_steps", "test_steps")
    default_window = 64

    def __init__(self, root: Path | None = None, category: str | None = None, **options: Any) -> None:
        options.setdefault("stride", 8)
        options.setdefault("test_stride", 16)
        super().__init__(root=root, category=category, **options)
        self.seed = whole_option(self.name, options, "seed", 0, 0)
        for key in ("train_steps", "validation_steps", "test_steps"):
            if key in options:
                whole_option(self.name, options, key, 1, 1)

    def load(self):
        o = self.options
        splits = []
        for offset, key, default, attacks in [
            (0, "train_steps", 8000, False),
            (1, "validation_steps", 2000, False),
            (2, "test_steps", 12000, True),
        ]:
            values, labels, schedule = simulate(int(o.get(key, default)), seed=1000 * self.seed + offset, attacks=attacks)
            kinds = ["normal"] * len(values)
            for attack in schedule:
                kinds[attack["start"] : attack["settled"]] = [attack["kind"]] * (attack["settled"] - attack["start"])
            splits.append(Rows(values, labels, kinds=kinds))
        return list(PROCESS_COLUMNS), *splits

    def attacks(self) -> list[dict]:
        """The attacks injected into the test series (kind, target, start, stop and settled rows)."""
        return simulate(int(self.options.get("test_steps", 12000)), seed=1000 * self.seed + 2, attacks=True)[2]
