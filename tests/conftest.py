"""The core's shared fixtures: the embedded tabular data and tiny, quickly trained models."""

from __future__ import annotations

import os

import pytest
import torch

from arpro.plugin_api import registry

torch.set_num_threads(1)
os.environ["ARPRO_OFFLINE"] = "1"  # the vision plugin's backbone resolver never tries the model hub in tests


@pytest.fixture(scope="session")
def table():
    return registry.get("dataset", "breast-cancer")()


@pytest.fixture(scope="session")
def gaussian(table):
    detector = registry.get("detector", "gaussian").for_dataset(table)
    detector.fit(table.train().x, progress=False)
    return detector.eval()


@pytest.fixture(scope="session")
def tiny_repairer(table):
    """An MLP DDPM trained for a few hundred steps: enough to denoise toward normal rows."""
    repairer = registry.get("repairer", "mlp-ddpm")(input_shape=[30], width=64, depth=2, num_train_timesteps=1000)
    repairer.fit(table.train().x, steps=300, progress=False)
    return repairer.eval()


@pytest.fixture(scope="session")
def anomalous_rows(table):
    return table.test().anomalous().x[:6]
