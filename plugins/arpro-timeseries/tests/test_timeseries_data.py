"""Time-series datasets: the simulated process, the published layouts, the CSV checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from arpro import ArproError
from arpro.plugin_api import registry

SMALL = dict(train_steps=1200, validation_steps=300, test_steps=1500, window=32, stride=8, test_stride=16)


def dataset(name: str, root=None, **options):
    return registry.get("dataset", name)(root=root, category=None, **options)


@pytest.fixture(scope="module")
def process():
    return dataset("process", **SMALL)


# -- the embedded process ---------------------------------------------------------------------


def test_process_is_the_embedded_timeseries_default():
    cls = registry.registry().default("dataset", "timeseries")
    assert cls.name == "process" and cls.embedded and cls.domain == "timeseries"


def test_process_windows_labels_and_masks(process):
    train, test = process.train(), process.test()
    d = len(process.columns)
    assert train.x.shape[1:] == (32, d) and test.x.shape[1:] == (32, d) and d >= 24
    assert process.sample_shape() == (32, d)
    assert int(train.labels.sum()) == 0  # windows with an attacked step never train
    assert 0 < int(test.labels.sum()) < len(test)
    assert test.masks.shape == test.x.shape
    # a window is anomalous iff one of its steps is; masks are the step labels on every feature
    assert torch.equal(test.masks.amax((1, 2)).long(), test.labels)
    assert torch.equal(test.masks.amin(2), test.masks.amax(2))
    anomalous = test.anomalous()
    assert len(anomalous) == int(test.labels.sum()) and anomalous.masks.flatten(1).amax(1).min() == 1


def test_process_is_deterministic_and_cached(process):
    again = dataset("process", **SMALL)
    assert torch.equal(again.test().x, process.test().x)
    assert process.train() is process.train()  # tensors are cached
    other = dataset("process", seed=1, **SMALL)
    assert not torch.equal(other.test().x, process.test().x)


def test_standardisation_uses_normal_training_rows_only(process):
    x = process.train().x
    # training windows overlap, so per-feature statistics are close to (0, 1) but not exact
    assert x.mean((0, 1)).abs().max() < 0.25
    rows = process._data["rows"]["train"]
    assert np.allclose(process._data["mean"], rows.values.mean(0), atol=1e-3)
    # the test split (with attacks) did not move the statistics
    assert not np.allclose(process._data["mean"], rows.values.mean(0) * 0 + process._data["rows"]["test"].values.mean(0))


def test_attacks_cover_all_kinds_and_match_labels():
    ds = dataset("process")
    attacks = ds.attacks()
    assert {a["kind"] for a in attacks} == {"stuck", "spike", "drift", "actuator", "blockage", "bias", "noise"}
    labels = ds._data["rows"]["test"].labels
    for a in attacks:
        assert a["settled"] >= a["stop"]
        assert labels[a["start"] : a["settled"]].all()
    assert labels.sum() == sum(a["settled"] - a["start"] for a in attacks)


def test_an_attacks_aftermath_is_labelled_until_every_valve_is_open():
    from arpro_timeseries.simulate import COLUMNS

    ds = dataset("process")
    rows = ds._data["rows"]["test"]
    valves = rows.values[:, [COLUMNS.index(f"MV{k}01") for k in (1, 2, 3)]]
    aftermath = [a for a in ds.attacks() if a["settled"] > a["stop"]]
    assert aftermath, "the default plant has attacks whose aftermath outlasts them"
    for a in aftermath:  # a valve is still closing or reopening right after the attack
        assert valves[a["stop"]].min() < 0.9
    assert valves[rows.labels == 0].min() > 0.95  # normal rows: every valve open (noise 0.005)


def test_stuck_sensor_really_sticks():
    from arpro_timeseries.simulate import COLUMNS, simulate

    values, labels, attacks = simulate(3000, seed=5, attacks=True)
    stuck = next(a for a in attacks if a["kind"] == "stuck")
    j = COLUMNS.index(stuck["target"])
    span = values[stuck["start"] : stuck["stop"], j]
    assert np.all(span == span[0])


def test_blockage_moves_flow_pressure_current_and_vibration_together():
    from arpro_timeseries.simulate import COLUMNS, simulate

    values, _, attacks = simulate(12000, seed=5, attacks=True)
    checked = 0
    for a in (a for a in attacks if a["kind"] == "blockage"):
        k, s = a["target"][1], a["start"]
        before, during = slice(s - 10, s), slice(s + 2, s + 12)  # 10 steps each side (valves move for 2)
        if values[s - 10 : s + 12, COLUMNS.index(a["target"])].min() < 0.5:
            continue  # the pump stopped on its own nearby: nothing to compare
        column = {kind: values[:, COLUMNS.index(f"{kind}{k}0{2 if kind == 'FIT' else 1}")] for kind in ("FIT", "PIT", "CUR", "VIB")}
        assert column["FIT"][during].mean() < 0.7 * column["FIT"][before].mean()  # less flow ...
        assert column["PIT"][during].mean() > column["PIT"][before].mean() + 0.5  # ... against more head,
        assert column["CUR"][during].mean() < column["CUR"][before].mean() - 0.5  # less current,
        assert column["VIB"][during].mean() > column["VIB"][before].mean() + 0.3  # more vibration
        checked += 1
    assert checked >= 2


def test_cavitation_raises_the_vibration_noise():
    from arpro_timeseries.simulate import COLUMNS, simulate

    values, _, attacks = simulate(6000, seed=5, attacks=True)
    a = next(a for a in attacks if a["kind"] == "noise")
    vibration = np.diff(values[:, COLUMNS.index(f"VIB{a['target'][1]}01")])
    quiet = np.diff(values[: a["start"] - 1, COLUMNS.index(f"VIB{a['target'][1]}01")])
    robust_std = np.median(np.abs(quiet)) / 0.6745  # of step-to-step changes, untouched by pump switching
    assert vibration[a["start"] : a["stop"] - 1].std() > 3 * robust_std


def test_window_and_stride_options():
    ds = dataset("process", **{**SMALL, "window": 20, "stride": 10, "test_stride": 20})
    assert ds.train().x.shape[1] == 20
    # test windows every 20 rows, the last one aligned to the end of the series
    assert len(ds.test()) == (1500 - 20) // 20 + 1 + (1 if (1500 - 20) % 20 else 0)


# -- published layouts ------------------------------------------------------------------------


def _signals(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return np.sin(t / (5 + np.arange(d))) + 0.1 * rng.normal(size=(n, d))


def write_swat(root: Path, n: int = 120) -> None:
    names = ["FIT101", "LIT101", " MV101", "P101 ", "AIT201"]
    for fname, seed, attack in [("SWaT_Dataset_Normal_v1.csv", 0, False), ("SWaT_Dataset_Attack_v0.csv", 1, True)]:
        values = _signals(n, len(names), seed)
        lines = [",".join([""] * (len(names) + 2)), ",".join([" Timestamp", *names, "Normal/Attack"])]
        for i in range(n):
            label = "Normal"
            if attack and 50 <= i < 60:
                label = "Attack" if i % 2 else "A ttack"
            lines.append(",".join([f" 28/12/2015 10:00:{i:02d} AM", *(f"{v:.4f}" for v in values[i]), label]))
        (root / fname).write_text("\n".join(lines) + "\n")


def test_swat_layout(tmp_path):
    write_swat(tmp_path)
    ds = dataset("swat", tmp_path, window=10, stride=5, test_stride=10)
    assert ds.columns == ["FIT101", "LIT101", "MV101", "P101", "AIT201"]  # stray spaces stripped
    test = ds.test()
    assert test.x.shape[1:] == (10, 5)
    rows = ds._data["rows"]["test"]
    assert rows.labels.sum() == 10 and rows.labels[50:60].all()  # "Attack" and "A ttack"
    assert test.ids[0].startswith("test@28/12/2015")
    assert len(ds.validation()) > 0


def test_wadi_layout(tmp_path):
    prefix = "\\\\WIN-25J4RO10SBF\\LOG_DATA\\SUTD_WADI\\LOG_DATA\\"
    names = ["1_AIT_001_PV", "1_FIT_001_PV", "2_LT_001_PV"]
    n = 120
    values = _signals(n, 3, 0)
    lines = ["junk metadata line"] * 4 + [",".join(["Row", "Date", "Time", *(prefix + c for c in names), prefix + "2_LS_001_AL"])]
    lines += [",".join([str(i + 1), "9/25/2017", f"6:00:{i % 60:02d}.000 PM", *(f"{v:.4f}" for v in values[i]), ""]) for i in range(n)]
    (tmp_path / "WADI_14days_new.csv").write_text("\n".join(lines) + "\n")
    values = _signals(n, 3, 1)
    lines = [",,,,", ",".join(["Row ", "Date ", "Time", *names, "2_LS_001_AL", '"Attack LABLE (1:No Attack, -1:Attack)"'])]
    lines += [
        ",".join([str(i + 1), "10/9/2017", "6:00:00.000 PM", *(f"{v:.4f}" for v in values[i]), "", "-1" if 70 <= i < 80 else "1"])
        for i in range(n)
    ]
    (tmp_path / "WADI_attackdataLABLE.csv").write_text("\n".join(lines) + "\n")
    ds = dataset("wadi", tmp_path, window=10)
    assert ds.columns == names  # prefix stripped, the empty 2_LS_001_AL dropped
    assert ds._data["rows"]["test"].labels[70:80].all() and ds._data["rows"]["test"].labels.sum() == 10
    assert ds.test().x.shape[1:] == (10, 3)


@pytest.mark.parametrize("version", ["20.07", "21.03"])
def test_hai_layout(tmp_path, version):
    sep = ";" if version == "20.07" else ","
    names = ["P1_B2004", "P1_B2016", "P2_SIT01"]
    n = 100
    for fname, seed in [("train1.csv", 0), ("test1.csv", 1)]:
        values = _signals(n, 3, seed)
        lines = [sep.join(["time", *names, "attack", "attack_P1", "attack_P2", "attack_P3"])]
        for i in range(n):
            a = int(fname.startswith("test") and 40 <= i < 45)
            lines.append(sep.join([f"2020-07-11 00:00:{i % 60:02d}", *(f"{v:.4f}" for v in values[i]), str(a), str(a), "0", "0"]))
        (tmp_path / fname).write_text("\n".join(lines) + "\n")
    ds = dataset("hai", tmp_path, window=10)
    assert ds.columns == names
    assert ds._data["rows"]["test"].labels.sum() == 5


def write_series(path: Path, sep: str, **columns) -> Path:
    """A CSV of the named columns: floats to 4 decimals, anything else as written."""
    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)

    rows = zip(*columns.values())
    path.write_text("\n".join([sep.join(columns), *(sep.join(cell(v) for v in row) for row in rows)]) + "\n")
    return path


def test_ts_csv_options(tmp_path):
    n = 200
    values = _signals(n, 3, 0)
    labels = np.zeros(n, dtype=int)
    labels[150:160] = 1
    path = write_series(tmp_path / "series.csv", ";", stamp=range(n), a=values[:, 0], b=values[:, 1], c=values[:, 2],
                        is_bad=labels)
    ds = dataset("ts-csv", path, delimiter=";", time_column="stamp", label_column="is_bad", window=16, stride=4)
    assert ds.columns == ["a", "b", "c"]
    assert int(ds.test().labels.sum()) > 0 and int(ds.train().labels.sum()) == 0
    with pytest.raises(ArproError, match="missing column 'label'"):
        dataset("ts-csv", path, delimiter=";", time_column="stamp", label_column="label").train()


# -- user CSVs: one clear line per problem ----------------------------------------------------


def write_input(path: Path, ds, rows: int | None = None, drop: str | None = None, extra: str | None = None, edit=None) -> Path:
    rows = rows or ds.window
    columns = [c for c in ds.columns if c != drop]
    frame = {c: np.round(np.linspace(0, 1, rows) + j, 4).astype(object) for j, c in enumerate(columns)}
    if extra:
        frame[extra] = np.ones(rows)
    if edit:
        edit(frame)
    lines = ["time," + ",".join(frame)] + [f"{i}," + ",".join(str(frame[c][i]) for c in frame) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_input_windows_a_good_csv(tmp_path, process):
    path = write_input(tmp_path / "x.csv", process, rows=70)
    batch = process.read_input(path)
    assert batch.x.shape == (3, 32, len(process.columns))  # 0-31, 32-63, and 38-69 aligned to the end
    assert batch.meta["starts"] == [0, 32, 38] and batch.ids[0] == "rows1-32"
    back = process.to_units(batch.x[0])
    assert np.allclose(back[:, 0], np.round(np.linspace(0, 1, 70), 4)[:32], atol=1e-4)


def test_missing_column_is_named(tmp_path, process):
    def rename(frame):
        frame["LIT101_typo"] = frame.pop("LIT101")

    path = write_input(tmp_path / "x.csv", process, edit=rename)
    with pytest.raises(ArproError, match=r"missing column 'LIT101'") as info:
        process.read_input(path)
    assert "\n" not in str(info.value)


def test_non_numeric_cell_is_named(tmp_path, process):
    def poison(frame):
        frame["PIT201"][6] = "oops"

    with pytest.raises(ArproError, match=r"column 'PIT201' has a non-numeric value 'oops' in data row 7$"):
        process.read_input(write_input(tmp_path / "x.csv", process, edit=poison))


def test_run_of_nan_is_named(tmp_path, process):
    def gap(frame):
        for i in range(10, 15):
            frame["FIT101"][i] = ""

    with pytest.raises(ArproError, match=r"column 'FIT101' is empty .* in data rows 11-15 \(a run of 5\)"):
        process.read_input(write_input(tmp_path / "x.csv", process, edit=gap))
    ds = dataset("process", fill_nan="ffill", **SMALL)
    assert torch.isfinite(ds.read_input(write_input(tmp_path / "y.csv", ds, edit=gap)).x).all()


def test_too_few_rows(tmp_path, process):
    with pytest.raises(ArproError, match=r"10 data rows, fewer than one window of 32 rows"):
        process.read_input(write_input(tmp_path / "x.csv", process, rows=10))


def test_feature_count_differs_from_the_models(tmp_path, process):
    with pytest.raises(ArproError, match=r"32 feature columns, but the models of process were trained on 33 \(missing 'AIT301'\)"):
        process.read_input(write_input(tmp_path / "x.csv", process, drop="AIT301"))
    with pytest.raises(ArproError, match=r"34 feature columns, .*unexpected 'spare'"):
        process.read_input(write_input(tmp_path / "y.csv", process, extra="spare"))


def test_ts_csv_finds_the_label_and_excludes_columns(tmp_path):
    n = 200
    values = _signals(n, 3, 0)
    labels = np.zeros(n, dtype=int)
    labels[150:160] = 1
    path = write_series(tmp_path / "series.csv", ",", time=range(n), a=values[:, 0], b=values[:, 1],
                        run_id=[i // 50 for i in range(n)], Attack=labels)
    ds = dataset("ts-csv", path, exclude_columns="run_id", window=16, stride=4)
    assert ds.columns == ["a", "b"]  # "Attack" found as the label, run_id left out
    assert int(ds.test().labels.sum()) > 0
    with pytest.raises(ArproError, match="exclude_columns names 'nosuch'"):
        dataset("ts-csv", path, exclude_columns="nosuch", window=16).train()


def test_ts_csv_never_takes_an_annotation_of_the_labels_for_a_feature(tmp_path, capsys):
    """SKAB's files carry "changepoint" (1 where an anomaly starts) beside "anomaly": a detector
    given it as a feature would read the answer, so it is left out, with a note."""
    n = 200
    values = _signals(n, 2, 0)
    labels = np.zeros(n, dtype=int)
    labels[150:160] = 1
    starts = np.zeros(n, dtype=int)
    starts[150] = 1
    path = write_series(tmp_path / "series.csv", ";", datetime=range(n), a=values[:, 0], b=values[:, 1],
                        anomaly=labels, changepoint=starts)
    ds = dataset("ts-csv", path, window=16, stride=4)
    assert ds.columns == ["a", "b"]
    assert int(ds.test().labels.sum()) > 0  # "anomaly" is the label, not "changepoint"
    assert "'changepoint' annotates the labels" in capsys.readouterr().err
    assert ds.read_input(path).x.shape[-1] == 2  # a user's file may carry it too


def test_ts_csv_warns_when_test_data_lies_far_outside_training(tmp_path, capsys):
    n = 200
    values = _signals(n, 2, 0)
    values[100:, 1] += 1000.0  # a sensor that changed units halfway through
    path = write_series(tmp_path / "series.csv", ",", a=values[:, 0], b=values[:, 1])
    dataset("ts-csv", path, window=16, stride=4).train()
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "far outside the normal training range on b (" in err and " a (" not in err


# -- ts-csv: a folder of experiment files -------------------------------------------------------


def write_experiments(root: Path, count: int = 3, n: int = 60, fault_at: int = 40) -> Path:
    """``count`` experiment files, each normal for ``fault_at`` rows and then faulty, plus one normal
    file without a label column."""
    root.mkdir()
    for e in range(count):
        values = _signals(n, 2, e) + 10 * e  # each experiment at its own level: a straddling window would mix them
        labels = (np.arange(n) >= fault_at).astype(int)
        write_series(root / f"run{e}.csv", ",", time=range(n), a=values[:, 0], b=values[:, 1], label=labels)
    values = _signals(n, 2, 9)
    write_series(root / "normal.csv", ",", time=range(n), a=values[:, 0], b=values[:, 1])  # no label column
    return root


def test_ts_csv_folder_splits_each_file_and_no_window_straddles_two(tmp_path):
    root = write_experiments(tmp_path / "runs")
    ds = dataset("ts-csv", root, train_rows=30, window=8, stride=4, test_stride=4)
    rows = ds._data["rows"]
    # train: the 30-row heads of run0..2 and all 60 rows of normal.csv (10% of them held out for validation)
    assert len(rows["train"]) + len(rows["validation"]) == 3 * 30 + 60
    assert len(rows["test"]) == 3 * 30 and rows["test"].labels.sum() == 3 * 20
    assert rows["test"].starts == [0, 30, 60]
    assert len(ds.train()) and len(ds.validation()) and len(ds.test())
    # each window holds consecutive rows of one file: 7 windows per 30-row tail (22 if they straddled)
    test = ds.test()
    assert len(test) == 3 * 7
    for window_id, x in zip(test.ids, test.x):
        run, first = window_id.split("@")[1].split(":")
        values = pd.read_csv(root / f"{run}.csv")[["a", "b"]].to_numpy()[int(first) : int(first) + 8]
        assert len(values) == 8 and np.allclose(x.numpy(), ds.standardise(values), atol=1e-4)
    assert sorted({i.split("@")[1].split(":")[0] for i in test.ids}) == ["run0", "run1", "run2"]
    assert int(ds.train().labels.sum()) == 0


def test_ts_csv_reads_subfolders_of_experiments_as_skab_lays_them_out(tmp_path):
    """SKAB: anomaly-free/anomaly-free.csv (no label column) beside valve1/0.csv, valve2/0.csv, ... :
    a folder without CSV files of its own is read through its subfolders, and the ids name them."""
    root = tmp_path / "skab"
    root.mkdir()
    write_experiments(root / "valve1", count=2)
    (root / "valve1" / "normal.csv").rename(tmp_path / "normal.csv")
    write_experiments(root / "valve2", count=1)
    (root / "valve2" / "normal.csv").unlink()
    (root / "anomaly-free").mkdir()
    (tmp_path / "normal.csv").rename(root / "anomaly-free" / "anomaly-free.csv")
    ds = dataset("ts-csv", root, window=8, stride=4, test_stride=4)
    rows = ds._data["rows"]
    assert len(rows["train"]) + len(rows["validation"]) == 60  # the normal recording alone trains
    assert len(rows["test"]) == 3 * 60 and rows["test"].starts == [0, 60, 120]  # every labelled file tests
    names = sorted({i.split("@")[1].rsplit(":", 1)[0] for i in ds.test().ids})
    assert names == ["valve1/run0", "valve1/run1", "valve2/run0"]  # run0 twice, told apart by its folder
    assert sorted(set(ds.test().kinds)) == ["normal", "valve1", "valve2"]  # each anomaly's kind: its folder
    assert len(ds.test()) == 3 * 14  # 14 windows per 60-row file: none straddles two files
    with pytest.raises(ArproError, match="no CSV files in this folder or its subfolders"):
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        dataset("ts-csv", tmp_path / "empty", window=8).train()


def test_ts_csv_folder_train_fraction_and_refusals(tmp_path):
    root = write_experiments(tmp_path / "runs")
    ds = dataset("ts-csv", root, train_fraction=0.25, window=8, stride=4)
    assert len(ds._data["rows"]["test"]) == 3 * 45
    labelled_only = write_experiments(tmp_path / "labelled-only", count=2)
    (labelled_only / "normal.csv").unlink()
    with pytest.raises(ArproError, match="no training rows"):
        dataset("ts-csv", labelled_only, window=8).train()
    with pytest.raises(ArproError, match="train_rows or train_fraction, not both"):
        dataset("ts-csv", root, train_rows=10, train_fraction=0.5, window=8).train()
    with pytest.raises(ArproError, match="train_rows must be a whole number"):
        dataset("ts-csv", root, train_rows=-3, window=8).train()
    with pytest.raises(ArproError, match="has no option 'train_row'"):
        from arpro.io.run_spec import load_dataset

        load_dataset("ts-csv", root, domain="timeseries", train_row=10)


def test_ts_csv_folder_warns_about_anomalous_rows_in_a_training_head(tmp_path, capsys):
    root = write_experiments(tmp_path / "runs", fault_at=20)
    ds = dataset("ts-csv", root, train_rows=30, window=8, stride=4)
    assert int(ds.train().labels.sum()) == 0  # the windows with faulty rows are left out
    err = capsys.readouterr().err
    assert "run0.csv: 10 anomalous rows in its first 30 (training) rows" in err


# -- ts-csv: a training file or folder beside a test folder (TEP, SKAB), the time index, kinds ----------


def write_runs(root: Path, runs: int = 3, n: int = 60, fault_at: int = 20, train_rows: int | None = 120) -> Path:
    """TEP's layout in small: ``train.csv`` (normal, a ``label`` column of zeros) beside ``test/d00.csv`` (normal
    throughout), ``test/d01.csv``, ... (faulty from row ``fault_at``), every file with a ``sample`` index column."""
    (root / "test").mkdir(parents=True)
    if train_rows:
        values = _signals(train_rows, 2, 0)
        write_series(root / "train.csv", ",", sample=range(train_rows), a=values[:, 0], b=values[:, 1],
                     label=[0] * train_rows)
    for run in range(runs):
        values = _signals(n, 2, run + 1)
        labels = (np.arange(n) >= fault_at).astype(int) * (run > 0)
        write_series(root / "test" / f"d{run:02d}.csv", ",", sample=range(n), a=values[:, 0], b=values[:, 1],
                     label=labels)
    return root


def test_ts_csv_reads_a_training_file_beside_a_test_folder_and_takes_the_index_column_for_time(tmp_path, capsys):
    root = write_runs(tmp_path / "tep")
    ds = dataset("ts-csv", root, window=8, stride=4, test_stride=4)
    assert ds.columns == ["a", "b"]  # 'sample' counts the rows: the time index, not a sensor
    err = capsys.readouterr().err
    assert err.count("note: ts-csv: column 'sample' of train.csv") == 1 and "time index" in err
    rows = ds._data["rows"]
    assert len(rows["train"]) + len(rows["validation"]) == 120 and len(rows["test"]) == 3 * 60
    test = ds.test()
    assert test.ids[0] == "test@d00:0" and "test@d01:20" in test.ids  # ids name the run and its sample
    assert set(test.kinds) == {"normal", "d01", "d02"}  # kinds from the runs' file names
    assert all((kind == "normal") == (label == 0) for kind, label in zip(test.kinds, test.labels.tolist()))
    batch = ds.read_input(root / "test" / "d01.csv")  # a user's file with the same index column
    assert batch.x.shape[1:] == (8, 2) and batch.meta["times"][:2] == ["0", "1"]


def test_ts_csv_validation_windows_overlap_until_the_tnr_threshold_has_enough(tmp_path, capsys):
    root = write_runs(tmp_path / "tep", train_rows=300)  # 30 held-out rows: 7 windows of 8 every 4 rows
    ds = dataset("ts-csv", root, window=8, stride=4)
    assert ds.validation_stride() == 1 and len(ds.validation()) == 23
    assert "validation windows every 1 rows, not every 4" in capsys.readouterr().err
    roomy = dataset("ts-csv", write_runs(tmp_path / "roomy", train_rows=1000), window=8, stride=4)
    assert roomy.validation_stride() == 4 and len(roomy.validation()) >= 19  # enough already: stride kept


def test_ts_csv_a_folder_of_runs_trains_on_their_heads_and_names_the_layout_beside_it(tmp_path):
    root = write_runs(tmp_path / "tep")
    ds = dataset("ts-csv", root / "test", train_rows=20, window=8, stride=4, test_stride=4)
    assert ds.columns == ["a", "b"] and sorted(set(ds.test().kinds)) == ["d01", "d02", "normal"]
    with pytest.raises(ArproError) as error:
        dataset("ts-csv", root / "test", window=8).train()
    message = str(error.value)
    assert "no training rows" in message and "(in d00.csv it is 0 throughout)" in message
    assert f"--data-root {root}, where train.csv trains and test/ tests" in message


def test_ts_csv_anomaly_free_folder_beside_a_test_folder_and_kinds_from_subfolders(tmp_path):
    root = write_runs(tmp_path / "bed", train_rows=None)
    (root / "anomaly-free").mkdir()
    values = _signals(200, 2, 7)
    write_series(root / "anomaly-free" / "free.csv", ",", datetime=pd.date_range("2024-01-01", periods=200, freq="s"),
                 a=values[:, 0], b=values[:, 1])
    for run, valve in ((1, "valve1"), (2, "valve2")):
        (root / "test" / valve).mkdir()
        (root / "test" / f"d{run:02d}.csv").rename(root / "test" / valve / "0.csv")
    (root / "test" / "d00.csv").unlink()
    ds = dataset("ts-csv", root, window=8, stride=4, test_stride=4)
    assert ds.columns == ["a", "b"] and len(ds._data["rows"]["train"]) + len(ds._data["rows"]["validation"]) == 200
    assert sorted(set(ds.test().kinds)) == ["normal", "valve1", "valve2"]
    assert "test@valve2/0:24" in ds.test().ids  # ids name the subfolder


def test_ts_csv_kinds_from_a_column(tmp_path):
    n = 200
    values = _signals(n, 2, 0)
    labels = np.zeros(n, dtype=int)
    labels[120:130], labels[160:170] = 1, 1
    fault = np.where(np.arange(n) < 150, "leak", "stuck valve")
    when = pd.date_range("2024-01-01", periods=n, freq="min").strftime("%Y-%m-%d %H:%M")
    path = write_series(tmp_path / "series.csv", ",", stamp=when, a=values[:, 0], b=values[:, 1], label=labels,
                        fault=fault)
    ds = dataset("ts-csv", path, kind_column="fault", window=10, stride=5, test_stride=10)
    assert ds.columns == ["a", "b"]  # the kind column is no feature, and 'stamp' holds date-times: the time
    assert sorted(set(ds.test().kinds)) == ["leak", "normal", "stuck valve"]
    assert dataset("ts-csv", path, exclude_columns="fault", window=10).test().kinds == []  # no kinds by default


def test_ts_csv_layout_mistakes_are_one_clear_line(tmp_path):
    root = write_runs(tmp_path / "tep")
    with pytest.raises(ArproError, match="kind_column names 'fault', which is not a column of the file"):
        dataset("ts-csv", root, kind_column="fault", window=8).train()
    with pytest.raises(ArproError, match="train.csv and test, which are split already"):
        dataset("ts-csv", root, train_rows=20, window=8).train()
    (root / "train").mkdir()
    with pytest.raises(ArproError, match="both train.csv and train hold training data; keep one of them"):
        dataset("ts-csv", root, window=8).train()
    (root / "train").rmdir()
    values = _signals(60, 3, 5)
    write_series(root / "test" / "d03.csv", ",", sample=range(60), a=values[:, 0], b=values[:, 1], c=values[:, 2],
                 label=[0] * 60)
    with pytest.raises(ArproError, match=r"d03.csv: its feature columns \['a', 'b', 'c'\] differ from those of"):
        dataset("ts-csv", root, window=8).train()
    empty = write_runs(tmp_path / "empty", runs=0)
    with pytest.raises(ArproError, match="test: no CSV files in this folder or its subfolders"):
        dataset("ts-csv", empty, window=8).train()


def test_index_columns_are_found_by_their_content():
    from arpro_timeseries.csvio import index_column

    frame = pd.DataFrame({"flow": [0.5, 0.7, 0.6], "n": [3, 7, 12], "t": ["2024-01-01 10:00", "2024-01-01 10:01", "x"]})
    assert index_column(frame) == ("n", "whole numbers that rise in every row")
    assert index_column(frame[["flow", "t"]]) is None  # a float sensor, and a column with a cell that is no date-time
    when = pd.DataFrame({"when": ["2024-01-01 10:00", "2024-01-01 10:00", "2024-01-01 10:01"], "on": [1, 1, 0]})
    assert index_column(when) == ("when", "date-times that never fall")
    assert index_column(pd.DataFrame({"n": [1, 3, 2]})) is None


def _runs(root, test_time, n_test=300, window_rows=400):
    """A train.csv beside test/run.csv whose time column is ``test_time``."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    pd.DataFrame({"time": np.arange(window_rows), **{c: rng.normal(size=window_rows) for c in "abc"}}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"time": test_time, **{c: rng.normal(size=n_test) for c in "abc"},
                  "label": [0] * (n_test - 100) + [1] * 100}).to_csv(root / "test" / "run.csv", index=False)
    return root


@pytest.mark.parametrize("times, fragment", [
    (np.r_[np.arange(150), np.arange(150)], "goes backwards at data row 151 ('149' then '0')"),
    (np.r_[np.arange(100), np.arange(99, 299)], "repeats a time at data row 101"),
])
def test_ts_csv_refuses_time_that_goes_backwards_or_repeats(tmp_path, times, fragment):
    with pytest.raises(ArproError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        dataset("ts-csv", _runs(tmp_path, times)).test()


def test_ts_csv_notes_gaps_and_files_shorter_than_a_window(tmp_path, capsys):
    gappy = dataset("ts-csv", _runs(tmp_path / "g", np.r_[np.arange(100), np.arange(200, 400)]))
    assert len(gappy.test()) == 3
    assert "has 1 gap(s), the largest 101 usual steps before data row 101" in capsys.readouterr().err
    short = dataset("ts-csv", _runs(tmp_path / "s", np.arange(120), n_test=120), window=150)
    assert len(short.test()) == 0
    assert "run.csv has 120 rows, fewer than a window (150): it gives no window" in capsys.readouterr().err
