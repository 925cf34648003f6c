"""Repairing time-series windows: the bundled demo path, a user's CSV, and the repair invariants."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import arpro
from arpro.plugin_api import registry
from arpro.testing import check_stacked_arms
from arpro_timeseries.bundled import CHECKPOINTS

TINY = dict(train_steps=1200, validation_steps=300, test_steps=1500, window=32, stride=8, test_stride=16, fit_steps=40)
BUNDLED = [CHECKPOINTS / f"{n}-process.safetensors" for n in ("gpt2", "llama2", "diffusion-ts")]


@pytest.fixture(scope="module")
def process():
    return registry.get("dataset", "process")(root=None, category=None, **TINY)


@pytest.fixture(scope="module")
def models(process):
    torch.manual_seed(0)
    detector = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1)
    detector.fit(process.train().x, seed=0, progress=False)
    repairer = registry.get("repairer", "diffusion-ts").for_dataset(process, width=32, heads=2, encoder_layers=1, decoder_layers=1)
    repairer.fit(process.train().x, seed=0, progress=False, steps=40)
    return detector.eval(), repairer.eval()


def test_bundled_checkpoints_are_small_and_offered_for_the_embedded_dataset():
    assert all(p.is_file() for p in BUNDLED), "a bundled checkpoint is missing (scripts/train_bundled.py writes them)"
    assert sum(p.stat().st_size for p in BUNDLED) <= 25e6
    default = registry.get("dataset", "process")()
    for path in BUNDLED:
        name = path.name.removesuffix("-process.safetensors")
        kind = "repairer" if name == "diffusion-ts" else "detector"
        assert registry.get(kind, name).bundled_checkpoint(default) == path
        # a dataset with other windows (or a test's own sizes) is not offered them
        assert registry.get(kind, name).bundled_checkpoint(registry.get("dataset", "process")(window=32)) is None


@pytest.mark.slow
def test_cli_demo_repairs_a_bundled_window(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "arpro.cli", "repair", "--detector", "gpt2", "--arms", "baseline,infill,guided", "--out", str(out), "--count", "2", "--steps", "10", "--mask", "train", "--quiet", "--figure"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["repairer"] == "diffusion-ts" and len(report["inputs"]) == 2
    # the flag overrides the detector's repair_defaults; the defaults it leaves alone still apply
    assert report["settings"]["mask"] == "train" and report["settings"]["guide_on"] == "x0"
    assert report["settings"]["infill_stop"] == 0.0  # the default in-fills to the last step
    assert set(report["inputs"][0]) >= {"baseline", "infill", "guided"}
    table = pd.read_csv(out / "repaired.csv")
    assert set(table["arm"]) == {"input", "baseline", "infill", "guided"}
    assert len(table) == 2 * 4 * 64
    omega = pd.read_csv(out / "omega.csv")
    columns = [c for c in omega.columns if c not in ("id", "step")]
    first = table[table["id"] == table["id"].iloc[0]]
    mask = omega[omega["id"] == table["id"].iloc[0]][columns].to_numpy() == 0
    guided = first[first["arm"] == "guided"][columns].to_numpy()
    original = first[first["arm"] == "input"][columns].to_numpy()
    assert np.allclose(guided[mask], original[mask], rtol=1e-5, atol=1e-5)  # in-filling keeps omega_bar
    assert len(list(out.glob("repair-*.png"))) == 2


def test_repair_keeps_omega_bar_and_is_deterministic(models, process):
    detector, repairer = models
    x = process.test().anomalous().x[:3]
    settings = arpro.RepairSettings(steps=10)
    a = arpro.repair(x, detector, repairer, settings=settings, seed=3, progress=False)
    b = arpro.repair(x, detector, repairer, settings=settings, seed=3, progress=False)
    keep = a.omega_input == 0
    for arm in ("infill", "guided"):
        assert torch.equal(a.arms[arm].x_fix[keep], x[keep])
        assert torch.equal(a.arms[arm].x_fix, b.arms[arm].x_fix)
    assert a.omega.shape == x.shape and 0 < a.omega.mean() < 1


def test_user_csv_round_trip_with_figures(models, process, tmp_path):
    detector, repairer = models
    rows = process._data["rows"]["test"]
    first_attack = int(np.argmax(rows.labels))
    start = max(0, first_attack - 10)
    frame = pd.DataFrame(rows.values[start : start + 40], columns=process.columns)
    frame.insert(0, "timestamp", [f"2024-01-01 00:{i // 60:02d}:{i % 60:02d}" for i in range(40)])
    path = tmp_path / "user.csv"
    frame.to_csv(path, index=False)
    batch = process.read_input(path)
    assert batch.x.shape == (2, 32, len(process.columns))
    result = arpro.repair(batch.x, detector, repairer, settings=arpro.RepairSettings(steps=8), ids=batch.ids, progress=False)
    written = process.write_repairs(result, tmp_path / "out", batch) + process.draw_repairs(result, tmp_path / "out", batch)
    names = sorted(p.name for p in written)
    assert "repaired.csv" in names and "omega.csv" in names and sum(n.endswith(".png") for n in names) == 2
    table = pd.read_csv(tmp_path / "out" / "repaired.csv")
    original = table[(table["arm"] == "input") & (table["id"] == batch.ids[0])]
    assert original["time"].iloc[0] == "2024-01-01 00:00:00"  # the user's time stamps are carried
    assert np.allclose(original[process.columns].to_numpy(), frame[process.columns].to_numpy()[:32], rtol=1e-4, atol=1e-3)


def test_figure_shades_the_anomalous_span():
    from arpro_timeseries.figure import chosen_features, spans

    omega = np.zeros((10, 4), dtype=bool)
    omega[2:5, 3] = True
    omega[7, 3] = True
    omega[6, 1] = True
    assert spans(omega[:, 3]) == [(2, 4), (7, 7)]
    assert chosen_features(omega, k=2) == [3, 1]


def test_arms_stacked_equal_each_arm_alone(models, process):
    detector, repairer = models
    check_stacked_arms(process.test().anomalous().x[:3], detector, repairer, arpro.RepairSettings(steps=6, samples=2))

def changes_where(result, keep):
    """The largest change each arm made where ``keep`` is set."""
    return {arm: (a.x_fix - result.x_bad).abs()[keep].max().item() for arm, a in result.arms.items()}


def test_timeseries_immutable_sensors_and_range():
    process = registry.get("dataset", "process")(root=None, category=None, train_steps=600, validation_steps=100,
                                                test_steps=800, window=16, stride=8, test_stride=16, fit_steps=10)
    torch.manual_seed(0)
    detector = registry.get("detector", "gpt2").for_dataset(process, hidden=16, intermediate=32, n_head=2, n_layer=1)
    detector.fit(process.train().x, seed=0, progress=False)
    repairer = registry.get("repairer", "diffusion-ts").for_dataset(process, width=16, heads=2, encoder_layers=1, decoder_layers=1)
    repairer.fit(process.train().x, seed=0, progress=False, steps=10)
    x = process.test().anomalous().x[:3]
    sensors = process.feature_names()[:2]
    result = arpro.repair(x, detector.eval(), repairer.eval(), dataset=process, progress=False, mask="top",
                          properties=[("+immutable", {"columns": sensors}), "+range"],
                          settings=arpro.RepairSettings(steps=8, infill_stop=0.2, mask_quantile=0.5))
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[..., :2] = True
    changes = changes_where(result, keep)
    assert all(changes[arm] == 0.0 for arm in ("infill", "guided")) and changes["baseline"] > 0
    train = process.train().x
    low, high = train.amin(0), train.amax(0)
    for name, arm in result.arms.items():
        fixed = ~keep | ((x >= low) & (x <= high))  # immutable wins where x_bad itself is out of range
        assert ((arm.x_fix >= low) & (arm.x_fix <= high))[fixed].all(), name
