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


def _kind(path: Path, root: Path) -> str:
    """What a file's anomalies are: its subfolder under ``root`` (``valve1``), or its own name (``d01``)."""
    name = _experiment_name(path, root)
    return name.split("/")[0] if "/" in name else name


# where public testbeds keep normal recordings beside labelled ones (SKAB: anomaly-free/), and their test data
TRAIN_SOURCES = ("train.csv", "train.csv.gz", "train", "anomaly-free", "anomaly_free")
TEST_SOURCES = ("test.csv", "test.csv.gz", "test")


def _source(root: Path, names: tuple[str, ...], what: str) -> Path | None:
    """The one file (``*.csv``) or folder of ``names`` in ``root``, if any."""
    found = [root / n for n in names if ((root / n).is_file() if ".csv" in n else (root / n).is_dir())]
    if len(found) > 1:
        raise ArproError(f"{root}: both {found[0].name} and {found[1].name} hold {what} data; keep one of them")
    return found[0] if found else None


def _files(folder: Path) -> list[Path]:
    """A folder's own CSV files, or, when it has none, those of its subfolders (``valve1/0.csv``)."""
    own = _csv_files(folder.iterdir())
    nested = _csv_files(folder.rglob("*"))
    if own and len(nested) > len(own):
        skipped = sorted({p.relative_to(folder).parts[0] for p in nested if p.parent != folder})
        print(f"note: ts-csv: {folder} has CSV files of its own, so the CSV files in its subfolder(s) "
              f"{', '.join(f'{s}/' for s in skipped[:5])} are not read", file=sys.stderr)
    if not (own or nested):
        raise ArproError(f"{folder}: no CSV files in this folder or its subfolders")
    return own or nested


