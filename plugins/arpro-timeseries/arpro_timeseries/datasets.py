"""Time-series datasets: windows ``[N, T, D]`` of standardised sensor readings.

Every dataset here reduces to three row tables (train, validation, test) of numeric
feature columns with a 0/1 label per row. From them:

- the standardisation (mean, std per feature) is fitted on the normal training rows only;
- windows of ``window`` rows are cut with ``stride`` (train, validation) and
  ``test_stride`` (test); a training window containing any anomalous row is dropped;
- a window is anomalous if any of its rows is; ``Split.masks`` holds the per-row labels
  broadcast over the features, ``[N, T, D]``;
- the validation split (held-out normal windows) is what conformal thresholds use.

Options (``--dataset NAME`` with ``cls(root, category, **options)``): ``window``,
``stride``, ``test_stride``, ``downsample`` (average every k rows; label = max),
``fill_nan`` (``"error"``, the default, or ``"ffill"``), and per loader below.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import arpro
from arpro import ArproError
from arpro_timeseries import csvio
from arpro_timeseries.simulate import COLUMNS as PROCESS_COLUMNS
from arpro_timeseries.simulate import simulate

VALIDATION_FRACTION = 0.1  # of the normal training rows, held out at the end (real datasets)


class Rows:
    """A table of feature rows with labels and time stamps (before standardisation)."""

    def __init__(self, values: np.ndarray, labels: np.ndarray, times: list[str] | None = None) -> None:
        self.values = values.astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.times = times if times is not None else [str(i) for i in range(len(values))]

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int | None = None) -> Rows:
        return Rows(self.values[start:stop], self.labels[start:stop], self.times[start:stop])

    def downsample(self, k: int) -> Rows:
        if k <= 1:
            return self
        n = len(self) // k * k
        values = self.values[:n].reshape(-1, k, self.values.shape[1]).mean(1)
        labels = self.labels[:n].reshape(-1, k).max(1)
        return Rows(values, labels, self.times[:n:k])


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

    def __init__(self, root: Path | None = None, category: str | None = None, **options: Any) -> None:
        super().__init__(root=Path(root) if root is not None else None, category=category, **options)
        self.window = int(options.get("window", self.default_window))
        self.stride = int(options.get("stride", max(1, self.window // 4)))
        self.test_stride = int(options.get("test_stride", self.window))
        self.downsample = int(options.get("downsample", 1))
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
        return {"columns": columns, "mean": mean, "std": std, "rows": {"train": train, "validation": val, "test": test}}

    @property
    def source(self) -> str:
        return str(self.root) if self.root else self.name

    @property
    def columns(self) -> list[str]:
        return self._data["columns"]

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return ((values - self._data["mean"]) / self._data["std"]).astype(np.float32)

    def to_units(self, x: torch.Tensor) -> np.ndarray:
        """Windows ``[..., D]`` in the model's space back to the file's units."""
        return x.detach().cpu().numpy() * self._data["std"] + self._data["mean"]

    def _split(self, name: str, stride: int, drop_anomalous: bool) -> arpro.Split:
        rows: Rows = self._data["rows"][name]
        d = len(self.columns)
        starts = window_starts(len(rows), self.window, stride)
        values = torch.from_numpy(self.standardise(rows.values))
        labels = torch.from_numpy(rows.labels)
        if starts:
            idx = torch.tensor(starts)[:, None] + torch.arange(self.window)[None, :]
            step_labels = labels[idx]  # [N, T]
            if drop_anomalous:
                keep = step_labels.amax(1) == 0
                idx, step_labels = idx[keep], step_labels[keep]
                starts = [s for s, k in zip(starts, keep.tolist()) if k]
            x = values[idx]  # [N, T, D]
        else:
            x = torch.zeros(0, self.window, d)
            step_labels = torch.zeros(0, self.window, dtype=torch.long)
        masks = step_labels[:, :, None].to(torch.float32).expand(-1, -1, d)
        ids = [f"{name}@{rows.times[s]}" for s in starts]
        return arpro.Split(x, step_labels.amax(1) if len(starts) else torch.zeros(0, dtype=torch.long), masks, ids)

    @cached_property
    def _train(self) -> arpro.Split:
        return self._split("train", self.stride, drop_anomalous=True)

    @cached_property
    def _validation(self) -> arpro.Split:
        return self._split("validation", self.stride, drop_anomalous=True)

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
        ignore = {c for c in frame.columns if csvio.is_time_column(c) or csvio.is_label_column(c)}
        ignore |= {self.options.get("time_column"), self.options.get("label_column")} - {None}
        csvio.check_feature_columns(frame, self.columns, ignore, path, self.name)
        values = csvio.numeric(frame, self.columns, path, fill_nan=self.options.get("fill_nan", "error"))
        if len(values) < self.window:
            raise ArproError(
                f"{path}: {len(values)} data rows, fewer than one window of {self.window} rows that the models expect"
            )
        starts = window_starts(len(values), self.window, self.window)
        x = torch.from_numpy(self.standardise(values))
        idx = torch.tensor(starts)[:, None] + torch.arange(self.window)[None, :]
        time_column = next((c for c in frame.columns if csvio.is_time_column(c)), None)
        times = frame[time_column].astype(str).tolist() if time_column else [str(i + 1) for i in range(len(frame))]
        return arpro.InputBatch(
            x[idx], [f"rows{s + 1}-{s + self.window}" for s in starts], {"path": str(path), "starts": starts, "times": times}
        )

    def write_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        from arpro_timeseries.figure import plot_repairs

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
        figures = plot_repairs(result, self.columns, out_dir, to_units=self.to_units)
        return [repaired, omega, *figures]


class Process(TimeSeriesDataset):
    """A simulated three-stage water process with injected attacks (embedded; no data needed).

    Options: ``seed`` (0), ``train_steps`` (8000), ``validation_steps`` (2000),
    ``test_steps`` (6000) simulated rows, ``window`` (64), ``stride`` (8),
    ``test_stride`` (16). The train and validation series are attack-free; the test series
    has an attack every 150–330 steps (stuck sensor, spike, drift, actuator manipulation).
    """

    name = "process"
    embedded = True
    default_window = 64

    def __init__(self, root: Path | None = None, category: str | None = None, **options: Any) -> None:
        options.setdefault("stride", 8)
        options.setdefault("test_stride", 16)
        super().__init__(root=root, category=category, **options)
        self.seed = int(options.get("seed", 0))

    def load(self):
        o = self.options
        splits = []
        for offset, key, default, attacks in [
            (0, "train_steps", 8000, False),
            (1, "validation_steps", 2000, False),
            (2, "test_steps", 6000, True),
        ]:
            values, labels, _ = simulate(int(o.get(key, default)), seed=1000 * self.seed + offset, attacks=attacks)
            splits.append(Rows(values, labels))
        return list(PROCESS_COLUMNS), *splits

    def attacks(self) -> list[dict]:
        """The attacks injected into the test series (kind, target, start, stop rows)."""
        return simulate(int(self.options.get("test_steps", 6000)), seed=1000 * self.seed + 2, attacks=True)[2]


def _split_train(columns: list[str], train: Rows, test: Rows) -> tuple[list[str], Rows, Rows, Rows]:
    n_val = int(len(train) * VALIDATION_FRACTION)
    return columns, train.slice(0, len(train) - n_val), train.slice(len(train) - n_val), test


def _find(root: Path, patterns: list[str], what: str, dataset: str) -> list[Path]:
    if root is None:
        raise ArproError(f"dataset {dataset} needs --data-root DIR (the folder with its CSV files)")
    if root.is_file():
        return [root]
    for pattern in patterns:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if found:
            return found
    raise ArproError(f"{root}: no {what} file of {dataset} (looked for {', '.join(patterns)})")


class _PublishedLayout(TimeSeriesDataset):
    """A dataset published as train/test CSVs; subclasses say how to find and parse them."""

    train_patterns: list[str] = []
    test_patterns: list[str] = []

    def read_rows(self, path: Path, train: bool) -> tuple[list[str], Rows]:
        raise NotImplementedError

    def load(self):
        fill = self.options.get("fill_nan", "error")
        parts = {}
        for key, patterns, train in [("train", self.train_patterns, True), ("test", self.test_patterns, False)]:
            columns, rows = None, []
            for path in _find(self.root, patterns, key, self.name):
                cols, r = self.read_rows(path, train, fill)
                if columns is not None and cols != columns:
                    raise ArproError(f"{path}: its feature columns differ from those of the other {key} files")
                columns = cols
                rows.append(r)
            parts[key] = (columns, Rows(np.concatenate([r.values for r in rows]), np.concatenate([r.labels for r in rows]), sum((r.times for r in rows), [])))
        (train_cols, train), (test_cols, test) = parts["train"], parts["test"]
        if train_cols != test_cols:
            missing = [c for c in train_cols if c not in test_cols]
            raise ArproError(f"{self.source}: test files lack training column(s) {', '.join(map(repr, missing[:5]))}")
        return _split_train(train_cols, train, test)


class SWaT(_PublishedLayout):
    """SWaT (iTrust) in its published CSV layout: SWaT_Dataset_Normal*.csv / SWaT_Dataset_Attack*.csv.

    Handles the extra title row of the converted spreadsheets, the `` Timestamp`` column,
    column names with stray spaces, and the ``Normal/Attack`` label (``Attack``, ``A ttack``).
    """

    name = "swat"
    train_patterns = ["*Normal*.csv", "*normal*.csv", "*Normal*.csv.gz"]
    test_patterns = ["*Attack*.csv", "*attack*.csv", "*Attack*.csv.gz"]

    def read_rows(self, path, train, fill="error"):
        frame = csvio.read_csv(path, header_contains="Timestamp")
        label_col = next((c for c in frame.columns if c.replace(" ", "").lower() in ("normal/attack", "attack", "label")), None)
        if label_col is None:
            raise ArproError(f"{path}: missing column 'Normal/Attack'")
        labels = frame[label_col].astype(str).str.replace(" ", "").str.lower().map({"normal": 0, "attack": 1})
        if labels.isna().any():
            row = int(labels.isna().to_numpy().argmax())
            raise ArproError(f"{path}: column {label_col!r} has {frame[label_col].iloc[row]!r} in data row {row + 1}; expected Normal or Attack")
        time_col = next((c for c in frame.columns if csvio.is_time_column(c)), None)
        columns = [c for c in frame.columns if c not in (label_col, time_col)]
        values = csvio.numeric(frame, columns, path, fill_nan=fill)
        times = frame[time_col].astype(str).str.strip().tolist() if time_col else None
        return columns, Rows(values, labels.to_numpy(), times)


class WADI(_PublishedLayout):
    """WADI (iTrust) in its published CSV layout: WADI_14days*.csv / WADI_attackdata*.csv.

    Skips the metadata lines above the ``Row,Date,Time,...`` header, strips the
    ``\\\\WIN-...\\LOG_DATA\\SUTD_WADI\\LOG_DATA\\`` prefix of the column names, drops columns
    that are empty throughout the training file (the 2017 release has several), and reads the
    label of WADI_attackdataLABLE.csv (``Attack LABLE (1:No Attack, -1:Attack)``).
    """

    name = "wadi"
    train_patterns = ["WADI_14days*.csv", "*14days*.csv"]
    test_patterns = ["WADI_attackdataLABLE*.csv", "WADI_attackdata*.csv", "*attack*.csv"]

    def read_rows(self, path, train, fill="error"):
        frame = csvio.read_csv(path, header_contains="Row")
        frame.columns = [c.split("\\")[-1].strip() for c in frame.columns]
        label_col = next((c for c in frame.columns if "attack" in c.lower()), None)
        if label_col is not None:
            raw = pd.to_numeric(frame[label_col], errors="coerce")
            labels = (raw == -1).astype(np.int64).to_numpy()
        elif train:
            labels = np.zeros(len(frame), dtype=np.int64)
        else:
            raise ArproError(
                f"{path}: missing column 'Attack LABLE (1:No Attack, -1:Attack)'; use the labelled release WADI_attackdataLABLE.csv"
            )
        drop = {label_col, "Row", "Date", "Time"}
        columns = [c for c in frame.columns if c not in drop]
        if train:
            self._empty = [c for c in columns if frame[c].isna().all()]
        columns = [c for c in columns if c not in getattr(self, "_empty", [])]
        values = csvio.numeric(frame, columns, path, fill_nan=fill)
        times = (frame["Date"].astype(str) + " " + frame["Time"].astype(str)).tolist() if {"Date", "Time"} <= set(frame.columns) else None
        return columns, Rows(values, labels, times)


class HAI(_PublishedLayout):
    """HAI (ETRI/NSR) in its published CSV layout: train*.csv / test*.csv (20.07, 21.03, 22.04).

    Handles ``;`` (20.07) or ``,`` delimiters, the ``time``/``timestamp`` column, and the
    label columns ``attack``/``Attack`` (the per-process ``attack_P1..P3`` are dropped).
    """

    name = "hai"
    train_patterns = ["train*.csv", "train*.csv.gz", "*train*.csv"]
    test_patterns = ["test*.csv", "test*.csv.gz", "*test*.csv"]

    def read_rows(self, path, train, fill="error"):
        frame = csvio.read_csv(path)
        label_cols = [c for c in frame.columns if c.lower().startswith("attack")]
        main = next((c for c in label_cols if c.lower() == "attack"), None)
        if main is not None:
            labels = csvio.numeric(frame, [main], path)[:, 0].astype(np.int64)
        elif label_cols:
            labels = csvio.numeric(frame, label_cols, path).max(1).astype(np.int64)
        elif train:
            labels = np.zeros(len(frame), dtype=np.int64)
        else:
            raise ArproError(f"{path}: missing column 'attack'")
        time_col = next((c for c in frame.columns if csvio.is_time_column(c)), None)
        columns = [c for c in frame.columns if c not in label_cols and c != time_col]
        values = csvio.numeric(frame, columns, path, fill_nan=fill)
        times = frame[time_col].astype(str).tolist() if time_col else None
        return columns, Rows(values, labels, times)


class TimeSeriesCsv(TimeSeriesDataset):
    """Any time-series CSV (--data-root FILE.csv, or a folder with train.csv and test.csv).

    Options: ``delimiter`` (sniffed from , ; tab), ``time_column`` (``time``/``timestamp``
    found automatically), ``label_column`` (``label``; 1 = anomalous; optional),
    ``train_fraction`` (0.5: a single file's first half trains, on its normal rows).
    """

    name = "ts-csv"

    def _read(self, path: Path) -> tuple[list[str], Rows]:
        o = self.options
        frame = csvio.read_csv(path, delimiter=o.get("delimiter"))
        time_col = o.get("time_column") or next((c for c in frame.columns if csvio.is_time_column(c)), None)
        if time_col is not None and time_col not in frame.columns:
            raise ArproError(f"{path}: missing column {time_col!r} (time column)")
        label_col = o.get("label_column", "label")
        if label_col in frame.columns:
            labels = csvio.numeric(frame, [label_col], path)[:, 0]
            if not set(np.unique(labels)) <= {0.0, 1.0}:
                raise ArproError(f"{path}: label column {label_col!r} must hold 0 (normal) or 1 (anomalous)")
        elif "label_column" in o:
            raise ArproError(f"{path}: missing column {label_col!r} (label column)")
        else:
            labels = np.zeros(len(frame))
        columns = [c for c in frame.columns if c not in (time_col, label_col)]
        values = csvio.numeric(frame, columns, path, fill_nan=o.get("fill_nan", "error"))
        times = frame[time_col].astype(str).tolist() if time_col else None
        return columns, Rows(values, labels.astype(np.int64), times)

    def load(self):
        if self.root is None:
            raise ArproError("dataset ts-csv needs --data-root FILE.csv (or a folder with train.csv and test.csv)")
        if self.root.is_dir():
            columns, train = self._read(_find(self.root, ["train.csv"], "train", self.name)[0])
            test_columns, test = self._read(_find(self.root, ["test.csv"], "test", self.name)[0])
            if test_columns != columns:
                raise ArproError(f"{self.root}: test.csv has columns {test_columns}, train.csv has {columns}")
            return _split_train(columns, train, test)
        columns, rows = self._read(self.root)
        cut = int(len(rows) * float(self.options.get("train_fraction", 0.5)))
        return _split_train(columns, rows.slice(0, cut), rows.slice(cut))
