"""Time-series models: GPT-2 / Llama-2 detectors and the Diffusion-TS repairer, tiny and deterministic."""

from __future__ import annotations

import json
import math

import pytest
import torch

import arpro
from arpro.io import checkpoint
from arpro.plugin_api import registry

TINY = dict(train_steps=1200, validation_steps=300, test_steps=1500, window=32, stride=8, test_stride=16, fit_steps=40)


@pytest.fixture(scope="module")
def process():
    return registry.get("dataset", "process")(root=None, category=None, **TINY)


@pytest.fixture(scope="module", params=["gpt2", "llama2"])
def detector(request, process):
    torch.manual_seed(0)
    model = registry.get("detector", request.param).for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1)
    model.fit(process.train().x, seed=0, progress=False)
    return model


@pytest.fixture(scope="module")
def tiny_ts(process):
    model = registry.get("repairer", "diffusion-ts").for_dataset(process, width=32, heads=2, encoder_layers=1, decoder_layers=2)
    return model


def test_registered_in_the_timeseries_domain():
    assert registry.get("detector", "gpt2").domain == "timeseries"
    assert registry.get("detector", "llama2").domain == "timeseries"
    repairer = registry.get("repairer", "diffusion-ts")
    assert repairer.is_default and repairer.prediction_type == "sample"
    assert registry.registry().default("repairer", "timeseries") is repairer


def test_detector_identity_and_calibration(detector, process):
    x = process.test().x[:6]
    with torch.no_grad():
        d = detector.decompose(x)
        reference = detector.reference_score(x)
    assert d.alpha.shape == x.shape and d.beta.shape == (6,)
    assert torch.allclose(d.alpha.flatten(1).sum(1) + d.beta, reference, rtol=1e-5)
    assert detector.tau.shape == x.shape[1:]  # one threshold per (time step, feature)
    assert detector.train_scores.shape == (len(process.train()),)
    assert detector.input_mask(d.alpha > 0, x.shape).shape == x.shape  # identity mapping


def test_detector_fit_is_deterministic(detector, process):
    again = type(detector).for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1)
    again.fit(process.train().x, seed=0, progress=False)
    x = process.test().x[:3]
    with torch.no_grad():
        assert torch.allclose(again.score(x), detector.score(x), rtol=1e-5, atol=1e-6)


def test_detector_sees_a_level_shift_by_default(detector, process):
    """normalise="dataset" (the default): a sustained offset on one feature raises its alpha."""
    x = process.test().x[:2]
    offset = torch.zeros(x.shape[2])
    offset[3] = 3.0
    with torch.no_grad():
        base = detector.decompose(x).alpha
        moved = detector.decompose(x + offset).alpha
    assert detector.config["normalise"] == "dataset"
    assert moved[..., 3].sum() > base[..., 3].sum() + 0.5 * x.shape[1]


def test_window_normalisation_removes_the_window_level(process):
    """normalise="window": x̂(x + b) = x̂(x) + b for a per-feature offset b, so alpha is unchanged."""
    torch.manual_seed(0)
    detector = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1,
                                                          normalise="window")
    x = process.test().x[:2]
    offset = torch.linspace(-2, 2, x.shape[2])
    with torch.no_grad():
        base = detector.decompose(x).alpha
        moved = detector.decompose(x + offset).alpha
        assert torch.allclose(detector.decompose(x).alpha.flatten(1).sum(1), detector.reference_score(x), rtol=1e-5)
    assert torch.allclose(moved, base, atol=1e-4 * (1 + base.abs().max()))
    with pytest.raises(arpro.ArproError, match="normalise must be one of dataset, window, not 'batch'"):
        registry.get("detector", "gpt2").for_dataset(process, normalise="batch")


def test_detector_training_lowers_reconstruction_error(process):
    model = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1)
    x = process.train().x[:64]
    with torch.no_grad():
        before = model.score(x).mean()
    model.fit(process.train().x, seed=0, progress=False, steps=60)
    with torch.no_grad():
        after = model.score(x).mean()
    assert after < 0.7 * before


