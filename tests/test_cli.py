"""The command line as a user meets it: the demo path, and one test per kind of bad input."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from arpro.testing import run_cli

from arpro.io import checkpoint
from arpro.plugin_api import registry

FAST = ["--steps", "20", "--count", "4", "--quiet"]


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory):
    """Three malignant rows of the embedded table, as a user would hand them in."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    path = tmp_path_factory.mktemp("input") / "rows.csv"
    data.data[data.target == 0].head(3).to_csv(path, index=False)
    return path


def test_shipped_breast_cancer_table_is_scikit_learns(table):
    from sklearn.datasets import load_breast_cancer

    source = load_breast_cancer(as_frame=True)
    values, columns, labels = table.table()
    assert (values == source.data.to_numpy(dtype="float32")).all()  # value for value, in float32
    assert columns == list(source.data.columns)
    assert (labels == (source.target.to_numpy() == 0)).all()


@pytest.mark.slow
def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("arpro ")


@pytest.mark.slow
def test_list_plugins_json_names_distributions():
    proc = run_cli("list-plugins", "--json")
    entries = {(e["kind"], e["name"]): e for e in json.loads(proc.stdout)}
    assert entries[("detector", "gaussian")]["distribution"] == "arpro-tabular"
    assert entries[("property", "p1")]["distribution"] == "arpro"
    assert all({"kind", "name", "distribution", "version", "description"} <= set(e) for e in entries.values())


