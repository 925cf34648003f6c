"""The windowing base of the time-series datasets: rows -> windows ``[N, T, D]`` of standardised readings.

Every dataset reduces to three row tables (:class:`Rows`: train, validation, test) of
numeric feature columns with a 0/1 label per row. From them :class:`TimeSeriesDataset`:

- fits the standardisation (mean, std per feature) on the normal training rows only;
- cuts windows of ``window`` rows with ``stride`` (train, validation) and
  ``test_stride`` (test); a training window containing any anomalous row is dropped;
- marks a window anomalous if any of its rows is; ``Split.masks`` holds the per-row labels
  broadcast over the features, ``[N, T, D]``;
- the validation split (held-out normal windows) is what conformal thresholds use;
- reads user CSVs (``read_input``) and writes repairs (``write_repairs``).

Options (``--dataset NAME`` with ``cls(root, category, **options)``): ``window``,
``stride``, ``test_stride``, ``downsample`` (average every k rows; label = max),
``fill_nan`` (``"error"``, the default, or ``"ffill"``), and per loader (the public
CSV layouts in :mod:`arpro_timeseries.layouts`, the simulated process in
:mod:`arpro_timeseries.process`).
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import arpro
from arpro import ArproError
from arpro_timeseries import csvio


FAR_OUTSIDE_Z = 10  # a test feature whose median |z| exceeds this is flagged: it will look anomalous everywhere

class Rows:
    """A table of feature rows with labels and time stamps (before standardisation).

    ``starts`` are the first rows of its segments: separate recordings (one per file) laid end
    to end, which no window and no downsampling bin may straddle.
    """

    def __init__(self, values: np.ndarray, labels: np.ndarray, times: list[str] | None = None,
                 starts: list[int] | None = None, kinds: list[str] | None = None) -> None:
        self.values = values.astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.times = times if times is not None else [str(i) for i in range(len(values))]
        self.starts = sorted({0} | {int(s) for s in starts or [] if 0 < s < len(values)})
        self.kinds = kinds  # per row: the anomaly kind of a labelled row ("normal" otherwise), if known

    def __len__(self) -> int:
        return len(self.values)

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        """Recordings end to end, each its own segment."""
        offsets = np.cumsum([0] + [len(p) for p in parts])
        kinds = sum((p.kinds for p in parts), []) if parts and all(p.kinds is not None for p in parts) else None
        return Rows(np.concatenate([p.values for p in parts]), np.concatenate([p.labels for p in parts]),
                    sum((p.times for p in parts), []), [int(o) + s for o, p in zip(offsets, parts) for s in p.starts], kinds)

    def segments(self) -> list[Rows]:
        bounds = [*self.starts, len(self)]
        return [self._rows(a, b) for a, b in zip(bounds, bounds[1:])]

    def _rows(self, start: int, stop: int, starts: list[int] | None = None) -> Rows:
        kinds = None if self.kinds is None else self.kinds[start:stop]
        return Rows(self.values[start:stop], self.labels[start:stop], self.times[start:stop], starts, kinds)

    def slice(self, start: int, stop: int | None = None) -> Rows:
        stop = len(self) if stop is None else stop
        return self._rows(start, stop, starts=[s - start for s in self.starts if start < s < stop])

    def downsample(self, k: int) -> Rows:
        if k <= 1:
            return self
        parts = []
        for part in self.segments():
            n = len(part) // k * k
            values = part.values[:n].reshape(-1, k, self.values.shape[1]).mean(1)
            labels = part.labels[:n].reshape(-1, k).max(1)
            kinds = None if part.kinds is None else [first_kind(part.kinds[i : i + k]) for i in range(0, n, k)]
            parts.append(Rows(values, labels, part.times[:n:k], kinds=kinds))
        return Rows.concat(parts)


def first_kind(row_kinds: list[str]) -> str:
    """The kind of a window (or a downsampling bin): that of its first anomalous row, so that
    ``--limit`` and the gallery cover every kind."""
    return next((kind for kind in row_kinds if kind != "normal"), "normal")


def whole_option(dataset: str, options: dict[str, Any], key: str, default: int, least: int) -> int:
    """``options[key]`` (else ``default``), refused unless a whole number of at least ``least``."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ArproError(f"dataset {dataset}: option {key} must be a whole number >= {least}, not {value!r}")
    return value


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start rows of windows of ``window`` rows every ``stride`` rows; the last one ends at row ``n``."""
    if n < window:
        return []
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


class TimeSeriesDataset(arpro.Dataset):
    """Shared logic: rows -> standardised windows, labels carried per time step."""

    domain = "timeseries"
    default_window = 100
    # evaluate's batches: gpt2's 64 windows in 26.6 s against 48.2 s at 16, same records (docs/decisions/speed.md)
    evaluate_chunk = 64
    # fit_steps: train models for this many steps instead of their default (tests, quick looks)
    accepted_options: tuple[str, ...] = ("window", "stride", "test_stride", "downsample", "fit_steps",
                                         "delimiter", "time_column", "label_column", "fill_nan")

    def __init__(self, root: Path | None = None, category: str | None = None, **options: Any) -> None:
        super().__init__(root=Path(root) if root is not None else None, category=category, **options)
        self.window = whole_option(self.name, options, "window", self.default_window, 2)
        self.stride = whole_option(self.name, options, "stride", max(1, self.window // 4), 1)
        self.test_stride = whole_option(self.name, options, "test_stride", self.window, 1)
        self.downsample = whole_option(self.name, options, "downsample", 1, 1)
        if "fit_steps" in options:
            whole_option(self.name, options, "fit_steps", 1, 1)
        self.index_column: str | None = None  # a column a loader took for the time index by its content (ts-csv)
        if self.window < 2 or self.stride < 1 or self.test_stride < 1:
            raise ArproError(f"dataset {self.name}: window must be >= 2 and strides >= 1")

    # -- what a loader provides --------------------------------------------------------------
    def load(self) -> tuple[list[str], Rows, Rows, Rows]:
        """(feature columns, train rows, validation rows, test rows), in the file's units."""
        raise NotImplementedError

    # -- derived ----------------------------------------------------------------------------
    @cached_property
    def _data(self) -> dict[str, Any]:
        columns, train, val, test = self.load()
        train, val, test = (r.downsample(self.downsample) for r in (train, val, test))
        normal = train.values[train.labels == 0]
        if len(normal) < self.window:
            raise ArproError(
                f"{self.source}: {len(normal)} normal training rows, fewer than one window of {self.window}"
            )
        mean = normal.mean(0)
        std = normal.std(0)
        std[std < 1e-6] = 1.0  # constant in normal operation: keep the units
        if len(test):
            z = np.median(np.abs((test.values - mean) / std), axis=0)
            far = [f"{c} ({m:.0f})" for c, m in zip(columns, z) if m > FAR_OUTSIDE_Z]
            if far:
                print(f"warning: {self.source}: the test data lies far outside the normal training range on "
                      f"{', '.join(far[:5])}{' and more' if len(far) > 5 else ''} (median |z| > {FAR_OUTSIDE_Z}); "
                      "every window will look anomalous there: check units, sensor replacements or the train/test "
                      "split", file=sys.stderr)
        return {"columns": columns, "mean": mean, "std": std, "rows": {"train": train, "validation": val, "test": test}}

    def excluded_columns(self) -> list[str]:
        """The ``exclude_columns`` option (``a;b`` or a list): columns of the files that are not features."""
        value = self.options.get("exclude_columns") or []
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ArproError(f"exclude_columns must be column names separated by ';', not {value!r}")
        return names

    @property
    def source(self) -> str:
        return str(self.root) if self.root else self.name

    @property
    def columns(self) -> list[str]:
        return self._data["columns"]

    def feature_names(self) -> list[str]:
        return self.columns

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return ((values - self._data["mean"]) / self._data["std"]).astype(np.float32)

    def to_units(self, x: torch.Tensor) -> np.ndarray:
        """Windows ``[..., D]`` in the model's space back to the file's units."""
        return x.detach().cpu().numpy() * self._data["std"] + self._data["mean"]

    def _starts(self, rows: Rows, stride: int, drop_anomalous: bool) -> list[int]:
        """First rows of the windows of ``rows`` (per segment, none straddling two), less anomalous ones if asked."""
        bounds = [*rows.starts, len(rows)]
        starts = [a + s for a, b in zip(bounds, bounds[1:]) for s in window_starts(b - a, self.window, stride)]
        if not drop_anomalous:
            return starts
        anomalous = np.concatenate([[0], np.cumsum(rows.labels)])  # anomalous rows before each row
        return [s for s in starts if anomalous[s + self.window] == anomalous[s]]

    def _split(self, name: str, stride: int, drop_anomalous: bool) -> arpro.Split:
        rows: Rows = self._data["rows"][name]
        d = len(self.columns)
        starts = self._starts(rows, stride, drop_anomalous)
        values = torch.from_numpy(self.standardise(rows.values))
        labels = torch.from_numpy(rows.labels)
        if starts:
            idx = torch.tensor(starts)[:, None] + torch.arange(self.window)[None, :]
            step_labels = labels[idx]  # [N, T]
            x = values[idx]  # [N, T, D]
        else:
            x = torch.zeros(0, self.window, d)
            step_labels = torch.zeros(0, self.window, dtype=torch.long)
        masks = step_labels[:, :, None].to(torch.float32).expand(-1, -1, d)
        ids = [f"{name}@{rows.times[s]}" for s in starts]
        kinds = None if rows.kinds is None else [first_kind(rows.kinds[s : s + self.window]) for s in starts]
        return arpro.Split(x, step_labels.amax(1) if len(starts) else torch.zeros(0, dtype=torch.long), masks, ids,
                           kinds=kinds or [])

    def validation_stride(self) -> int:
        """``stride``, or where that cuts fewer than the 19 held-out normal windows a 95% conformal threshold
        needs, the largest smaller stride that cuts 19 (1 when none does): overlapping windows of the
        same held-out rows, rather than a threshold from the test split's normal windows."""
        rows = self._data["rows"]["validation"]

        def count(stride: int) -> int:
            return len(self._starts(rows, stride, drop_anomalous=True))

        stride = next((s for s in range(self.stride, 1, -1) if count(s) >= arpro.CONFORMAL_MINIMUM), 1)
        if count(stride) > count(self.stride):
            print(f"note: {self.source}: validation windows every {stride} rows, not every {self.stride}, so that the "
                  f"95% TNR threshold has the {arpro.CONFORMAL_MINIMUM} held-out normal windows it needs", file=sys.stderr)
        return stride

    @cached_property
    def _train(self) -> arpro.Split:
        return self._split("train", self.stride, drop_anomalous=True)

    @cached_property
    def _validation(self) -> arpro.Split:
        return self._split("validation", self.validation_stride(), drop_anomalous=True)

    @cached_property
    def _test(self) -> arpro.Split:
        return self._split("test", self.test_stride, drop_anomalous=False)

    def train(self) -> arpro.Split:
        return self._train

    def validation(self) -> arpro.Split:
        """Held-out normal windows (for conformal thresholds)."""
        return self._validation

    def test(self) -> arpro.Split:
        return self._test

    def sample_shape(self) -> tuple[int, ...]:
        return (self.window, len(self.columns))

    # -- user files ---------------------------------------------------------------------------
    def read_input(self, path: Path) -> arpro.InputBatch:
        """A CSV with this dataset's feature columns (a time column and a label column may be
        present) -> non-overlapping windows, the last one aligned to the file's end."""
        path = Path(path)
        frame = csvio.read_csv(path, delimiter=self.options.get("delimiter"))
        ignore = {c for c in frame.columns
                  if csvio.is_time_column(c) or csvio.is_label_column(c) or csvio.is_annotation_column(c)}
        ignore |= {self.options.get("time_column"), self.options.get("label_column"), self.options.get("kind_column"),
                   self.index_column, *self.excluded_columns()} - {None}
        csvio.check_feature_columns(frame, self.columns, ignore, path, self.name)
        values = csvio.numeric(frame, self.columns, path, fill_nan=self.options.get("fill_nan", "error"))
        if len(values) < self.window:
            raise ArproError(
                f"{path}: {len(values)} data rows, fewer than one window of {self.window} rows that the models expect"
            )
        starts = window_starts(len(values), self.window, self.window)
        x = torch.from_numpy(self.standardise(values))
        idx = torch.tensor(starts)[:, None] + torch.arange(self.window)[None, :]
        time_column = next((c for c in frame.columns if csvio.is_time_column(c) or c == self.index_column), None)
        times = frame[time_column].astype(str).tolist() if time_column else [str(i + 1) for i in range(len(frame))]
        return arpro.InputBatch(
            x[idx], [f"rows{s + 1}-{s + self.window}" for s in starts], {"path": str(path), "starts": starts, "times": times}
        )

    def write_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        starts = batch.meta.get("starts")
        times = batch.meta.get("times")
        frames = []
        arms = [("input", result.x_bad)] + [(n, a.x_fix) for n, a in result.arms.items()]
        for i, sample_id in enumerate(result.ids):
            for arm_name, x in arms:
                table = pd.DataFrame(self.to_units(x[i]), columns=self.columns)
                steps = range(self.window)
                if starts is not None and times is not None:
                    table.insert(0, "time", [times[starts[i] + s] for s in steps])
                table.insert(0, "step", list(steps))
                table.insert(0, "arm", arm_name)
                table.insert(0, "id", sample_id)
                frames.append(table)
        repaired = out_dir / "repaired.csv"
        pd.concat(frames).to_csv(repaired, index=False, float_format="%.6g")
        omega_frames = []
        for i, sample_id in enumerate(result.ids):
            mask = pd.DataFrame(result.omega_input[i].int().numpy(), columns=self.columns)
            mask.insert(0, "step", list(range(self.window)))
            mask.insert(0, "id", sample_id)
            omega_frames.append(mask)
        omega = out_dir / "omega.csv"
        pd.concat(omega_frames).to_csv(omega, index=False)
        return [repaired, omega]

    def draw_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        from arpro_timeseries.figure import plot_repairs

        truth = (batch.meta or {}).get("truth")
        return plot_repairs(result, self.columns, Path(out_dir), to_units=self.to_units,
                            truth=None if truth is None else truth.numpy())