def test_detector_checkpoint_round_trip(detector, process, tmp_path):
    path = checkpoint.save(detector, tmp_path / "det.safetensors")
    loaded = checkpoint.load(path, "detector", detector.name)
    x = process.test().x[:2]
    with torch.no_grad():
        assert torch.equal(loaded.score(x), detector.score(x))
    assert loaded.config["preset"] == "small" and loaded.config["hidden"] == 32


def test_paper_presets_have_the_papers_sizes():
    gpt2 = registry.get("detector", "gpt2")(input_shape=[100, 51], preset="paper")
    llama = registry.get("detector", "llama2")(input_shape=[100, 51], preset="paper")
    assert len(gpt2.backbone.h) == 6 and gpt2.config["hidden"] == 768
    assert len(llama.backbone.layers) == 4 and llama.config["hidden"] == 1024
    with pytest.raises(arpro.ArproError, match="unknown preset 'huge'"):
        registry.get("detector", "gpt2")(input_shape=[32, 4], preset="huge")


def test_diffusion_ts_output_is_trend_plus_seasonal_plus_residual(tiny_ts, process):
    x = process.train().x[:4]
    t = torch.tensor([10, 100, 300, 499])
    with torch.no_grad():
        parts = tiny_ts.decompose_output(x, t)
        out = tiny_ts(x, t)
    assert out.shape == x.shape
    assert torch.allclose(parts["trend"] + parts["seasonal"] + parts["residual"], out, atol=1e-6)
    # the residual carries no level: its time-mean is zero
    assert parts["residual"].mean(1).abs().max() < 1e-5


def test_trend_block_is_a_low_degree_polynomial():
    from arpro_timeseries.repairer import TrendBlock

    block = TrendBlock(length=40, width=8, features=3, degree=3)
    trend = block(torch.randn(2, 40, 8))  # [B, T, D]
    grid = torch.arange(1, 41, dtype=torch.float64) / 41
    basis = torch.stack([grid, grid**2, grid**3], 1)  # no constant term: the level is separate
    coef = torch.linalg.lstsq(basis, trend[0].double()).solution
    assert torch.allclose(basis @ coef, trend[0].double(), atol=1e-5)


def test_fourier_layer_keeps_the_strongest_frequencies():
    from arpro_timeseries.repairer import FourierLayer

    layer = FourierLayer(length=64, factor=1.0)
    t = torch.arange(64, dtype=torch.float32)
    signal = 2.0 * torch.sin(2 * math.pi * 5 * t / 64) + 0.5 * torch.cos(2 * math.pi * 12 * t / 64)
    out = layer(signal[None, :, None])[0, :, 0]
    assert layer.top_k == int(math.log(31))  # 3 of 31 frequencies
    assert torch.allclose(out, signal, atol=1e-4)  # both sinusoids among the top k: rebuilt exactly
    offset = layer((signal + 7.0)[None, :, None])[0, :, 0]
    assert torch.allclose(offset, signal, atol=1e-4)  # the level (DC) is not seasonal


def test_fourier_loss(tiny_ts, process):
    x = process.train().x[:4]
    assert torch.equal(tiny_ts.fourier_loss(x, x), torch.zeros(4))  # one value per window
    assert (tiny_ts.fourier_loss(x, x + 0.1 * torch.randn_like(x)) > 0).all()
    assert math.isclose(tiny_ts.config["fourier_weight"], math.sqrt(32) / 5)


def test_v_parameterization_keeps_the_input_at_low_noise_and_x0_does_not(process):
    """x̂0 = sqrt(ᾱ)·x_t + sqrt(1 − ᾱ)·network: at the first step an untrained model returns
    almost x_t, measurement noise included; the paper's x0 output is the network alone."""
    sizes = dict(width=16, heads=2, encoder_layers=1, decoder_layers=1)
    x, t = process.train().x[:2], torch.tensor([0, 0])
    torch.manual_seed(0)
    v = registry.get("repairer", "diffusion-ts").for_dataset(process, **sizes)
    torch.manual_seed(0)
    x0 = registry.get("repairer", "diffusion-ts").for_dataset(process, parameterization="x0", **sizes)
    assert v.config["parameterization"] == "v"
    with torch.no_grad():
        network = x0(x, t)
        alpha_bar = v.alphas_cumprod[0]
        assert torch.allclose(v(x, t), alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * network, atol=1e-5)
        assert (v(x, t) - x).abs().max() < 0.05 < (network - x).abs().max()
    with pytest.raises(arpro.ArproError, match="parameterization must be v or x0"):
        registry.get("repairer", "diffusion-ts").for_dataset(process, parameterization="eps", **sizes)