class TimeSeriesCsv(TimeSeriesDataset):
    """Any time-series CSV (--data-root FILE.csv; a folder with train.csv, train/ or anomaly-free/ beside
    test.csv or test/; or a folder of experiment CSVs, or of subfolders of them when it holds no CSV itself).

    Layouts of ``--data-root``: one file; a training file or folder (``train.csv``, ``train/``,
    ``anomaly-free/``) beside a test file or folder (``test.csv``, ``test/``), split already; a
    folder of experiment files (``train_rows`` / ``train_fraction``: each labelled file's first N
    rows / fraction trains, the rest tests; a file without a label column, or one under a training
    folder, is normal and trains whole). No window straddles two files.

    Options: ``delimiter`` (sniffed from , ; tab), ``time_column`` (``time``/``timestamp`` found by
    name, else a column of rising whole numbers or date-times, with a note), ``label_column`` (found
    by its usual names: ``label``, ``anomaly``, ``attack``, ...; 1 = anomalous; optional: without one
    every row is normal), ``kind_column`` (what each anomalous row's anomaly is; otherwise a test
    file's subfolder or, in a folder of runs, its name), ``exclude_columns`` (``a;b``: columns that
    are not features), ``train_fraction`` (a single file: 0.5), ``train_rows``.
    """

    name = "ts-csv"
    accepted_options = (*TimeSeriesDataset.accepted_options, "train_fraction", "train_rows", "exclude_columns",
                        "kind_column")

    def _time_column(self, frame: pd.DataFrame, path: Path, candidates: list[str]) -> str | None:
        """The option's, a column named as time is, or the column that counts the rows (said once, in a note)."""
        named = self.options.get("time_column") or next((c for c in frame.columns if csvio.is_time_column(c)), None)
        if named is not None:
            return named
        if self.index_column is None:
            found = csvio.index_column(frame[candidates])
            if found is not None:
                self.index_column, what = found
                print(f"note: ts-csv: column {self.index_column!r} of {path.name} holds {what}, so it is taken as the "
                      "time index, not as a sensor (--option time_column=NAME names the time column)", file=sys.stderr)
        return self.index_column if self.index_column in frame.columns else None

    def _read(self, path: Path, label_required: bool = False, kind: str | None = None) -> tuple[list[str], Rows, bool]:
        """(feature columns, rows, whether the file has a label column); the rows' kinds are ``kind``'s
        (or the ``kind_column``'s) where labelled anomalous, when either is given."""
        o = self.options
        frame = csvio.read_csv(path, delimiter=o.get("delimiter"))
        label_col = o.get("label_column") or next((c for c in frame.columns if csvio.is_label_column(c)), "label")
        kind_col = o.get("kind_column")
        excluded = self.excluded_columns()
        for option, column in (("exclude_columns", next((c for c in excluded if c not in frame.columns), None)),
                               ("kind_column", kind_col if kind_col not in (None, *frame.columns) else None)):
            if column is not None:
                raise ArproError(f"{path}: {option} names {column!r}, which is not a column of the file")
        annotations = [c for c in frame.columns if csvio.is_annotation_column(c) and c not in (label_col, *excluded)]
        time_col = self._time_column(frame, path, [c for c in frame.columns
                                                   if c not in (label_col, kind_col, *excluded, *annotations)])
        if time_col is not None and time_col not in frame.columns:
            raise ArproError(f"{path}: missing column {time_col!r} (time column)")
        gaps = csvio.check_time_order(frame[time_col], path, time_col) if time_col is not None else None
        if gaps:
            print(f"note: ts-csv: {gaps}", file=sys.stderr)
        if len(frame) < self.window:
            print(f"note: ts-csv: {path.name} has {len(frame)} rows, fewer than a window ({self.window}): it gives no "
                  "window (a smaller --option window=N would use it)", file=sys.stderr)
        labelled = label_col in frame.columns
        if labelled:
            labels = csvio.numeric(frame, [label_col], path)[:, 0]
            if not set(np.unique(labels)) <= {0.0, 1.0}:
                raise ArproError(f"{path}: label column {label_col!r} must hold 0 (normal) or 1 (anomalous)")
        elif label_required:
            raise ArproError(f"{path}: missing column {label_col!r} (label column)")
        else:
            labels = np.zeros(len(frame))
        if annotations and not getattr(self, "_annotations_noted", False):
            self._annotations_noted = True
            print(f"note: ts-csv: {', '.join(map(repr, annotations))} annotates the labels; it is not used as a feature",
                  file=sys.stderr)
        columns = [c for c in frame.columns if c not in (time_col, label_col, kind_col, *excluded, *annotations)]
        values = csvio.numeric(frame, columns, path, fill_nan=o.get("fill_nan", "error"))
        times = frame[time_col].astype(str).tolist() if time_col else None
        kinds = None
        if kind_col is not None or kind is not None:
            named = frame[kind_col].astype(str).str.strip() if kind_col is not None else pd.Series([kind] * len(frame))
            kinds = named.where(labels == 1, "normal").tolist()
        return columns, Rows(values, labels.astype(np.int64), times, kinds=kinds), labelled

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

    def _read_files(self, files: list[Path], base: Path | None, kinds: bool = False,
                    label_required: bool = False) -> tuple[list[str], list[tuple[Rows, bool]]]:
        """Each file's rows and whether it is labelled, and the feature columns they share. Under a folder
        ``base``, ids name the file (``test@valve1/0:12``) and, with ``kinds``, so do the anomalies' kinds."""
        columns, out = None, []
        for path in files:
            kind = _kind(path, base) if kinds and base is not None else None
            cols, rows, labelled = self._read(path, label_required=label_required, kind=kind)
            if columns is not None and cols != columns:
                raise ArproError(f"{path}: its feature columns {cols[:5]} differ from those of {files[0]} "
                                 f"{columns[:5]}")
            columns = cols
            if base is not None:
                rows.times = [f"{_experiment_name(path, base)}:{t}" for t in rows.times]
            out.append((rows, labelled))
        return columns, out

    def _load_experiments(self, files: list[Path], normal: list[Path]):
        """A folder of experiment files: heads, unlabelled files and the ``normal`` ones train, the rest tests."""
        columns, read = self._read_files(files, self.root, kinds=True)
        train, test, labelled_normal = [], [], []
        for path, (rows, labelled) in zip(files, read):
            cut = len(rows) if path in normal or not labelled else self._head_rows(len(rows))
            if labelled and rows.labels[:cut].any():
                print(f"warning: {path}: {int(rows.labels[:cut].sum())} anomalous rows in its first {cut} (training) "
                      "rows; the windows containing them are left out of training", file=sys.stderr)
            if labelled and not rows.labels.any():
                labelled_normal.append(path.name)
            if cut:
                train.append(rows.slice(0, cut))
            if cut < len(rows):
                test.append(rows.slice(cut))
        if not train:
            beside = _source(self.root.parent, TRAIN_SOURCES, "training") if self.root.name in TEST_SOURCES else None
            hint = (f"; or pass --data-root {self.root.parent}, where {beside.name} trains and {self.root.name}/ tests"
                    if beside else "")
            normal_only = f" (in {', '.join(labelled_normal[:3])} it is 0 throughout)" if labelled_normal else ""
            raise ArproError(f"{self.root}: no training rows: every CSV file has a label column{normal_only}; pass "
                             f"train_rows=N or train_fraction=F to train on the head of each file, or add normal files "
                             f"without one{hint}")
        test_rows = Rows.concat(test) if test else Rows(np.zeros((0, len(columns))), np.zeros(0))
        return _split_train(columns, Rows.concat(train), test_rows)

    def _load_split(self, train_source: Path, test_source: Path):
        """A training file or folder beside a test file or folder: every training row trains, every test row tests."""
        if {"train_rows", "train_fraction"} & set(self.options):
            raise ArproError(f"{self.root}: train_rows and train_fraction split experiment files; this folder has "
                             f"{train_source.name} and {test_source.name}, which are split already")
        parts = {}
        for key, source in (("train", train_source), ("test", test_source)):
            files, base = ([source], None) if source.is_file() else (_files(source), source)
            parts[key] = files[0], *self._read_files(files, base, kinds=key == "test",
                                                      label_required=key == "test" and "label_column" in self.options)
        (train_first, columns, train), (test_first, test_columns, test) = parts["train"], parts["test"]
        if test_columns != columns:
            raise ArproError(f"{test_first}: its feature columns {test_columns[:5]} differ from those of "
                             f"{train_first} {columns[:5]}")
        return _split_train(columns, Rows.concat([r for r, _ in train]), Rows.concat([r for r, _ in test]))

    def load(self):
        if self.root is None:
            raise ArproError("dataset ts-csv needs --data-root FILE.csv (or a folder of CSV files)")
        if self.root.is_dir():
            train_source = _source(self.root, TRAIN_SOURCES, "training")
            test_source = _source(self.root, TEST_SOURCES, "test")
            if train_source is not None and test_source is not None:
                return self._load_split(train_source, test_source)
            files = _files(self.root)  # SKAB: anomaly-free/, valve1/, ...
            normal = [] if train_source is None else [p for p in files if train_source in (p, *p.parents)]
            return self._load_experiments(files, normal)
        if "train_rows" in self.options:
            raise ArproError("ts-csv: train_rows applies to a folder of experiment files; a single file takes train_fraction")
        columns, rows, _ = self._read(self.root, label_required="label_column" in self.options)
        cut = self._head_rows(len(rows), default_fraction=0.5)
        return _split_train(columns, rows.slice(0, cut), rows.slice(cut))
