"""The thread policy picks what docs/reference/behaviour.md says, and --threads reaches torch."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from arpro import ArproError
from arpro.cli import app
from arpro.runtime import threads


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine with a given affinity, load and cgroup quota, and no thread variables set."""
    monkeypatch.delenv("ARPRO_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", tmp_path / "cpu.max")  # absent unless a test writes it

    def set_machine(cpus: int, load: float, quota: str | None = None) -> None:
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load), raising=False)
        if quota is not None:
            (tmp_path / "cpu.max").write_text(quota + "\n")

    return set_machine


@pytest.mark.parametrize("cpus,load,expected", [
    (2, 0.0, 2),   # idle: every usable core
    (2, 0.3, 1),   # a little load: never more threads than free cores
    (2, 1.0, 1),
    (2, 5.0, 1),   # overloaded: at least one
    (16, 3.5, 12),
    (4, 0.0, 4),
])
def test_default_is_the_free_usable_cores(machine, cpus, load, expected):
    machine(cpus, load)
    assert threads.choose_threads() == (expected, "free cores")


def test_a_cgroup_quota_caps_the_usable_cores(machine):
    machine(16, 0.0, quota="200000 100000")
    assert threads.usable_cpus() == 2 and threads.choose_threads() == (2, "free cores")
    machine(16, 0.0, quota="max 100000")
    assert threads.usable_cpus() == 16


def test_explicit_requests_win_in_order(machine, monkeypatch):
    machine(2, 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("ARPRO_NUM_THREADS", "5")
    assert threads.choose_threads() == (5, "ARPRO_NUM_THREADS")
    assert threads.choose_threads(7) == (7, "--threads")


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_variable_is_one_error(machine, monkeypatch, value):
    machine(2, 0.0)
    monkeypatch.setenv("ARPRO_NUM_THREADS", value)
    with pytest.raises(ArproError, match="ARPRO_NUM_THREADS"):
        threads.choose_threads()


@pytest.mark.parametrize("command", [["check"], ["train", "detector", "--out", "never.safetensors"]])
def test_threads_option_reaches_torch(command, tmp_path):
    before = torch.get_num_threads()
    try:
        # an unknown detector fails after the threads are set, before anything loads
        result = CliRunner().invoke(app, [*command, "--detector", "no-such-detector", "--threads", "3"])
        assert result.exit_code != 0 and torch.get_num_threads() == 3
        result = CliRunner().invoke(app, [*command, "--detector", "no-such-detector", "--threads", "0"])
        assert isinstance(result.exception, ArproError) and "--threads" in str(result.exception)
    finally:
        torch.set_num_threads(before)