def test_a_checkpoint_saved_before_parameterization_loads_as_x0(process, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = registry.get("repairer", "diffusion-ts").for_dataset(process, width=16, heads=2, parameterization="x0").eval()
    path = checkpoint.save(model, tmp_path / "ts.safetensors")
    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(metadata["arpro"])
    del header["config"]["parameterization"]  # as an older version wrote it
    metadata["arpro"] = json.dumps(header)
    save_file(tensors, str(path), metadata=metadata)
    loaded = checkpoint.load(path, "repairer", "diffusion-ts")
    x, t = process.train().x[:2], torch.tensor([0, 300])
    assert loaded.config["parameterization"] == "x0"
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))


def test_diffusion_ts_training_lowers_the_loss_and_round_trips(process, tmp_path):
    model = registry.get("repairer", "diffusion-ts").for_dataset(process, width=32, heads=2, encoder_layers=1, decoder_layers=1)
    losses = model.fit(process.train().x, seed=0, progress=False, steps=80, lr=3e-3)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert model.x_mean.shape == process.sample_shape()
    path = checkpoint.save(model, tmp_path / "ts.safetensors")
    loaded = checkpoint.load(path, "repairer", "diffusion-ts")
    x, t = process.train().x[:2], torch.tensor([50, 250])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))
    scheduler = loaded.make_scheduler("ddim")
    assert scheduler.config.prediction_type == "sample" and scheduler.config.num_train_timesteps == 500


def test_detection_metrics():
    from arpro_timeseries.evaluation import detection_metrics

    assert arpro.auroc(torch.tensor([0, 0, 1, 1]), torch.tensor([40.0, 50.0, 60.0, 70.0])) == 1.0  # no squashing into ties
    assert math.isnan(arpro.auroc(torch.tensor([1, 1]), torch.tensor([0.1, 0.2])))  # one class: undefined
    m = detection_metrics(torch.tensor([0, 1, 1, 0]), torch.tensor([1.0, 5.0, 0.5, 6.0]), 2.0)
    assert (m["precision"], m["recall"], m["f1"], m["auroc"]) == (0.5, 0.5, 0.5, 0.25)


@pytest.mark.parametrize("saved, missing, expected", [
    ({"normalise": "window"}, "normalise", {"normalise": "window", "variability": 10.0}),  # per-window, as trained
    ({"variability": 0.0}, "variability", {"variability": 0.0}),  # reconstruction alone, as trained
])
def test_a_checkpoint_from_before_an_option_loads_as_it_was_trained(process, tmp_path, saved, missing, expected):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1, **saved)
    model.calibrate(process.train().x[:8])
    path = checkpoint.save(model, tmp_path / "new.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header, tensors = json.loads(f.metadata()["arpro"]), {k: f.get_tensor(k) for k in f.keys()}
    del header["config"][missing]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"arpro": json.dumps(header)})
    loaded = checkpoint.load(tmp_path / "old.safetensors", "detector", "gpt2")
    assert {key: loaded.config[key] for key in expected} == expected
    x = process.test().x[:2]
    with torch.no_grad():
        assert torch.equal(loaded.score(x), model.score(x))


def test_variability_sees_a_frozen_reading_and_louder_noise(detector, process):
    """A repeated value and a 6× noise level raise the variability part of alpha on that feature alone."""
    x = process.test().x[:4].clone()
    noisy = int(detector.variability_on.nonzero()[0])
    frozen, loud = x.clone(), x.clone()
    frozen[:, 8:24, noisy] = frozen[:, 8:9, noisy]
    loud[:, :, noisy] += 5 * (x[:, :, noisy] - x[:, :, noisy].roll(1, 1)) / 2 ** 0.5
    with torch.no_grad():
        base, still, rough = (detector._variability(v) for v in (x, frozen, loud))
    assert base.sum() < 0.05 * still[..., noisy].sum()  # normal cells score (almost) nothing
    for changed in (still, rough):
        assert changed[..., noisy].sum() > base[..., noisy].sum() + 1.0
        others = [d for d in range(x.shape[2]) if d != noisy]
        assert torch.equal(changed[..., others], base[..., others])