@pytest.mark.slow
def test_repair_on_the_embedded_default(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("repair", "--detector", "gaussian", "--arms", "baseline,infill,guided", "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert len(report["inputs"]) == 4
    assert report["settings"]["repairer"] == "mlp-ddpm"
    assert {"baseline", "infill", "guided"} <= set(report["inputs"][0])
    repaired = pd.read_csv(out / "repaired.csv")
    assert set(repaired["arm"]) == {"input", "baseline", "infill", "guided"}
    assert not (out / "repair.png").exists()  # drawn only when asked
    assert "(--figure draws repair.png)" in " ".join(proc.stdout.split())  # rich wraps long lines
    assert "P1 Ms" in proc.stdout and "guided" in proc.stdout


@pytest.mark.slow
def test_repair_draws_the_figure_when_asked(tmp_path):
    out = tmp_path / "drawn"
    proc = run_cli("repair", "--detector", "gaussian", "--out", str(out), "--figure", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert (out / "repair.png").stat().st_size > 10_000 and (out / "repaired.csv").is_file()


@pytest.mark.slow
def test_repair_of_a_user_csv_writes_table_units(tmp_path, rows_csv):
    out = tmp_path / "user"
    proc = run_cli("repair", "--detector", "gaussian", "--input", str(rows_csv), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    repaired = pd.read_csv(out / "repaired.csv")
    original = pd.read_csv(rows_csv)
    inputs = repaired[repaired["arm"] == "input"].drop(columns=["id", "arm"]).to_numpy()
    assert np.allclose(inputs, original.to_numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_unknown_plugin_suggests_close_names(tmp_path):
    proc = run_cli("repair", "--detector", "gausian", "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "unknown detector 'gausian'", "did you mean 'gaussian'")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_input_with_missing_columns(tmp_path, rows_csv):
    bad = tmp_path / "narrow.csv"
    pd.read_csv(rows_csv).iloc[:, :10].to_csv(bad, index=False)
    proc = run_cli("repair", "--detector", "gaussian", "--input", str(bad), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "missing column", "worst")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_input_with_nan(tmp_path, rows_csv):
    frame = pd.read_csv(rows_csv)
    frame.iloc[1, 3] = np.nan
    bad = tmp_path / "nan.csv"
    frame.to_csv(bad, index=False)
    proc = run_cli("repair", "--detector", "gaussian", "--input", str(bad), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "empty in data row 2", repr(frame.columns[3]))


@pytest.mark.slow
def test_input_with_inf(tmp_path, rows_csv):
    frame = pd.read_csv(rows_csv)
    frame.iloc[0, 0] = np.inf
    bad = tmp_path / "inf.csv"
    frame.to_csv(bad, index=False)
    proc = run_cli("repair", "--detector", "gaussian", "--input", str(bad), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "infinite in data row 1")


@pytest.mark.slow
def test_input_with_non_numeric_cells(tmp_path, rows_csv):
    frame = pd.read_csv(rows_csv).astype(object)
    frame.iloc[2, 5] = "n/a?"
    bad = tmp_path / "text.csv"
    frame.to_csv(bad, index=False)
    proc = run_cli("repair", "--detector", "gaussian", "--input", str(bad), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "non-numeric value 'n/a?'", "data row 3")


@pytest.mark.slow
def test_training_csv_with_non_numeric_column(tmp_path):
    bad = tmp_path / "train.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"], "label": [0, 0, 1]}).to_csv(bad, index=False)
    proc = run_cli("train", "detector", "--detector", "gaussian", "--dataset", "csv", "--data-root", str(bad), "--out", str(tmp_path / "d.safetensors"))
    assert_clean_error(proc, "column 'b'", "non-numeric")


@pytest.mark.slow
def test_checkpoint_of_another_detector(tmp_path, table):
    path = tmp_path / "ae.safetensors"
    model = registry.get("detector", "autoencoder").for_dataset(table)
    checkpoint.save(model, path)
    proc = run_cli("repair", "--detector", "gaussian", "--detector-checkpoint", str(path), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "checkpoint of detector 'autoencoder', not 'gaussian'")


@pytest.mark.slow
def test_truncated_checkpoint(tmp_path, gaussian):
    path = tmp_path / "g.safetensors"
    checkpoint.save(gaussian, path)
    path.write_bytes(path.read_bytes()[:-40])
    proc = run_cli("repair", "--detector", "gaussian", "--detector-checkpoint", str(path), "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "not a readable safetensors file")


@pytest.mark.slow
def test_output_directory_with_results_is_kept(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("precious")
    proc = run_cli("repair", "--detector", "gaussian", "--out", str(out), *FAST)
    assert_clean_error(proc, "already holds results", "--overwrite")
    assert (out / "report.json").read_text() == "precious"
    proc = run_cli("repair", "--detector", "gaussian", "--out", str(out), "--overwrite", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["inputs"]


@pytest.mark.slow
def test_failed_repair_leaves_no_partial_output(tmp_path):
    proc = run_cli("repair", "--detector", "gaussian", "--mask", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o"), *FAST)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("fill,expected", [(0.0, "omega is empty"), (1.0, "covers every feature")])
def test_all_zero_and_all_one_masks(tmp_path, fill, expected):
    mask = tmp_path / "mask.npy"
    np.save(mask, np.full((30,), fill, dtype=np.float32))
    out = tmp_path / "o"
    proc = run_cli("repair", "--detector", "gaussian", "--mask", str(mask), "--arms", "baseline,infill,guided", "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    report = json.loads((out / "report.json").read_text())
    for record in report["inputs"]:
        for arm in ("baseline", "infill", "guided"):
            assert all(np.isfinite(v) for v in record[arm]["metrics"].values())


@pytest.mark.slow
def test_bad_weight_syntax(tmp_path):
    proc = run_cli("repair", "--detector", "gaussian", "--weight", "p2:10", "--out", str(tmp_path / "o"))
    assert_clean_error(proc, "--weight expects NAME=NUMBER")


@pytest.mark.slow
def test_train_and_reuse_a_checkpoint(tmp_path):
    ckpt = tmp_path / "g.safetensors"
    proc = run_cli("train", "detector", "--detector", "gaussian", "--out", str(ckpt))
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.read_header(ckpt)["name"] == "gaussian"
    proc = run_cli("repair", "--detector", "gaussian", "--detector-checkpoint", str(ckpt), "--out", str(tmp_path / "o"), *FAST)
    assert proc.returncode == 0, proc.stderr


def test_training_gives_the_same_weights_for_the_same_seed(tmp_path):
    """torch seeds its global generator at random in every process, and models draw their initial
    weights from it: training seeds it first, so the state of the process does not matter."""
    from arpro.workflows.train import train_and_save

    trained = []
    for i, state in enumerate((1, 2)):
        torch.manual_seed(state)  # another process's random start
        train_and_save("repairer", "mlp-ddpm", tmp_path / f"{i}.safetensors", holdout=0.0,
                       model_options={"train_steps": 2, "width": 32, "depth": 1})
        trained.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert trained[0] == trained[1]


@pytest.mark.parametrize("args, expected", [
    (["repair", "--detector", "gaussian", "--out", "x", "--steps", "abc"], "Invalid value for '--steps'"),
    (["repair", "--detector", "gaussian", "--out", "x", "--scheduler", "foo"], "Invalid value for '--scheduler'"),
    (["repair", "--detector", "gaussian"], "Missing option '--out'"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_error_line(args, expected, monkeypatch, capsys, tmp_path):
    from arpro import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["arpro", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err and "--help" in err
    assert not any(tmp_path.iterdir())
