"""Tables: any CSV, and scikit-learn's breast-cancer table as the embedded default.

Rows are standardised with the mean and standard deviation of the normal training split
only; repairs are written back in the table's own units. pandas parses users' CSV files; the
shipped table and the written files need only the ``csv`` module, so a repair of the embedded
default never imports pandas (a second of start-up).
"""

from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import torch

import arpro
from arpro import ArproError

if TYPE_CHECKING:
    import pandas as pd

FLOAT32_MAX = float(np.finfo(np.float32).max)
TEST_FRACTION_OF_NORMAL = 0.3
SPLIT_SEED = 0
BREAST_CANCER = Path(__file__).parent / "data" / "breast_cancer.csv"


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV, turning every way it can fail into one clear message."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ArproError(f"CSV file {path} does not exist")
    arpro.check_csv_size(path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except Exception as error:
        raise ArproError(f"cannot read {path} as CSV: {error}") from None
    with path.open(newline="", errors="replace") as f:
        names = [name.strip() for name in next(csv.reader(f), [])]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise ArproError(f"{path}: column {repeated!r} appears more than once in the header; rename or drop the copies")
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise ArproError(f"{path} has no data rows")
    return frame


def numeric_columns(frame: pd.DataFrame, columns: list[str], source: Path | str) -> np.ndarray:
    """The given columns as a float array; names the first missing column, bad cell or empty cell."""
    import pandas as pd

    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArproError(f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}")
    for column in columns:
        truth_values = frame[column].map(lambda v: isinstance(v, (bool, np.bool_)))
        if truth_values.any():  # pandas reads True/False cells as booleans, which to_numeric would make 1/0
            row = int(truth_values.to_numpy().argmax())
            raise ArproError(f"{source}: column {column!r} has a true/false value {frame[column][row]!r} in data row "
                             f"{row + 1}, not a number")
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.idxmax())
            raise ArproError(
                f"{source}: column {column!r} has a non-numeric value {frame[column][row]!r} in data row {row + 1}"
            )
        if values.isna().any():
            row = int(values.isna().idxmax())
            raise ArproError(f"{source}: column {column!r} is empty in data row {row + 1}")
        if not np.isfinite(values.to_numpy()).all():
            row = int((~np.isfinite(values.to_numpy())).argmax())
            raise ArproError(f"{source}: column {column!r} is infinite in data row {row + 1}")
        if (values.abs() > FLOAT32_MAX).any():
            row = int((values.abs() > FLOAT32_MAX).to_numpy().argmax())
            raise ArproError(f"{source}: column {column!r} holds {values[row]:g} in data row {row + 1}, "
                             f"beyond float32 (|x| <= {FLOAT32_MAX:.3g})")
    return frame[columns].apply(pd.to_numeric).to_numpy(dtype=np.float32)