def test_variability_has_a_gradient_and_an_off_switch(process):
    torch.manual_seed(0)
    off = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1,
                                                     variability=0.0)
    off.calibrate(process.train().x[:16])
    assert not hasattr(off, "variability_lo")
    on = registry.get("detector", "gpt2").for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1)
    on.load_state_dict(off.state_dict(), strict=False)
    on.calibrate(process.train().x)
    x = process.test().x[:2].clone()
    x[:, 4:20, int(on.variability_on.nonzero()[0])] = 0.0  # frozen
    x.requires_grad_(True)
    on.decompose(x).score.sum().backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.all(on.score(x) > off.score(x))
    with pytest.raises(arpro.ArproError, match="variability must be >= 0"):
        registry.get("detector", "gpt2").for_dataset(process, variability=-1.0)
    with pytest.raises(arpro.ArproError, match="needs windows of at least 3 steps, not 2"):
        registry.get("detector", "gpt2")(input_shape=[2, 4])
    assert registry.get("detector", "gpt2")(input_shape=[2, 4], variability=0.0).config["variability"] == 0.0


def test_variability_median_is_torchs_median():
    """The sorting-network median equals torch.median (lower middle value) for every window length."""
    from arpro_timeseries.variability import _lower_median

    generator = torch.Generator().manual_seed(0)
    for n in range(1, 17):
        windows = torch.randn(5, 7, n, generator=generator)
        for w in (windows, windows.round()):  # with ties too
            assert torch.equal(_lower_median(w), w.median(-1).values)
    windows = windows.round().requires_grad_(True)  # ties: the first element equal to the median carries it
    _lower_median(windows).sum().backward()
    first = (windows == windows.median(-1, keepdim=True).values).to(torch.uint8).argmax(-1, keepdim=True)
    assert torch.equal(windows.grad, torch.zeros(5, 7, 16).scatter_(-1, first, 1.0))


def test_the_fixed_target_gradient_drops_only_the_reconstructions_own_term(detector, process):
    """gradient="fixed-target": d(score)/dx = −2(x̂ − x) + d(w·v)/dx; "exact" adds the term through x̂. Same values."""
    x = process.test().x[:3].clone().requires_grad_(True)
    assert detector.config["gradient"] == "fixed-target"
    fixed_score = detector.decompose(x).score
    (fixed,) = torch.autograd.grad(fixed_score.sum(), x)
    with torch.no_grad():
        x_hat = detector.reconstruct(x)
    (variability,) = torch.autograd.grad(detector._variability(x).sum(), x)
    assert torch.allclose(fixed, -2 * (x_hat - x) + variability, atol=1e-6)
    detector.config["gradient"] = "exact"
    try:
        exact_score = detector.decompose(x).score
        (exact,) = torch.autograd.grad(exact_score.sum(), x)
    finally:
        detector.config["gradient"] = "fixed-target"
    assert torch.equal(exact_score, fixed_score)
    assert not torch.allclose(exact, fixed)
    with pytest.raises(arpro.ArproError, match="gradient must be one of fixed-target, exact"):
        registry.get("detector", "gpt2").for_dataset(process, gradient="approximate")


def _tiny_transformers_model(family: str):
    """A 2-layer transformers model of width 32, as a user's pretrained folder would hold (random weights)."""
    if family == "gpt2":
        from transformers import GPT2Config, GPT2Model

        return GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_inner=64, vocab_size=11, n_positions=1024))
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, vocab_size=11))


