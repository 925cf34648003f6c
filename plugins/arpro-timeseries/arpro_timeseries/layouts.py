"""Public real-world time-series CSV layouts: SWaT, WADI, HAI, and any CSV (``ts-csv``).

Each reads train/test CSV files from ``--data-root`` into :class:`Rows`; the last
``VALIDATION_FRACTION`` of the training rows is held out for validation. Windowing is
:class:`arpro_timeseries.windows.TimeSeriesDataset`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from arpro import ArproError
from arpro_timeseries import csvio
from arpro_timeseries.windows import Rows, TimeSeriesDataset

VALIDATION_FRACTION = 0.1  # of the normal training rows, held out at the end (real datasets)


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
            parts[key] = (columns, Rows.concat(rows))  # no window straddles two files
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


def _csv_files(paths) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))


def _experiment_name(path: Path, root: Path) -> str:
    """The file's path under the folder without its .csv/.csv.gz: ``run07``, or ``valve1/0`` in a subfolder."""
    name = path.relative_to(root).as_posix()
    return name[: -len(".csv.gz")] if name.lower().endswith(".csv.gz") else name[: -len(".csv")]


class TimeSeriesCsv(TimeSeriesDataset):
    """Any time-series CSV (--data-root FILE.csv, a folder with train.csv and test.csv, or a folder
    of experiment CSVs, or of subfolders of them when it holds no CSV itself).

    Options: ``delimiter`` (sniffed from , ; tab), ``time_column`` (``time``/``timestamp``
    found automatically), ``label_column`` (found by its usual names: ``label``, ``anomaly``,
    ``attack``, ...; 1 = anomalous; optional: without one every row is normal),
    ``exclude_columns`` (``a;b``: columns that are not features), ``train_fraction`` (a single
    file: 0.5, its first half trains on its normal rows), ``train_rows`` / ``train_fraction``
    (a folder of experiment files: each labelled file's first N rows / fraction trains, the rest
    tests; a file without a label column is normal and trains whole). No window straddles two files.
    """

    name = "ts-csv"
    accepted_options = (*TimeSeriesDataset.accepted_options, "train_fraction", "train_rows", "exclude_columns")

    def _read(self, path: Path, label_required: bool = False) -> tuple[list[str], Rows, bool]:
        """(feature columns, rows, whether the file has a label column)."""
        o = self.options
        frame = csvio.read_csv(path, delimiter=o.get("delimiter"))
        time_col = o.get("time_column") or next((c for c in frame.columns if csvio.is_time_column(c)), None)
        if time_col is not None and time_col not in frame.columns:
            raise ArproError(f"{path}: missing column {time_col!r} (time column)")
        label_col = o.get("label_column") or next((c for c in frame.columns if csvio.is_label_column(c)), "label")
        labelled = label_col in frame.columns
        if labelled:
            labels = csvio.numeric(frame, [label_col], path)[:, 0]
            if not set(np.unique(labels)) <= {0.0, 1.0}:
                raise ArproError(f"{path}: label column {label_col!r} must hold 0 (normal) or 1 (anomalous)")
        elif label_required:
            raise ArproError(f"{path}: missing column {label_col!r} (label column)")
        else:
            labels = np.zeros(len(frame))
        excluded = self.excluded_columns()
        missing = [c for c in excluded if c not in frame.columns]
        if missing:
            raise ArproError(f"{path}: exclude_columns names {missing[0]!r}, which is not a column of the file")
        annotations = [c for c in frame.columns if csvio.is_annotation_column(c) and c not in (label_col, *excluded)]
        if annotations and not getattr(self, "_annotations_noted", False):
            self._annotations_noted = True
            print(f"note: ts-csv: {', '.join(map(repr, annotations))} annotates the labels; it is not used as a feature",
                  file=sys.stderr)
        columns = [c for c in frame.columns if c not in (time_col, label_col, *excluded, *annotations)]
        values = csvio.numeric(frame, columns, path, fill_nan=o.get("fill_nan", "error"))
        times = frame[time_col].astype(str).tolist() if time_col else None
        return columns, Rows(values, labels.astype(np.int64), times), labelled

    def _head_rows(self, n: int, default_fraction: float = 0.0) -> int:
        """How many of a file's ``n`` rows train: ``train_rows`` or ``train_fraction``."""
        o = self.options
        if "train_rows" in o and "train_fraction" in o:
            raise ArproError("ts-csv: give train_rows or train_fraction, not both")
        if "train_rows" in o:
            rows = o["train_rows"]
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
                raise ArproError(f"ts-csv: train_rows must be a whole number of rows >= 0, not {rows!r}")
            return min(rows, n)
        fraction = o.get("train_fraction", default_fraction)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ArproError(f"ts-csv: train_fraction must be a number from 0 to 1, not {fraction!r}")
        return int(n * fraction)

    def _load_experiments(self, files: list[Path]):
        """A folder of experiment files: heads and normal-only files train, the rest tests."""
        columns, train, test = None, [], []
        for path in files:
            cols, rows, labelled = self._read(path, label_required=False)
            if columns is not None and cols != columns:
                first = _experiment_name(files[0], self.root)
                raise ArproError(f"{path}: its feature columns {cols[:5]} differ from those of {first} {columns[:5]}")
            columns = cols
            rows.times = [f"{_experiment_name(path, self.root)}:{t}" for t in rows.times]  # ids name the experiment
            cut = self._head_rows(len(rows)) if labelled else len(rows)
            if labelled and rows.labels[:cut].any():
                print(f"warning: {path}: {int(rows.labels[:cut].sum())} anomalous rows in its first {cut} (training) "
                      "rows; the windows containing them are left out of training", file=sys.stderr)
            if cut:
                train.append(rows.slice(0, cut))
            if cut < len(rows):
                test.append(rows.slice(cut))
        if not train:
            raise ArproError(f"{self.root}: no training rows: every CSV file has a label column; pass train_rows=N or "
                             "train_fraction=F to train on the head of each file, or add normal files without one")
        test_rows = Rows.concat(test) if test else Rows(np.zeros((0, len(columns))), np.zeros(0))
        return _split_train(columns, Rows.concat(train), test_rows)

    def load(self):
        if self.root is None:
            raise ArproError("dataset ts-csv needs --data-root FILE.csv (or a folder of CSV files)")
        if self.root.is_dir():
            if (self.root / "train.csv").is_file() and (self.root / "test.csv").is_file():
                if {"train_rows", "train_fraction"} & set(self.options):
                    raise ArproError(f"{self.root}: train_rows and train_fraction split experiment files; this "
                                     "folder has train.csv and test.csv, which are split already")
                columns, train, _ = self._read(self.root / "train.csv")
                test_columns, test, _ = self._read(self.root / "test.csv", label_required="label_column" in self.options)
                if test_columns != columns:
                    raise ArproError(f"{self.root}: test.csv has columns {test_columns}, train.csv has {columns}")
                return _split_train(columns, train, test)
            files = _csv_files(self.root.iterdir()) or _csv_files(self.root.rglob("*"))  # SKAB: anomaly-free/, valve1/, ...
            if not files:
                raise ArproError(f"{self.root}: no CSV files in this folder or its subfolders")
            return self._load_experiments(files)
        if "train_rows" in self.options:
            raise ArproError("ts-csv: train_rows applies to a folder of experiment files; a single file takes train_fraction")
        columns, rows, _ = self._read(self.root, label_required="label_column" in self.options)
        cut = self._head_rows(len(rows), default_fraction=0.5)
        return _split_train(columns, rows.slice(0, cut), rows.slice(cut))
