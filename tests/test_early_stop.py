"""fit_loop's early stopping, EMA weights and warm-up; `arpro train repairer`'s early stop on the in-fill ratio."""

import torch
from torch import nn

from arpro.workflows import infill_quality
from arpro.workflows.train import EarlyStop, early_stopping, fit_loop, train_and_save


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(2, 1)


def _loss(model: nn.Module):
    return lambda batch, generator: (model(batch) - 1).pow(2).mean()


def _fit(model: nn.Module, **options) -> list[float]:
    data = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    return fit_loop(model, _loss(model), data, steps=40, batch_size=4, lr=0.05, progress=False, **options)


def test_early_stop_ends_training_keeps_the_best_weights_and_says_so(capsys):
    model, scores = _linear(), iter([3.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    kept = {}

    def score(m: nn.Module) -> float:
        value = next(scores)
        if value == 1.0:
            kept["weight"] = m.weight.detach().clone()
        return value

    with early_stopping(EarlyStop(score, evaluations=10, patience=2, name="test score")):
        losses = _fit(model)
    assert len(losses) == 16  # scored at steps 4, 8, 12, 16: best at 8, no better at 12 and 16
    assert "early stop at step 16 of 40: the test score has not improved on 1 (step 8) in 2 evaluations" in capsys.readouterr().out
    assert torch.equal(model.weight, kept["weight"])


def test_without_early_stop_every_step_runs(capsys):
    assert len(_fit(_linear())) == 40
    with early_stopping(None):
        assert len(_fit(_linear())) == 40
    assert "early stop" not in capsys.readouterr().out


def test_the_model_ends_with_the_ema_weights_and_warmup_starts_from_zero():
    plain, averaged, barely = _linear(), _linear(), _linear()
    _fit(plain)
    _fit(averaged, ema_decay=0.9)
    _fit(barely, ema_decay=1e-9)  # an average of the last step alone: the trained weights
    assert not torch.allclose(averaged.weight, plain.weight)
    assert torch.allclose(barely.weight, plain.weight)
    warmed = _linear()
    start = warmed.weight.detach().clone()
    fit_loop(warmed, _loss(warmed), torch.ones(4, 2), steps=1, batch_size=4, lr=0.05, warmup=10, progress=False)
    assert torch.equal(warmed.weight, start)  # the first step's learning rate is 0


def test_train_repairer_stops_early_on_the_in_fill_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(infill_quality, "measure", lambda *a, **k: {"ratio": 0.5, "n": 1, "masks": {}, "beats_naive": True})
    options = {"train_steps": 20, "width": 16, "depth": 1}
    train_and_save("repairer", "mlp-ddpm", tmp_path / "a.safetensors", model_options=options)
    assert "early stop at step 6 of 20: the held-out in-fill ratio has not improved on 0.5 (step 2)" in capsys.readouterr().out
    train_and_save("repairer", "mlp-ddpm", tmp_path / "b.safetensors", model_options=options, early_stop=False)
    assert "early stop" not in capsys.readouterr().out


def test_too_few_held_out_samples_train_every_step_and_say_so(tmp_path, monkeypatch, capsys):
    """A ratio on a handful of samples is noise: it must not end training (2 TEP windows once did)."""
    monkeypatch.setattr(infill_quality, "measure", lambda *a, **k: {"ratio": 0.5, "n": 1, "masks": {}, "beats_naive": True})
    monkeypatch.setattr(infill_quality, "split", lambda data, holdout: (data.train().x[5:], data.train().x[:5]))
    train_and_save("repairer", "mlp-ddpm", tmp_path / "a.safetensors",
                   model_options={"train_steps": 20, "width": 16, "depth": 1})
    out = capsys.readouterr()
    assert "early stop" not in out.out
    assert "5 held-out samples are too few to stop early on; training every step" in out.err
