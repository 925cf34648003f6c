"""Shared fixtures: the embedded tabular data and tiny, quickly trained models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arpro import plugins

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def table():
    return plugins.get("dataset", "breast-cancer")()


@pytest.fixture(scope="session")
def gaussian(table):
    detector = plugins.get("detector", "gaussian").for_dataset(table)
    detector.fit(table.train().x, progress=False)
    return detector.eval()


@pytest.fixture(scope="session")
def tiny_repairer(table):
    """An MLP DDPM trained for a few hundred steps: enough to denoise toward normal rows."""
    repairer = plugins.get("repairer", "mlp-ddpm")(input_shape=[30], width=64, depth=2, num_train_timesteps=1000)
    repairer.fit(table.train().x, steps=300, progress=False)
    return repairer.eval()


@pytest.fixture(scope="session")
def anomalous_rows(table):
    return table.test().anomalous().x[:6]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``arpro ARGS`` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "arpro.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
