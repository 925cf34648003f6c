"""Trust before explanation: `arpro check`, the repairer's validation figure, and the warnings of repair/evaluate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from arpro.testing import run_cli
from safetensors import safe_open

import arpro
from arpro.io import checkpoint
from arpro.io.checked import hint, read_record, record_path
from arpro.metrics import auroc
from arpro.plugin_api import registry
from arpro.plugin_api.result import p1_warning
from arpro.workflows import infill_quality
from arpro.workflows.check import run_check
from arpro.workflows.summary import markdown_tables, summarize
from arpro.workflows.train import train_and_save

def test_auroc_is_the_mann_whitney_probability_with_ties_half():
    labels = torch.tensor([0, 0, 0, 1, 1])
    scores = torch.tensor([0.1, 0.5, 0.5, 0.5, 0.9])
    pairs = [(a, n) for a in scores[labels == 1] for n in scores[labels == 0]]
    expected = sum(1.0 if a > n else 0.5 if a == n else 0.0 for a, n in pairs) / len(pairs)
    assert auroc(labels, scores) == pytest.approx(expected)
    assert auroc(labels, -scores) == pytest.approx(1 - expected)


def test_holdout_is_seeded_and_disjoint(table):
    fit, held = infill_quality.split(table)
    assert len(held) == 25 and len(fit) == 225  # 10% of the 250 benign training rows
    assert not (fit[:, None, :] == held[None, :, :]).all(-1).any()
    assert torch.equal(held, infill_quality.split(table)[1])
    assert infill_quality.split(table, 0.0)[1] is None


def test_untrained_repairer_is_warned_about_and_its_figure_is_in_the_header(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    train_and_save("repairer", "mlp-ddpm", out, model_options={"train_steps": 1, "width": 32, "depth": 1})
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "worse than the training mean" in warnings[0]
    assert "in-fill error on 25 held-out normal samples" in captured.out  # 10% of 250 benign rows
    figure = infill_quality.recorded(out)
    assert figure["beats_naive"] is False and figure["ratio"] > 1
    assert set(figure["masks"]) == {"feature subset"}
    checkpoint.load(out, "repairer")  # the extra header entry does not disturb loading


def test_the_bundled_repairer_beats_the_naive_fill_and_a_barely_trained_one_does_not(table):
    normal = table.test().x[table.test().labels == 0]
    bundled = arpro.obtain_model("repairer", "mlp-ddpm", table)
    assert infill_quality.measure(bundled, normal)["ratio"] < 0.5
    barely = registry.get("repairer", "mlp-ddpm")(input_shape=[30], width=16, depth=1)
    barely.fit(table.train().x, steps=5, progress=False)
    assert not infill_quality.measure(barely, normal)["beats_naive"]


def correlated_csv(path, n_normal=600, n_anomalous=150, seed=0):
    """Anomalies only in the joint structure (x2 follows -x1 instead of x1): every marginal is normal's."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n_normal + n_anomalous)
    sign = np.r_[np.ones(n_normal), -np.ones(n_anomalous)]
    frame = pd.DataFrame({"x1": x1, "x2": sign * x1 + 0.1 * rng.normal(size=x1.size), "x3": rng.normal(size=x1.size),
                          "x4": rng.normal(size=x1.size), "label": (sign < 0).astype(int)})
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory):
    """An autoencoder trained for one epoch and an MLP DDPM trained for one step, on a CSV."""
    folder = tmp_path_factory.mktemp("barely")
    data = correlated_csv(folder / "data.csv")
    common = dict(dataset="csv", data_root=data)
    train_and_save("detector", "autoencoder", folder / "ae.safetensors", model_options={"epochs": 1}, **common)
    train_and_save("repairer", "mlp-ddpm", folder / "r.safetensors",
                   model_options={"train_steps": 1, "width": 32, "depth": 1}, **common)
    return folder


