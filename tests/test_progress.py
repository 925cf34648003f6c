"""Honest progress in a log (stderr not a terminal): no long phase is silent, and no estimate of the
time left rests on the first step alone."""

from __future__ import annotations

import re
import time

import pytest

from arpro.runtime import progress
from arpro.testing import run_cli


def test_a_phase_longer_than_the_interval_writes_lines_while_it_runs(monkeypatch, capsys):
    monkeypatch.setenv("ARPRO_PROGRESS_INTERVAL", "0.05")
    with progress.progress_phase("searching the coreset"):
        time.sleep(0.4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "searching the coreset: started" and lines[-1].startswith("searching the coreset: done in ")
    assert any(re.fullmatch(r"searching the coreset: \d+s so far", line) for line in lines[1:-1])


def test_a_phase_over_within_two_seconds_prints_nothing(monkeypatch, capsys):
    monkeypatch.delenv("ARPRO_PROGRESS_INTERVAL", raising=False)
    with pytest.raises(ValueError), progress.progress_phase("fitting detector gpt2"):
        raise ValueError("a bad option")  # the command's error line must stay its only line
    with progress.progress_phase("indexing"):
        pass
    assert capsys.readouterr().err == ""


def test_time_left_is_not_estimated_from_the_first_step(monkeypatch, capsys):
    monkeypatch.setenv("ARPRO_PROGRESS_INTERVAL", "0")
    with progress.progress_bar("evaluating", total=10) as advance:
        for step in range(10):
            time.sleep(0.5 if step == 0 else 0.01)  # a slow first step: the warm-up
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert "left" not in lines[0] and "first step" in lines[0]
    left = float(re.search(r"(\d+)s left", lines[1]).group(1))
    assert left < 1  # 8 steps of 0.01 s; the first step's pace would say 4 s


@pytest.mark.slow
def test_a_command_logs_its_fit_as_a_phase(monkeypatch, tmp_path):
    monkeypatch.setenv("ARPRO_PROGRESS_INTERVAL", "0")
    proc = run_cli("train", "detector", "--detector", "gaussian", "--out", str(tmp_path / "g.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert "fitting detector gaussian: started" in proc.stderr and "fitting detector gaussian: done in " in proc.stderr


def test_a_slow_repairer_start_is_a_logged_phase(gaussian, tiny_repairer, anomalous_rows, monkeypatch, capsys):
    """nearest-patches fills ω before the first denoising step: 36 s at 256 px, once silent."""
    import arpro
    from arpro import RepairSettings

    monkeypatch.setenv("ARPRO_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(tiny_repairer, "prefill", lambda x_bad, omega: x_bad)
    arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(steps=4, start="sdedit"), arms=("guided",))
    err = capsys.readouterr().err
    assert "guided repair: the repairer's start: started" in err and "guided repair: the repairer's start: done in" in err
