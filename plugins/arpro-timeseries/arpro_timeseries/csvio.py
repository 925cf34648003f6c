"""Reading time-series CSVs, turning every way one can be wrong into one clear line."""

from __future__ import annotations

import csv
import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import arpro
from arpro import ArproError

TIME_NAMES = {"time", "timestamp", "datetime", "date_time", "date time"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
LABEL_NAMES = {"label", "labels", "attack", "normal/attack", "anomaly", "is_anomaly"}
# annotations derived from the labels (SKAB's "changepoint" marks where each anomaly starts): never
# features, since a detector given one reads the answer, and never taken for the label itself
ANNOTATION_NAMES = {"changepoint", "change_point", "changepoints"}


def is_time_column(name: str) -> bool:
    return str(name).strip().lower() in TIME_NAMES


def is_label_column(name: str) -> bool:
    n = str(name).replace(" ", "").lower()
    return n in LABEL_NAMES or n.startswith("attack")


def is_annotation_column(name: str) -> bool:
    return str(name).replace(" ", "").lower() in ANNOTATION_NAMES


def index_column(frame: pd.DataFrame) -> tuple[str, str] | None:
    """(name, what it holds) of the first column that can only be a time index, whatever its name: whole
    numbers that rise in every row (a sample counter), or date-times that never fall; None if none does."""
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or len(column) < 2:
            continue
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64)
            if np.isfinite(values).all() and (values == np.round(values)).all() and (np.diff(values) > 0).all():
                return name, "whole numbers that rise in every row"
            continue
        with warnings.catch_warnings():  # a column that is no date-time is the common case, not a warning
            warnings.simplefilter("ignore")
            times = pd.to_datetime(column, errors="coerce", format="mixed")
        if times.notna().all() and times.is_monotonic_increasing:
            return name, "date-times that never fall"
    return None


def check_time_order(column: pd.Series, path: Path, name: str) -> str | None:
    """Refuse a time column that goes backwards or repeats a time (rows of two experiments mixed, or
    written twice: a window over them is no stretch of time); return a note on gaps (windows run
    across them), or None. A column that is neither numbers nor date-times is taken as it comes."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = pd.to_datetime(column, errors="coerce", format="mixed")
        if times.isna().any():
            return None
        values = times.astype("int64").to_numpy(dtype=np.float64)
    steps = np.diff(values)
    if len(steps) == 0 or not np.isfinite(steps).all():
        return None
    for bad, what in ((steps < 0, "goes backwards"), (steps == 0, "repeats a time")):
        if bad.any():
            row = int(bad.argmax()) + 2  # the data row (1-based) where it happens
            raise ArproError(f"{path}: time column {name!r} {what} at data row {row} ({str(column.iloc[row - 2])!r} then "
                             f"{str(column.iloc[row - 1])!r}): sort the file by time, drop repeated rows, or split it into one "
                             "file per experiment")
    usual = float(np.median(steps))
    gaps = steps > 1.5 * usual
    if not gaps.any():
        return None
    row = int(steps.argmax()) + 2
    return (f"{path.name}: time column {name!r} has {int(gaps.sum())} gap(s), the largest {steps.max() / usual:.0f} usual "
            f"steps before data row {row}; windows run across them")


def _head(path: Path, lines: int = 12) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", errors="replace") as f:
        for _ in range(lines):
            line = f.readline()
            if not line:
                break
            out.append(line)
    return out


def read_csv(path: Path, delimiter: str | None = None, header_contains: str | None = None) -> pd.DataFrame:
    """Read a CSV: find the header line (the first one containing ``header_contains``, if
    given), sniff the delimiter among , ; and tab, strip stray spaces from column names and
    drop unnamed empty columns."""
    path = Path(path)
    if not path.is_file():
        raise ArproError(f"CSV file {path} does not exist")
    head = _head(path)
    if not head:
        raise ArproError(f"{path} is empty")
    skip = 0
    if header_contains is not None:
        hits = [i for i, line in enumerate(head) if header_contains.lower() in line.lower()]
        if not hits:
            raise ArproError(f"{path}: no header line with a {header_contains!r} column in its first {len(head)} lines")
        skip = hits[0]
    if delimiter is None:
        delimiter = max([",", ";", "\t"], key=head[skip].count)
    arpro.check_csv_size(path, delimiter, skip)  # before pandas parses a cell
    names = [name.strip() for name in next(csv.reader([head[skip]], delimiter=delimiter), [])]
    repeated = next((name for name in names if name and names.count(name) > 1), None)
    if repeated is not None:
        raise ArproError(f"{path}: column {repeated!r} appears more than once in the header; rename or drop the copies")
    try:
        frame = pd.read_csv(path, sep=delimiter, skiprows=skip, skipinitialspace=True, low_memory=False)
    except Exception as error:
        raise ArproError(f"cannot read {path} as CSV: {str(error).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    unnamed = [c for c in frame.columns if c.startswith("Unnamed:") and frame[c].isna().all()]
    frame = frame.drop(columns=unnamed)
    if frame.empty:
        raise ArproError(f"{path} has no data rows")
    return frame


def check_feature_columns(frame: pd.DataFrame, columns: list[str], ignore: set, path: Path, model: str) -> None:
    """The file must hold exactly the model's feature columns (time and label columns aside)."""
    present = [c for c in frame.columns if c not in ignore]
    missing = [c for c in columns if c not in frame.columns]
    extra = [c for c in present if c not in columns]
    if len(present) != len(columns):
        detail = []
        if missing:
            detail.append(f"missing {', '.join(map(repr, missing[:5]))}")
        if extra:
            detail.append(f"unexpected {', '.join(map(repr, extra[:5]))}")
        raise ArproError(
            f"{path}: {len(present)} feature columns, but the models of {model} were trained on {len(columns)}"
            + (f" ({'; '.join(detail)})" if detail else "")
        )
    if missing:
        raise ArproError(f"{path}: missing column {missing[0]!r}" + (f" (found {extra[0]!r} instead)" if extra else ""))