@pytest.mark.slow
def test_check_flags_a_detector_at_chance_and_an_untrained_repairer(barely_trained):
    proc = run_cli("check", "--detector", "autoencoder", "--dataset", "csv", "--data-root",
                   str(barely_trained / "data.csv"), "--detector-checkpoint", str(barely_trained / "ae.safetensors"),
                   "--repairer-checkpoint", str(barely_trained / "r.safetensors"), "--limit", "4", "--steps", "10",
                   "--quiet")
    assert proc.returncode == 1, proc.stderr
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict: detector near chance (AUROC 0.")
    assert "and worse than the pca-rows baseline (" in verdict and "use --detector pca-rows" in verdict
    assert "baseline pca-rows AUROC, same split" in proc.stdout
    assert "repairer in-fills worse than the naive fill" in verdict
    record = read_record(barely_trained / "ae.safetensors")  # written beside the checkpoint the user named
    assert record["verdict"] == verdict.removeprefix("verdict: ")
    assert record["baseline"]["detector"] == "pca-rows" and record["baseline"]["auroc"] > 0.9  # x2 = -x1: PCA's Q sees it
    assert abs(record["detection"]["auroc"] - 0.5) < 0.1
    assert hint("autoencoder", str(barely_trained / "ae.safetensors")).startswith("warning: `arpro check` on csv found")


def test_check_trains_no_repairer_to_explain_a_detector_that_cannot_be_trusted(barely_trained, monkeypatch, capsys):
    import arpro.io.run_spec

    obtained = []
    real = arpro.io.run_spec.obtain_model
    monkeypatch.setattr(arpro.io.run_spec, "obtain_model", lambda kind, *a, **k: obtained.append(kind) or real(kind, *a, **k))
    spec = arpro.RunSpec(detector="autoencoder", dataset="csv", data_root=barely_trained / "data.csv",
                         detector_checkpoint=barely_trained / "ae.safetensors")  # no repairer checkpoint, none bundled
    report = run_check(spec, limit=4, progress=False)
    assert obtained == ["detector"]
    assert report["infill"] is None and report["repair"] is None
    assert report["verdict"].startswith("detector near chance (AUROC 0.") and "repairer" not in report["verdict"]
    assert "the repair was not checked" in capsys.readouterr().err


def test_a_detector_never_checked_gets_a_hint_and_a_retrained_one_loses_its_record(barely_trained, tmp_path):
    path = tmp_path / "ae.safetensors"
    path.write_bytes((barely_trained / "ae.safetensors").read_bytes())
    assert hint("autoencoder", str(path)).startswith("hint: detector 'autoencoder' has not been checked")
    record_path(path).write_text(json.dumps({"sha256": "0" * 64, "verdict": "ok"}))  # the record of another file
    assert read_record(path) is None


def test_check_is_ok_on_the_embedded_tabular_default():
    report = run_check(arpro.RunSpec(detector="gaussian"), progress=False)
    assert report["verdict"] == "ok", report
    assert report["detection"]["auroc"] > 0.9 and report["repair"]["n"] == 16
    flagged = report["repair"]["flagged"]  # those above the TNR threshold: 16 less the ones already below it
    assert 0 < flagged["n"] <= 16 and set(flagged["holds"]) == set(report["repair"]["holds"])
    assert report["infill"]["beats_naive"]
    bundled = registry.get("detector", "gaussian").bundled_checkpoint(registry.get("dataset", "breast-cancer")())
    assert hint("gaussian", str(bundled)) is None  # the plugin ships the record of its checkpoint's check


@pytest.mark.slow
def test_check_command_exits_0_on_the_default_and_writes_nothing_beside_a_bundled_checkpoint():
    bundled = registry.get("detector", "gaussian").bundled_checkpoint(registry.get("dataset", "breast-cancer")())
    shipped = record_path(bundled).read_bytes()
    proc = run_cli("check", "--detector", "gaussian", "--limit", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "verdict: ok"
    assert record_path(bundled).read_bytes() == shipped and "recorded" not in proc.stderr


def test_p1_warning_beyond_the_documented_share():
    assert p1_warning([True] * 9 + [False]) is None  # 10% is within the share
    assert "P1 fails) for 2 of 10 inputs (20%" in p1_warning([True] * 8 + [False] * 2)


def test_evaluate_tables_count_inputs_already_below_threshold_and_warn_on_p1():
    def record(below, p1):
        arm = {"metrics": {"Ms": 1.0}, "holds": {"p1": p1}, "all_hold": p1, "non_anomalous": True}
        return {"category": "c", "input_non_anomalous": below, "guided": arm}

    summary = summarize([record(True, False), record(False, False), record(False, True)], [],
                        [{"name": "p1", "metric": "Ms", "label": "Ms"}])
    assert summary["categories"]["c"]["inputs_non_anomalous"] == 1
    assert "1 of 3" in markdown_tables(summary)
    assert len(summary["warnings"]) == 1 and "1 of 2 inputs" in markdown_tables(summary)  # the flagged ones only
    mostly_below = summarize([record(True, True), record(True, True), record(False, True)], [],
                             [{"name": "p1", "metric": "Ms", "label": "Ms"}])  # 2 of 3 already below: TNR says little
    assert mostly_below["warnings"] == ["2 of 3 anomalous inputs already score below the TNR threshold before any repair: "
                                        "the detector hardly tells them from normal ones, so TNR says little; run `arpro check`"]


@pytest.mark.slow
def test_train_repairer_cli_validates_only_repairers():
    proc = run_cli("train", "detector", "--help")
    assert "--holdout" not in proc.stdout
    assert "--holdout" in run_cli("train", "repairer", "--help").stdout


def test_holdout_zero_trains_on_everything_and_records_nothing(tmp_path):
    out = tmp_path / "r.safetensors"
    train_and_save("repairer", "mlp-ddpm", out, holdout=0.0, model_options={"train_steps": 1, "width": 32, "depth": 1})
    with safe_open(str(out), framework="pt") as f:
        assert infill_quality.METADATA_KEY not in f.metadata()


@pytest.mark.slow
def test_repair_warns_when_p1_fails_often_and_hints_at_check(barely_trained, tmp_path):
    detector = tmp_path / "ae.safetensors"  # a copy never checked, whatever the other tests recorded
    detector.write_bytes((barely_trained / "ae.safetensors").read_bytes())
    proc = run_cli("repair", "--detector", "autoencoder", "--dataset", "csv", "--data-root",
                   str(barely_trained / "data.csv"), "--detector-checkpoint", str(detector), "--repairer-checkpoint",
                   str(barely_trained / "r.safetensors"), "--guidance-scale", "0", "--steps", "10", "--count", "4",
                   "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("hint:")] == [hint("autoencoder", str(detector))]
    warnings = [line for line in lines if line.startswith("warning: the guided repair raised")]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(warnings) == 1 and report["warnings"][0] == warnings[0].removeprefix("warning: ")
    nothing = [i for i in report["inputs"] if i["nothing_to_repair"]]  # an empty omega: P1 cannot hold, not counted
    assert f"for {4 - len(nothing)} of {4 - len(nothing)} inputs" in warnings[0]
    assert report["warnings"][1:] == ([f"{len(nothing)} of 4 inputs had nothing to repair (an empty omega, or a score of "
                                       "0): their P1 cannot hold and is not counted as a failure"] if nothing else [])
    assert report["settings"]["detector_checkpoint"] == str(detector)


def test_the_verdict_names_repairs_that_rarely_score_as_normal():
    from arpro.workflows.check import problems

    detection, infill = {"auroc": 0.95}, {"beats_naive": True}
    repair = {"holds": {"p1": 1.0, "p2": 1.0}, "all_hold": 1.0, "tnr": 0.25}
    found = problems(detection, infill, repair)
    assert len(found) == 1 and found[0].startswith("repairs rarely score as normal (TNR 25%)")
    assert problems(detection, infill, {**repair, "tnr": 0.5}) == []
    flagged_low = {**repair, "tnr": 0.9, "flagged": {**repair, "n": 4}}  # judged on the flagged inputs first
    assert problems(detection, infill, flagged_low)[0].startswith("repairs rarely score as normal (TNR 25%)")


def test_the_advice_for_a_weak_detector_names_only_options_it_has():
    from arpro.workflows.check import problems

    weak = {"auroc": 0.64}
    assert problems(weak, None, None, ("patch", "scales")) == ["detector weak (AUROC 0.640): choose another detector"]
    assert problems(weak, None, None, ("hidden", "epochs")) == [
        "detector weak (AUROC 0.640): train it longer (--model-option epochs=N), or choose another detector"]
    # just below the bar: printed so that it reads as below it (not "0.80")
    assert problems({"auroc": 0.796}, None, None) == ["detector weak (AUROC 0.796): choose another detector"]
    assert problems({"auroc": 0.5}, None, None, ("backbone_weights", "train_steps")) == [
        "detector near chance (AUROC 0.500): train it longer (--model-option train_steps=N), give it pretrained "
        "backbone_weights, or choose another detector"]


def test_the_verdict_names_a_detector_worse_than_the_baseline_and_a_weights_problem():
    from arpro.workflows.check import problems

    baseline = {"detector": "pca", "auroc": 0.79, "kinds": {}, "is_checked": False}
    found = problems({"auroc": 0.85}, None, None, {"train_steps"}, baseline)
    assert found == []  # better than the baseline and not weak
    found = problems({"auroc": 0.70}, None, None, {"train_steps"}, {**baseline, "auroc": 0.95})
    assert found == ["detector weak (AUROC 0.700) and worse than the pca baseline (0.950): use --detector pca, "
                     "train it longer (--model-option train_steps=N), or choose another detector"]
    found = problems({"auroc": 0.86}, None, None, (), {**baseline, "auroc": 0.95})
    assert found == ["detector worse than the pca baseline (AUROC 0.860 vs 0.950): use --detector pca, "
                     "or choose another detector"]
    assert problems({"auroc": 0.945}, None, None, (), {**baseline, "auroc": 0.95}) == []  # within the margin
    assert problems({"auroc": 0.70}, None, None, (), {**baseline, "auroc": 0.95, "is_checked": True}) == [
        "detector weak (AUROC 0.700): choose another detector"]
    assert problems({"auroc": 0.9}, None, None, (), None, "backbone weights are random") == ["backbone weights are random"]


def test_kind_aurocs_rank_each_kind_against_every_normal_sample():
    from arpro.workflows.check import kind_aurocs

    split = arpro.Split(torch.zeros(6, 1), torch.tensor([0, 0, 1, 1, 1, 0]), kinds=["good", "good", "a", "b", "a", "good"])
    values = torch.tensor([0.1, 0.2, 0.9, 0.15, 0.3, 0.25])
    assert kind_aurocs(split, values) == {"a": 1.0, "b": pytest.approx(1 / 3)}
    assert kind_aurocs(arpro.Split(split.x, split.labels), values) == {}


def test_a_domain_without_a_baseline_has_none():  # each plugin's tests check its own domain's baseline
    assert registry.get_baseline("no-such-domain") is None


def test_a_later_check_with_other_options_keeps_the_earlier_one(tmp_path):
    from arpro.workflows.check import record

    checkpoint = tmp_path / "d.safetensors"
    checkpoint.write_bytes(b"weights")
    spec = arpro.RunSpec(detector="gaussian", detector_checkpoint=checkpoint)
    base = {"dataset": "breast-cancer", "detection": {"auroc": 0.9}, "baseline": None, "provenance": {}}
    for steps, verdict in ((10, "detector weak (AUROC 0.700): choose another detector"), (20, "ok")):
        run = {"data_root": None, "dataset_options": {}, "settings": {"steps": steps}}
        record(spec, {**base, "spec": run, "verdict": verdict})
    saved = read_record(checkpoint)
    assert saved["verdict"] == "ok" and len(saved["checks"]) == 2  # the latest on top, both kept
    assert hint("gaussian", str(checkpoint)).startswith("warning: `arpro check` on breast-cancer found: detector weak")