@pytest.mark.parametrize("family", ["gpt2", "llama2"])
def test_pretrained_copies_the_first_layers_of_a_saved_model(process, tmp_path, family):
    """pretrained=DIR (a save_pretrained folder): the first n_layer blocks and the final norm come from it,
    the token embedding (which windows never use) does not; training then starts from those weights."""
    torch.manual_seed(0)
    source = _tiny_transformers_model(family)
    source.save_pretrained(tmp_path / "weights")  # safetensors, as transformers writes by default
    model = registry.get("detector", family).for_dataset(process, hidden=32, intermediate=64, n_head=2, n_layer=1,
                                                        pretrained=str(tmp_path / "weights"), variability=0.0)
    model.fit(process.train().x[:8], seed=0, progress=False, steps=0)
    own, theirs = model.backbone.state_dict(), source.state_dict()
    embedding, layer = type(model).embedding_key, type(model).layer_key
    copied = [k for k in theirs if not k.startswith(embedding) and not k.startswith(f"{layer}1.")]
    assert copied and all(torch.equal(own[k], theirs[k]) for k in copied)
    assert not any(k.startswith(f"{layer}1.") for k in own)  # n_layer=1: the second block is left out
    embedding_name = next(k for k in own if k.startswith(embedding))
    assert own[embedding_name].shape != theirs[embedding_name].shape  # not copied
    (tmp_path / "pickled").mkdir()
    with pytest.raises(arpro.ArproError, match="has no model.safetensors"):
        registry.get("detector", family).for_dataset(process, pretrained=str(tmp_path / "pickled")).fit(
            process.train().x[:8], seed=0, progress=False, steps=0)


def test_fit_sizes_the_bottleneck_as_pca_would(tmp_path):
    """bottleneck=None (the default): fit keeps as many units as principal components explain 90% of the
    training rows' variance; the checkpoint records the number, an explicit bottleneck is kept."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.linalg.qr(torch.randn(6, 6, generator=generator))[0][:3]  # 3 equal, orthogonal directions
    rows = torch.randn(40 * 16, 3, generator=generator) @ mixing + 0.01 * torch.randn(40 * 16, 6, generator=generator)
    train = rows.reshape(40, 16, 6)
    small = dict(hidden=32, intermediate=64, n_head=2, n_layer=1, variability=0.0)
    model = registry.get("detector", "gpt2")(input_shape=[16, 6], **small)
    assert model.config["bottleneck"] is None
    model.fit(train, seed=0, progress=False, steps=2)
    assert model.config["bottleneck"] == 3 and model.squeeze.out_features == 3 == model.expand.in_features
    loaded = checkpoint.load(checkpoint.save(model, tmp_path / "det.safetensors"), "detector", "gpt2")
    assert loaded.config["bottleneck"] == 3
    with torch.no_grad():
        assert torch.equal(loaded.score(train[:2]), model.score(train[:2]))
    fixed = registry.get("detector", "gpt2")(input_shape=[16, 6], bottleneck=5, **small)
    fixed.fit(train, seed=0, progress=False, steps=2)
    assert fixed.config["bottleneck"] == 5 and fixed.squeeze.out_features == 5
    flat = registry.get("detector", "gpt2")(input_shape=[16, 2], **small)
    flat.fit(torch.ones(4, 16, 2), seed=0, progress=False, steps=1)  # no variance at all: one unit, never all D
    assert flat.config["bottleneck"] == 1


def test_a_model_trained_now_has_the_same_weights_whatever_the_process_state():
    """``arpro.obtain_model`` seeds torch before it builds the model: another process's random state does not
    change the weights (``fit_steps``: no bundled checkpoint, trained now)."""
    data = registry.get("dataset", "process")(train_steps=300, validation_steps=100, test_steps=100, window=16, fit_steps=2)
    weights = []
    for state in (1, 2):
        torch.manual_seed(state)
        weights.append(arpro.obtain_model("detector", "gpt2", data, progress=False).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(("windows", "steps", "noted"), [(13, 10_000, True), (993, 10_000, False)])
def test_diffusion_ts_says_when_its_steps_pass_over_few_windows_far_more_often_than_the_plant(
        windows, steps, noted, tiny_ts, monkeypatch, capsys):
    monkeypatch.setattr(arpro, "train_denoiser", lambda *args, **kwargs: [])
    tiny_ts.fit(torch.zeros(windows, *tiny_ts.config["input_shape"]), steps=steps, batch_size=32)
    note = capsys.readouterr().err
    assert ("pass over these 13 training windows 24,615 times" in note and "train_steps=2100" in note) is noted
    assert noted or note == ""
