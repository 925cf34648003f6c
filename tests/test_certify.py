"""Best-of-K repairs, the Clopper–Pearson bound and Learn-then-Test (``arpro calibrate``)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import arpro
from arpro.algorithm.best_of import binomial_cdf, choose, clopper_pearson_upper
from arpro.workflows.calibrate import certify, needed_inputs


@pytest.mark.parametrize("violations, n, confidence, expected", [
    (1, 10, 0.95, 0.394163302),  # scipy.stats.beta.ppf(0.95, 2, 9)
    (0, 10, 0.9, 0.205671765),  # 1 - 0.1 ** (1 / 10)
    (7, 100, 0.9, 0.114902817),  # beta.ppf(0.9, 8, 93)
    (5, 5, 0.9, 1.0),
])
def test_clopper_pearson_matches_known_values(violations, n, confidence, expected):
    assert clopper_pearson_upper(violations, n, confidence) == pytest.approx(expected, abs=1e-7)


def test_binomial_tail_matches_a_known_value():
    assert binomial_cdf(3, 50, 0.1) == pytest.approx(0.250293906, abs=1e-9)  # scipy.stats.binom.cdf(3, 50, 0.1)


def test_learn_then_test_certifies_no_setting_when_every_setting_violates():
    level = (1 - 0.9) / 18
    assert not any(certify(v, 106, 0.1, level)[1] for v in (106, 53, 20, 11))
    assert certify(0, 106, 0.1, level)[1] and needed_inputs(0.1, 0.9, 18) == 50
    assert not certify(0, 49, 0.1, level)[1]  # one fewer input than needed: even no violation is not enough


def test_choose_prefers_constraints_then_the_lowest_score():
    score = torch.tensor([[1.0, 5.0], [0.5, 4.0], [2.0, 3.0]])  # [K=3, B=2]
    holds = {"p1": torch.ones(3, 2, dtype=torch.bool),
             "p2": torch.tensor([[True, False], [False, False], [True, True]]),
             "p4": torch.tensor([[True, True], [True, False], [True, True]])}
    chosen, violations = choose(score, holds, torch.zeros(3, 2, dtype=torch.bool))
    assert chosen.tolist() == [0, 2]  # input 0: draw 1 scores lower but breaks p2
    assert violations[:, 1].tolist() == [1, 2, 0]
    chosen, _ = choose(score, {"p2": torch.zeros(3, 2, dtype=torch.bool)}, torch.zeros(3, 2, dtype=torch.bool))
    assert chosen.tolist() == [1, 2]  # nothing feasible: fewest violations (all 1), then the lowest score


def test_best_of_k_returns_the_best_feasible_draw_and_keeps_k1_exact(gaussian, tiny_repairer, anomalous_rows):
    settings = arpro.RepairSettings.for_detector(gaussian, steps=20)
    one = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, progress=False)
    again = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=replace(settings, samples=1), progress=False)
    assert torch.equal(one.arms["guided"].x_fix, again.arms["guided"].x_fix) and one.arms["guided"].draws is None
    four = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=replace(settings, samples=4), progress=False)
    guided = four.arms["guided"]
    draws = guided.draws
    assert draws.x_fix.shape == (4, *anomalous_rows.shape)
    assert torch.allclose(draws.x_fix[0], one.arms["guided"].x_fix, atol=1e-5)  # draw 0 is the one-sample repair
    assert (draws.diversity > 0).all()  # the draws differ
    for i in range(len(anomalous_rows)):
        feasible = [k for k in range(4) if all(draws.holds[p][k, i] for p in ("p2", "p3", "p4"))]
        if feasible:
            assert int(draws.chosen[i]) == min(feasible, key=lambda k: float(draws.score[k, i]))
        assert float(draws.violation_bound[i]) >= float(draws.violation_rate[i])
    assert torch.equal(guided.x_fix, draws.x_fix[draws.chosen, torch.arange(len(anomalous_rows))])


def run_cli_in_process(args, monkeypatch, capsys) -> tuple[int, str]:
    from arpro import cli

    monkeypatch.setattr(sys, "argv", ["arpro", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_calibrate_then_evaluate_on_the_other_inputs(tmp_path, monkeypatch, capsys):
    cal = tmp_path / "calibration.json"
    grid = ["--scale-grid", "1", "--weight-grid", "1", "--samples-grid", "1,2", "--steps", "10", "--quiet"]
    code, err = run_cli_in_process(["calibrate", "--detector", "gaussian", "--out", str(cal), *grid], monkeypatch, capsys)
    assert code == 0, err
    record = json.loads(cal.read_text())
    assert record["n"] == 106 and len(record["grid"]) == 2 and record["chosen"]["samples"] in (1, 2)
    assert all(row["certified"] == (row["p_value"] <= record["level"]) for row in record["grid"])

    out = tmp_path / "eval"
    code, err = run_cli_in_process(["evaluate", "--detector", "gaussian", "--steps", "10", "--quiet", "--out", str(out),
                                    "--calibration", str(cal)], monkeypatch, capsys)
    assert code == 0, err
    ids = [json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(ids) == 212 - 106 and not set(ids) & set(record["calibration_ids"])
    guarantee = json.loads((out / "summary.json").read_text())["guarantee"]
    assert guarantee["n_test"] == 106 and guarantee["within_risk"] == (guarantee["test_violation_rate"] <= 0.1)
    assert "Guarantee (arpro calibrate, Learn-then-Test)" in (out / "tables.md").read_text()


def test_repair_writes_every_draw(tmp_path, monkeypatch, capsys):
    out = tmp_path / "k"
    code, err = run_cli_in_process(["repair", "--detector", "gaussian", "--samples", "3", "--count", "2", "--steps", "10",
                                    "--quiet", "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert load_file(str(out / "samples.safetensors"))["guided"].shape == (3, 2, 30)
    row = json.loads((out / "report.json").read_text())["inputs"][0]["guided"]["samples"]
    assert len(row["draws"]) == 3 and 0 <= row["violation_rate"] <= row["violation_bound"] <= 1


def test_calibration_needs_enough_inputs(tmp_path, monkeypatch, capsys):
    code, err = run_cli_in_process(["calibrate", "--detector", "gaussian", "--out", str(tmp_path / "c.json"),
                                    "--risk", "0.001", "--quiet"], monkeypatch, capsys)
    assert code == 2 and "needs at least 5596" in err and "gives 106" in err
    assert not (tmp_path / "c.json").exists()


def test_hard_constraints_hold_exactly_in_every_draw(table, gaussian, tiny_repairer, anomalous_rows):
    settings = arpro.RepairSettings(steps=10, samples=3)
    properties = [("+immutable", {"columns": table.feature_names()[:10]}), "+range"]
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=properties, settings=settings,
                          dataset=table, progress=False)
    low, high = table.train().x.min(0).values[10:], table.train().x.max(0).values[10:]
    for arm in ("infill", "guided"):
        draws = result.arms[arm].draws.x_fix  # [K, B, D]
        assert (draws[:, :, :10] - anomalous_rows[:, :10]).abs().max().item() == 0.0
        assert result.arms[arm].draws.holds["immutable"].all()
        assert ((draws[:, :, 10:] >= low) & (draws[:, :, 10:] <= high)).all()  # the free columns stay in range


def test_a_weight_given_changes_only_that_lambda_of_the_detectors_defaults():
    class Tuned:  # a detector whose repair_defaults weight two constraints
        name, guidance_scale = "tuned", 1.0
        repair_defaults = {"steps": 7, "weights": {"p2": 100.0, "p4": 100.0}}

    assert arpro.RepairSettings.for_detector(Tuned).weights == {"p2": 100.0, "p4": 100.0}
    given = arpro.RepairSettings.for_detector(Tuned, weights={"p4": 3.0, "p1": 2.0})
    assert given.weights == {"p2": 100.0, "p4": 3.0, "p1": 2.0} and given.steps == 7


def test_mlp_ddpm_predicts_each_sample_as_it_would_alone(tiny_repairer):
    """One embedding per distinct timestep: a sample's output does not depend on the batch's timesteps."""
    x = torch.randn(6, 30, generator=torch.Generator().manual_seed(0))
    mixed = torch.tensor([999, 10, 10, 500, 0, 999])
    with torch.no_grad():
        alone = torch.cat([tiny_repairer(x[i : i + 1], mixed[i : i + 1]) for i in range(6)])
        same = torch.cat([tiny_repairer(x[i : i + 1], torch.tensor([10])) for i in range(6)])
        assert torch.allclose(tiny_repairer(x, mixed), alone, atol=1e-5)
        assert torch.allclose(tiny_repairer(x, torch.full((6,), 10)), same, atol=1e-5)


def test_a_certificate_cannot_be_voided_silently(tmp_path, monkeypatch, capsys):
    cal = tmp_path / "calibration.json"
    grid = ["--scale-grid", "1", "--weight-grid", "1", "--samples-grid", "1", "--steps", "10", "--quiet"]
    assert run_cli_in_process(["calibrate", "--detector", "gaussian", "--out", str(cal), *grid], monkeypatch, capsys)[0] == 0
    evaluate = ["evaluate", "--detector", "gaussian", "--quiet", "--calibration", str(cal)]
    for changed, fragment in ((["--steps", "20"], "--steps 20 (certified with 10) changes the repair"),
                              (["--steps", "10", "--samples", "4"], "--samples is certified by --calibration"),
                              (["--steps", "10", "--guidance-scale", "2"], "--guidance-scale is certified")):
        code, err = run_cli_in_process([*evaluate, *changed, "--out", str(tmp_path / "x")], monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1 and fragment in err, err
        assert not (tmp_path / "x").exists()

    out = tmp_path / "uncertified"
    code, err = run_cli_in_process([*evaluate, "--steps", "20", "--allow-uncertified", "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and "warning: these settings are not the certified ones (--steps 20" in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert "guarantee" not in summary and any(w.startswith("no guarantee") for w in summary["warnings"])
    assert "Guarantee (arpro calibrate" not in (out / "tables.md").read_text()

    import arpro.workflows.evaluate

    real = arpro.workflows.evaluate.check_guarantee  # these repairs all keep P2-P4: make the test split break it half the time
    monkeypatch.setattr(arpro.workflows.evaluate, "check_guarantee",
                        lambda records, calibration: {**real(records, calibration), "test_violation_rate": 0.5,
                                                      "within_risk": False})
    code, err = run_cli_in_process([*evaluate, "--steps", "10", "--out", str(tmp_path / "s")], monkeypatch, capsys)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert code == 0 and "is 0.500, ABOVE the certified risk 0.1" in err
    assert summary["guarantee"]["within_risk"] is False and any("ABOVE" in w for w in summary["warnings"])

    code, err = run_cli_in_process(["repair", "--detector", "gaussian", "--calibration", str(cal), "--steps", "10",
                                    "--count", "2", "--quiet", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    recorded = json.loads((tmp_path / "r" / "report.json").read_text())["calibration"]
    assert code == 0 and recorded["sha256"] == hashlib.sha256(cal.read_bytes()).hexdigest()
    assert recorded["guarantee"].startswith("With probability at least 0.9") and recorded["uncertified"] == []


@pytest.mark.parametrize("tamper", [{"risk": "abc"}, {"risk": 2}, {"chosen": {"guidance_scale": -1}}, {"spec": []},
                                    {"calibration_ids": [1, 2]}, {"chosen": {"guidance_scale": 1, "weights": {},
                                                                             "samples": 10**9}}])
def test_a_tampered_calibration_file_is_one_error(tamper, tmp_path, monkeypatch, capsys):
    record = {"risk": 0.1, "confidence": 0.9, "guarantee": "g", "calibration_ids": [], "spec": {"detector": "gaussian",
              "settings": {}}, "chosen": {"guidance_scale": 1.0, "weights": {}, "samples": 1}}
    (tmp_path / "cal.json").write_text(json.dumps({**record, **tamper}))
    code, err = run_cli_in_process(["evaluate", "--detector", "gaussian", "--quiet", "--calibration",
                                    str(tmp_path / "cal.json"), "--out", str(tmp_path / "e")], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a valid calibration.json" in err, err
    assert not (tmp_path / "e").exists()
