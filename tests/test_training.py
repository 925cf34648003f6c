"""The core training loop on Lightning Fabric: DDP averages gradients, the CLI trains on N processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from arpro import ArproError, Repairer
from arpro.cli import app
from arpro.io import checkpoint
from arpro.workflows.train import fit_loop, rank_seed, train_denoiser
from arpro.testing import run_cli

STEPS, BATCH, LR, SEED = 4, 5, 0.05, 7


class Tiny(nn.Module):
    """A linear model plus a parameter no loss touches (DDP must be told to find unused ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.unused = nn.Parameter(torch.ones(2))


def make() -> tuple[Tiny, torch.Tensor]:
    torch.manual_seed(0)
    return Tiny(), torch.linspace(-1, 1, 120).reshape(40, 3)


def loss_of(model: Tiny, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noisy = batch + 0.1 * torch.randn(batch.shape, generator=generator)  # the loss draws from the rank's generator
    return (model.linear(noisy) - batch.sum(1, keepdim=True)).pow(2).mean()


def train_tiny(seed: int = SEED) -> tuple[Tiny, list[float]]:
    """The tiny model trained through the core loop, on the current Fabric."""
    model, train = make()
    loss_fn = lambda batch, generator: loss_of(model, batch, generator)  # noqa: E731
    return model, fit_loop(model, loss_fn, train, steps=STEPS, batch_size=BATCH, lr=LR, seed=seed, progress=False)


SCRIPT = textwrap.dedent(
    f"""
    import sys, torch
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from arpro.workflows.train import launch_fabric, use_fabric
    from test_training import train_tiny

    fabric = launch_fabric(2, "ddp", 1)
    with use_fabric(fabric):
        model, _ = train_tiny()
    torch.save(model.state_dict(), sys.argv[1] + f"/rank{{fabric.global_rank}}.pt")
    """
)


@pytest.mark.slow
def test_ddp_averages_the_ranks_gradients(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # DDP keeps the ranks in sync

    # One process, by hand: each step's loss is the mean of both ranks' losses on their own batches.
    model, train = make()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    generators = [torch.Generator().manual_seed(rank_seed(SEED, r)) for r in (0, 1)]
    for _ in range(STEPS):
        losses = []
        for g in generators:
            idx = torch.randint(0, train.shape[0], (BATCH,), generator=g)
            losses.append(loss_of(model, train[idx], g))
        optimizer.zero_grad(set_to_none=True)
        (sum(losses) / 2).backward()
        optimizer.step()
    expected = model.state_dict()
    for key in expected:
        assert torch.allclose(ranks[0][key], expected[key], atol=1e-6), key
    assert not torch.allclose(ranks[0]["linear.weight"], make()[0].linear.weight)  # it did train
    assert torch.equal(ranks[0]["unused"], torch.ones(2))


def test_rank_zero_uses_the_seed_itself():
    assert rank_seed(SEED, 0) == SEED
    assert len({rank_seed(s, r) for s in range(3) for r in range(3)}) == 9


def test_same_seed_same_weights_in_one_process():
    (one, losses), (two, again) = train_tiny(), train_tiny()
    assert losses == again and len(losses) == STEPS
    for key, value in one.state_dict().items():
        assert torch.equal(value, two.state_dict()[key])
    assert train_tiny(SEED + 1)[1] != losses


def test_one_cpu_process_trains_as_fabric_does_without_importing_lightning():
    """The default single CPU process skips Fabric (its import costs seconds) and changes no weight."""
    from arpro.runtime.devices import launch_fabric, use_fabric

    alone, losses = train_tiny()
    with use_fabric(launch_fabric()):
        fabric, fabric_losses = train_tiny()
    assert losses == fabric_losses
    for key, value in alone.state_dict().items():
        assert torch.equal(value, fabric.state_dict()[key])
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_training import train_tiny; "
              "train_tiny(); assert not any(m.startswith('lightning') for m in sys.modules), 'lightning imported'")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


def test_epochs_cover_every_sample_once_per_epoch():
    model, train = make()
    seen: list[torch.Tensor] = []

    def record(batch, generator):
        seen.append(batch)
        return model.linear(batch).pow(2).mean()

    losses = fit_loop(model, record, train, steps=2, batch_size=16, lr=LR, epochs=True, progress=False)
    assert len(losses) == 6 and [len(b) for b in seen[:3]] == [16, 16, 8]
    for epoch in (seen[:3], seen[3:]):
        assert torch.equal(torch.cat(epoch).sort(0).values, train.sort(0).values)


@pytest.mark.slow
def test_train_detector_on_two_processes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "ae.safetensors"
    proc = run_cli("train", "detector", "--detector", "autoencoder", "--devices", "2", "--strategy", "ddp",
                   "--model-option", "epochs=2", "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == ["ae.safetensors"]  # rank 1 wrote nothing, no temporary left
    assert proc.stdout.count("saved detector") == 1
    model = checkpoint.load(target, "detector", "autoencoder")
    assert model.is_calibrated and model.config["epochs"] == 2


def test_train_refuses_zero_devices(tmp_path):
    args = ["train", "detector", "--detector", "gaussian", "--devices", "0", "--out", str(tmp_path / "g.safetensors")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ArproError) and "--devices" in str(result.exception)
    assert not list(tmp_path.iterdir())


class ZeroX0(Repairer):
    """Predicts x0 = 0 whatever it sees: its loss on constant data is known at every t."""

    name, domain, prediction_type = "zero-x0", "tabular", "sample"

    def __init__(self, num_train_timesteps: int = 50) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t):
        return torch.zeros_like(x_t) + 0 * self.bias

    def fit(self, train, *, seed=0, progress=True, **options):
        return None


def test_snr_plus_one_weighting_divides_each_samples_x0_loss_by_one_minus_alpha_bar():
    train = torch.ones(64, 3)  # every sample's x0 loss is exactly 1
    model = ZeroX0()
    uniform = train_denoiser(model, train, steps=3, batch_size=16, lr=0.0, seed=1, progress=False)
    weighted = train_denoiser(model, train, steps=3, batch_size=16, lr=0.0, seed=1, progress=False, weighting="snr+1")
    assert uniform == [1.0, 1.0, 1.0]
    one_minus = 1 - model.make_scheduler("ddpm").alphas_cumprod
    assert all(1 / one_minus.max() <= w <= 1 / one_minus.min() for w in weighted) and all(w > 1 for w in weighted)
    with pytest.raises(ArproError, match="weighting 'snr\\+1' is not one for prediction_type 'epsilon'"):
        model.prediction_type = "epsilon"
        train_denoiser(model, train, steps=1, batch_size=16, progress=False, weighting="snr+1")
