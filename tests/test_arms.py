"""The arms run as one stacked batch: each arm's repair is bit-identical to running that arm alone."""

from __future__ import annotations

import json

import pytest

import arpro
from arpro.algorithm.settings import parse_arms
from arpro.plugin_api import registry
from arpro.testing import check_stacked_arms


@pytest.fixture(scope="module")
def wide_repairer(table):
    """256 wide, as the bundled one: MKL computes a 256-wide layer's rows differently at 8 rows than at 24."""
    repairer = registry.get("repairer", "mlp-ddpm")(input_shape=[30], width=256, depth=1, num_train_timesteps=1000)
    repairer.fit(table.train().x, steps=20, progress=False)
    return repairer.eval()


@pytest.mark.parametrize("scheduler,start,samples", [("ddim", "sdedit", 1), ("ddpm", "noise", 3), ("dpm++", "sdedit", 2)])
def test_tabular_arms_stacked_equal_each_arm_alone(gaussian, wide_repairer, table, scheduler, start, samples):
    settings = arpro.RepairSettings(steps=10, scheduler=scheduler, start=start, samples=samples)
    x = table.test().anomalous().x[:8]
    check_stacked_arms(x, gaussian, wide_repairer, settings)
    check_stacked_arms(x, gaussian, wide_repairer, settings, arms=("baseline", "guided"))


def test_tabular_arms_with_constraints_stacked_equal_alone(table, gaussian, tiny_repairer, anomalous_rows):
    """Frozen columns after infill_stop and per-input bounds take the stacked path too."""
    settings = arpro.RepairSettings(steps=10, infill_stop=0.3, samples=2)
    check_stacked_arms(anomalous_rows, gaussian, tiny_repairer, settings, dataset=table,
                             properties=[("+immutable", {"columns": table.feature_names()[:5]}), "+range"])


def test_guidance_costs_the_detector_only_on_guided_rows(gaussian, tiny_repairer, anomalous_rows, monkeypatch):
    seen: list[int] = []
    decompose = type(gaussian).decompose

    def counting(self, x):
        if x.requires_grad:
            seen.append(x.shape[0])
        return decompose(self, x)

    monkeypatch.setattr(type(gaussian), "decompose", counting)
    arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=arpro.RepairSettings(steps=4, samples=2), progress=False)
    probe, *steps = seen  # check_guidance probes once at x_bad's first input; then each step sees the guided arm's K draws alone
    assert probe == 1 and steps and set(steps) == {2 * len(anomalous_rows)}


def test_arms_option_parses_and_refuses():
    assert parse_arms("guided, baseline") == ("baseline", "guided")
    for bad in ("", "guided,nope", ","):
        with pytest.raises(arpro.ArproError, match="--arms"):
            parse_arms(bad)


@pytest.mark.slow
def test_cli_repair_runs_the_guided_arm_by_default_and_the_arms_asked_for(tmp_path):
    from arpro.testing import run_cli

    common = ["repair", "--detector", "gaussian", "--count", "2", "--steps", "4", "--quiet"]
    default = run_cli(*common, "--out", str(tmp_path / "default"))
    assert default.returncode == 0, default.stderr
    assert set(json.loads((tmp_path / "default" / "report.json").read_text())["inputs"][0]) >= {"guided"}
    assert "infill" not in json.loads((tmp_path / "default" / "report.json").read_text())["inputs"][0]
    both = run_cli(*common, "--arms", "infill,guided", "--out", str(tmp_path / "both"))
    assert both.returncode == 0, both.stderr
    record = json.loads((tmp_path / "both" / "report.json").read_text())["inputs"][0]
    assert "infill" in record and "guided" in record and "baseline" not in record
    assert "seconds (one batch)" in " ".join(both.stdout.split())  # rich may wrap the label
    bad = run_cli(*common, "--arms", "guided,best", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and not (tmp_path / "bad").exists()

def test_small_arms_share_one_padded_denoiser_call(gaussian, wide_repairer, table, monkeypatch):
    """The MLP repairer's min_batch (32) packs three arms of 8 rows into one call per step, every call of 32 rows."""
    calls: list[int] = []
    forward = type(wide_repairer).forward
    monkeypatch.setattr(type(wide_repairer), "forward", lambda self, x_t, t: calls.append(len(x_t)) or forward(self, x_t, t))
    x = table.test().anomalous().x[:8]
    arpro.repair(x, gaussian, wide_repairer, settings=arpro.RepairSettings(steps=5, start="noise"), seed=5, progress=False)
    assert calls == [32] * 5  # three arms of 8 rows, one call per step
    calls.clear()
    arpro.repair(table.test().anomalous().x[:40], gaussian, wide_repairer, settings=arpro.RepairSettings(steps=5, start="noise"),
                 arms=("infill", "guided"), seed=5, progress=False)
    assert calls == [40, 40] * 5  # arms of more rows than min_batch: a call per arm, unpadded