def _runs(mask: np.ndarray) -> tuple[int, int]:
    """First run of True in ``mask``: (first index, last index)."""
    first = int(mask.argmax())
    last = first
    while last + 1 < len(mask) and mask[last + 1]:
        last += 1
    return first, last


def numeric(frame: pd.DataFrame, columns: list[str], path: Path, fill_nan: str = "error") -> np.ndarray:
    """The given columns as float32 ``[rows, len(columns)]``; names the first missing column,
    non-numeric cell or run of empty cells (data rows counted from 1)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArproError(f"{path}: missing column {missing[0]!r}")
    if fill_nan not in ("error", "ffill"):
        raise ArproError(f"fill_nan must be 'error' or 'ffill', not {fill_nan!r}")
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        raw = frame[column]
        values = pd.to_numeric(raw, errors="coerce")
        suspect = values.isna() & raw.notna()  # the string test below costs more than parsing: only where needed
        bad = (suspect & (raw.astype(str).str.strip() != "")).to_numpy() if suspect.any() else suspect.to_numpy()
        if bad.any():
            row = int(bad.argmax())
            raise ArproError(f"{path}: column {column!r} has a non-numeric value {raw.iloc[row]!r} in data row {row + 1}")
        array = values.to_numpy(dtype=np.float64)
        huge = np.abs(np.nan_to_num(array, posinf=0.0, neginf=0.0)) > FLOAT32_MAX
        if huge.any():
            row = int(huge.argmax())
            raise ArproError(f"{path}: column {column!r} holds {array[row]:g} in data row {row + 1}, "
                             f"beyond float32 (|x| <= {FLOAT32_MAX:.3g})")
        empty = ~np.isfinite(array)
        if empty.any():
            if fill_nan == "ffill" and not empty.all():
                array = pd.Series(array).replace([np.inf, -np.inf], np.nan).ffill().bfill().to_numpy()
            else:
                first, last = _runs(empty)
                where = f"data row {first + 1}" if first == last else f"data rows {first + 1}-{last + 1} (a run of {last - first + 1})"
                raise ArproError(
                    f"{path}: column {column!r} is empty (NaN or infinite) in {where}; fill it, or pass fill_nan='ffill'"
                )
        out[:, j] = array
    return out