class TableDataset(arpro.Dataset):
    """Shared logic: a table of numeric feature columns with a 0/1 label per row."""

    domain = "tabular"
    accepted_options: tuple[str, ...] = ()
    # evaluate's batches: the autoencoder's 212 rows in 15.7 s against 26.7 s at 16 (docs/decisions/speed.md)
    evaluate_chunk = 64

    def table(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(the feature values ``[rows, columns]`` as float32, the feature columns, labels with 1 = anomalous)."""
        raise NotImplementedError

    @cached_property
    def _splits(self) -> tuple[arpro.Split, arpro.Split, np.ndarray, np.ndarray, list[str]]:
        values, columns, labels = self.table()
        rng = np.random.default_rng(SPLIT_SEED)
        normal = rng.permutation(np.flatnonzero(labels == 0))
        n_test = int(round(TEST_FRACTION_OF_NORMAL * len(normal)))
        train_idx = np.sort(normal[n_test:])
        test_idx = np.sort(np.concatenate([normal[:n_test], np.flatnonzero(labels == 1)]))
        if len(train_idx) < 2:
            raise ArproError(f"{self.source}: need at least 2 normal rows to train on, found {len(train_idx)}")
        mean = values[train_idx].mean(0)
        std = values[train_idx].std(0)
        std[std < 1e-8] = 1.0

        def split(idx: np.ndarray) -> arpro.Split:
            x = torch.from_numpy((values[idx] - mean) / std)
            return arpro.Split(x, torch.from_numpy(labels[idx].astype(np.int64)), None, [f"row{i + 1}" for i in idx])

        return split(train_idx), split(test_idx), mean, std, columns

    @property
    def source(self) -> str:
        return str(self.root) if self.root else self.name

    @property
    def columns(self) -> list[str]:
        return self._splits[4]

    def feature_names(self) -> list[str]:
        return self.columns

    def train(self) -> arpro.Split:
        return self._splits[0]

    def test(self) -> arpro.Split:
        return self._splits[1]

    def standardise(self, values: np.ndarray) -> torch.Tensor:
        _, _, mean, std, _ = self._splits
        return torch.from_numpy(((values - mean) / std).astype(np.float32))

    def to_table_units(self, x: torch.Tensor) -> np.ndarray:
        _, _, mean, std, _ = self._splits
        return x.detach().numpy() * std + mean

    def read_input(self, path: Path) -> arpro.InputBatch:
        frame = read_csv(path)
        values = numeric_columns(frame, self.columns, path)
        return arpro.InputBatch(self.standardise(values), [f"row{i + 1}" for i in range(len(frame))])

    def write_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        rows = []
        for arm_name, x in [("input", result.x_bad)] + [(n, a.x_fix) for n, a in result.arms.items()]:
            rows += [[identifier, arm_name, *map(str, values)] for identifier, values in zip(result.ids, self.to_table_units(x))]
        rows.sort(key=lambda row: (row[0], row[1]))
        repaired = _write_csv(out_dir / "repaired.csv", ["id", "arm", *self.columns], rows)
        mask = [[identifier, *map(str, values)] for identifier, values in zip(result.ids, result.omega.int().tolist())]
        return [repaired, _write_csv(out_dir / "omega.csv", ["id", *self.columns], mask)]

    def draw_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        from arpro_tabular.figure import plot_rows

        return [plot_rows(result, self.columns, Path(out_dir) / "repair.png")]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


class BreastCancer(TableDataset):
    """scikit-learn's breast-cancer table: benign rows normal, malignant rows anomalous (embedded).

    The table (UCI's Wisconsin diagnostic breast cancer data, CC BY 4.0) ships with this plugin
    as ``load_breast_cancer(as_frame=True).frame.to_csv(index=False)``, value for value: reading
    it takes milliseconds, importing scikit-learn to load it took a second and a half.
    """

    name = "breast-cancer"
    embedded = True

    def table(self):
        with BREAST_CANCER.open(newline="") as f:
            header, *rows = list(csv.reader(f))
        values = np.array(rows, dtype=np.float64)
        labels = (values[:, -1] == 0).astype(np.int64)  # the last column is sklearn's target: 0 = malignant
        return values[:, :-1].astype(np.float32), header[:-1], labels


class CsvTable(TableDataset):
    """Any CSV: numeric feature columns and an optional 0/1 label column (--data-root FILE)."""

    name = "csv"
    accepted_options = ("label_column",)

    def table(self):
        if self.root is None:
            raise ArproError("dataset csv needs --data-root FILE.csv")
        frame = read_csv(self.root)
        label_column = self.options.get("label_column", "label")
        if label_column in frame.columns:
            labels = numeric_columns(frame, [label_column], self.root)[:, 0]
            if not set(np.unique(labels)) <= {0.0, 1.0}:
                raise ArproError(f"{self.root}: label column {label_column!r} must hold 0 (normal) or 1 (anomalous)")
            labels = labels.astype(np.int64)
        else:
            labels = np.zeros(len(frame), dtype=np.int64)
        columns = [c for c in frame.columns if c != label_column]
        return numeric_columns(frame, columns, self.root), columns, labels
