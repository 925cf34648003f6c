"""The embedded grayscale surface set and the no-weights patch nearest-neighbour detector (patchnn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import arpro
from arpro.io import checkpoint
from arpro.metrics import region_detail
from arpro.plugin_api import registry
from arpro_vision.images import Letterbox


TINY = dict(image_size=32, n_train=8, n_test_normal=4, n_test_anomalous=8)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def surface(**options):
    return registry.get("dataset", "surface")(root=None, category=None, **{**TINY, **options})


@pytest.fixture(scope="module")
def fitted():
    """patchnn fitted on 16 tiny surface pictures, with a small bank."""
    torch.set_num_threads(1)
    data = surface(n_train=16)
    detector = registry.get("detector", "patchnn").for_dataset(data, bank_size=128)
    detector.fit(data.train().x, seed=0, progress=False)
    return data, detector.eval()


def test_surface_sizes_masks_and_kinds():
    data = surface()
    train, test = data.train(), data.test()
    assert train.x.shape == (8, 3, 32, 32) and test.x.shape == (12, 3, 32, 32) and test.masks.shape == (12, 32, 32)
    assert float(train.x.min()) >= -1 and float(train.x.max()) <= 1
    assert torch.equal(train.x[:, 0], train.x[:, 1]) and torch.equal(train.x[:, 0], train.x[:, 2])  # grayscale
    assert test.kinds == ["good"] * 4 + ["crack", "pit", "fray", "dent"] * 2
    assert test.labels.tolist() == [0] * 4 + [1] * 8
    assert test.masks[:4].sum() == 0 and all(m.sum() > 0 for m in test.masks[4:])
    assert set(torch.unique(test.masks).tolist()) <= {0.0, 1.0}


def test_surface_pictures_have_varied_native_sizes_and_masks_mark_the_change():
    from arpro_vision.surface import GRAIN, add_defect, native_size, normal_surface

    rng = np.random.default_rng(0)
    sizes = [native_size(rng, 64) for _ in range(20)]
    assert len(set(sizes)) > 10 and all(64 <= max(s) <= 160 for s in sizes)
    assert any(h > w for h, w in sizes)  # tall pictures are letterboxed, not squashed
    for kind in ("crack", "pit", "fray", "dent"):
        rng = np.random.default_rng([1, 2, 3])
        image, part = normal_surface(rng, 90, 60, 90 / 64)
        bad, mask = add_defect(image, kind, rng, 90 / 64, part)
        assert mask.any(), kind
        assert np.abs(bad - image)[~mask].max() <= 0.5 * GRAIN  # the mask holds every pixel the defect changed
    with pytest.raises(arpro.ArproError, match="unknown surface defect kind"):
        add_defect(image, "smudge", rng, 1.0, part)


def test_surface_is_deterministic_and_seed_draws_new_test_pictures():
    first, again, other = surface(), surface(), surface(seed=1)
    assert torch.equal(first.test().x, again.test().x) and torch.equal(first.test().masks, again.test().masks)
    assert torch.equal(first.train().x, other.train().x)  # the same training pictures (and bundled models)
    assert not torch.equal(first.test().x, other.test().x)


def test_surface_bad_options():
    with pytest.raises(arpro.ArproError, match="n_train must be an integer >= 1"):
        surface(n_train=0).train()
    with pytest.raises(arpro.ArproError, match="seed must be an integer"):
        surface(seed="x").test()


def test_patchnn_decomposition_is_exact_and_differentiable(fitted):
    data, detector = fitted
    x = data.test().x[4:8].clone().requires_grad_(True)
    d = detector.decompose(x)
    assert torch.allclose(d.score, detector.reference_score(x), rtol=1e-5, atol=1e-4)
    assert torch.equal(d.beta, torch.zeros(4)) and bool((d.alpha >= 0).all())
    (gradient,) = torch.autograd.grad(d.score.sum(), x)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert bool((detector.tau > 0).all())  # omega = alpha >= tau never takes pixels with no excess


def test_patchnn_patch_rows_are_unfolds_rows():
    from arpro_vision.patch_nn import patch_count, patch_rows

    padded = torch.randn(3, 1, 11, 9, generator=torch.Generator().manual_seed(0))  # not square, several pictures
    full = torch.nn.functional.unfold(padded, 5).transpose(1, 2).reshape(-1, 25)
    assert patch_count(padded, 5) == full.shape[0] == 3 * 7 * 5
    assert torch.equal(patch_rows(padded, 5, torch.arange(full.shape[0])), full)
    rows = torch.tensor([104, 0, 34, 35, 36, 70, 3])  # any order, across picture boundaries
    assert torch.equal(patch_rows(padded, 5, rows), full[rows])


def test_patchnn_chunking_does_not_change_fit_or_scores(fitted, monkeypatch):
    """Fit and distances with search chunks of 7 patches (cutting across pictures) and feature maps
    of 3 pictures at a time equal the one-chunk results, and the chunked path without gradients
    equals the all-at-once one exactly."""
    import arpro_vision.patch_nn as patch_nn

    data, _ = fitted
    train, x = data.train().x, data.test().x
    runs = {}
    for search, images in ((10**9, 10**9), (7, 10**9), (7, 3)):
        monkeypatch.setattr(patch_nn, "SEARCH_CHUNK", search)
        monkeypatch.setattr(patch_nn, "FIT_IMAGES", images)
        detector = registry.get("detector", "patchnn").for_dataset(data, bank_size=128)
        detector.fit(train, seed=0, progress=False)
        with torch.no_grad():
            runs[search, images] = detector.state_dict(), torch.cat([d.flatten() for d in detector._distances(x)])
    one_state, one_d2 = runs[10**9, 10**9]
    assert bool((one_d2 > 0).all())
    for key, (state, d2) in runs.items():
        assert state.keys() == one_state.keys()
        assert all(torch.equal(one_state[k], state[k]) for k in one_state), key  # banks, excess, tau, train scores
        assert torch.equal(one_d2, d2), key
    graded = detector._distances(x.clone().requires_grad_(True))  # patches built at once, for autograd
    assert torch.equal(torch.cat([d.detach().flatten() for d in graded]), one_d2)


def test_patchnn_flags_defects_on_tiny_surfaces(fitted):
    data, detector = fitted
    test = data.test()
    with torch.no_grad():
        score = detector.score(test.x)
    normal, bad = score[test.labels == 0], score[test.labels == 1]
    assert bad.median() > normal.max()


def test_patchnn_checkpoint_roundtrip_and_errors(fitted, tmp_path):
    data, detector = fitted
    path = tmp_path / "patchnn.safetensors"
    checkpoint.save(detector, path)
    loaded = checkpoint.load(path, "detector", "patchnn")
    x = data.test().x[:3]
    with torch.no_grad():
        assert torch.equal(loaded.score(x), detector.score(x))
    fresh = registry.get("detector", "patchnn").for_dataset(data)
    with pytest.raises(arpro.ArproError, match="not fitted"):
        fresh.decompose(x)
    with pytest.raises(arpro.ArproError, match="odd"):
        registry.get("detector", "patchnn").for_dataset(data, patch=4)
    with pytest.raises(arpro.ArproError, match="divide"):
        registry.get("detector", "patchnn").for_dataset(data, scales=[3])
    with pytest.raises(arpro.ArproError, match="at least 2"):
        fresh.fit(data.train().x[:1], progress=False)


def test_patchnn_pools_over_flat_windows_for_thin_straight_defects(tmp_path):
    """A scale [h, w] pools over h x w windows: its alpha is spread evenly over each window, the
    decomposition stays exact, the checkpoint keeps the scale, and a thin line along the window
    scores higher there than the same dark pixels scattered as specks."""
    data = surface(n_train=16)
    detector = registry.get("detector", "patchnn").for_dataset(data, scales=[[1, 8], 2], bank_size=128)
    detector.fit(data.train().x, seed=0, progress=False)
    assert detector.config["scales"] == [[1, 8], 2] and detector.bank_1x8.shape == (128, 25)
    normal = data.train().x[1:2]  # an odd-numbered picture: held out of the bank
    line, specks = normal.clone(), normal.clone()
    # on the picture (columns 5-25 of the letterbox), whose padding is mirrored afresh from it before scoring
    line[..., 16, 8:24] -= 1.0  # 16 pixels in one row
    specks[..., torch.arange(8, 24) % 6 * 5 + 2, torch.arange(8, 24)] -= 1.0  # the same 16, scattered
    x = torch.cat([normal, line, specks])
    box = Letterbox.of_mirrored(normal[0])
    with torch.no_grad():
        d = detector.decompose(x)
        assert torch.allclose(d.score, detector.reference_score(box.mirror(x)), rtol=1e-4, atol=1e-4)
        flat = registry.get("detector", "patchnn").for_dataset(data, scales=[[1, 8]], bank_size=128)
        flat.fit(data.train().x, seed=0, progress=False)
        alpha = flat.decompose(x).alpha
        pooled = flat._decompose(box.mirror(x)).alpha  # before alpha is folded off the letterbox's padding
    assert torch.equal(pooled, pooled[..., ::8].repeat_interleave(8, -1))  # even over each 1 x 8 window
    assert alpha[1].sum() > alpha[2].sum() and alpha[1].sum() > alpha[0].sum()
    path = tmp_path / "flat.safetensors"
    checkpoint.save(flat, path)
    loaded = checkpoint.load(path, "detector", "patchnn")
    assert loaded.config["scales"] == [[1, 8]]
    with torch.no_grad():
        assert torch.equal(loaded.decompose(x).alpha, alpha)
    for bad in ([[1, 8, 2]], [[0, 4]], ["4"], [[1, 5]]):
        with pytest.raises(arpro.ArproError, match="patchnn scale"):
            registry.get("detector", "patchnn").for_dataset(data, scales=bad)


@pytest.mark.slow
def test_cli_trains_patchnn_and_a_ddpm_and_repairs_surface_pictures(tmp_path):
    from arpro.testing import run_cli

    options = ["--dataset", "surface", "--option", "image_size=32", "--option", "n_train=8",
               "--option", "n_test_normal=2", "--option", "n_test_anomalous=2"]
    proc = run_cli("train", "detector", "--detector", "patchnn", *options, "--model-option", "bank_size=64",
                   "--out", str(tmp_path / "det.safetensors"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", "repairer", "--repairer", "ddpm", *options, "--option", "ddpm_block_out_channels=[16, 32]",
                   "--option", "train_steps=2", "--option", "batch_size=4", "--holdout", "0",
                   "--out", str(tmp_path / "ddpm.safetensors"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("repair", "--detector", "patchnn", "--detector-checkpoint", str(tmp_path / "det.safetensors"),
                   "--repairer-checkpoint", str(tmp_path / "ddpm.safetensors"), *options, "--steps", "4",
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*_repair.png"))  # the guided repairs were written
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_gray_set_trains_and_repairs_a_one_channel_ddpm_that_adds_no_colour(fitted, tmp_path):
    data, detector = fitted
    ddpm = registry.get("repairer", "ddpm")
    model = ddpm.for_dataset(data, block_out_channels=[16, 32], train_steps=2, batch_size=4)
    assert data.grayscale() and model.config["channels"] == 1 and model.unet.config.in_channels == 1
    model.fit(data.train().x, seed=0, progress=False)
    assert model.x_mean.shape == (3, 32, 32)  # the samples' space: the SDEdit start and the naive fill
    checkpoint.save(model, tmp_path / "gray.safetensors")
    loaded = checkpoint.load(tmp_path / "gray.safetensors", "repairer").eval()
    assert loaded.config["channels"] == 1 and loaded.unet.config.in_channels == 1
    bad = data.test().anomalous().subset([0, 1])
    result = arpro.repair(bad.x, detector, loaded, settings=arpro.RepairSettings(steps=3, guidance_scale=0.0),
                          ids=bad.ids, progress=False, valid=bad.valid)
    for arm in result.arms.values():
        x = arm.x_fix
        assert float((x - x[:, :1]).abs().max()) < 1e-4, float((x - x[:, :1]).abs().max())  # gray in, gray out
    # a 3-channel model (as every checkpoint saved before the channel count) still repairs the gray set
    old = ddpm.for_dataset(data, block_out_channels=[16, 32], channels=3, train_steps=1, batch_size=4)
    old.fit(data.train().x, seed=0, progress=False)
    checkpoint.save(old, tmp_path / "rgb.safetensors")
    again = checkpoint.load(tmp_path / "rgb.safetensors", "repairer").eval()
    assert again.unet.config.in_channels == 3
    arpro.repair(bad.x, detector, again, settings=arpro.RepairSettings(steps=2), progress=False, valid=bad.valid)


def test_the_gray_ddpm_reads_three_channels_as_their_mean_at_the_matching_noise_level():
    model = registry.get("repairer", "ddpm")(input_shape=[3, 16, 16], block_out_channels=[16, 32], channels=1)
    a = model.alphas
    t = torch.tensor([0, 200, 999])
    x0, noise = torch.rand(3, 1, 16, 16) * 2 - 1, torch.randn(3, 3, 16, 16)
    x_t = a[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - a[t]).sqrt().view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        eps = model(x_t, t)
    x0_hat = (x_t - (1 - a[t]).sqrt().view(-1, 1, 1, 1) * eps) / a[t].sqrt().view(-1, 1, 1, 1)
    assert eps.shape == x_t.shape and torch.allclose(x0_hat[:, 1:], x0_hat[:, :1].expand(-1, 2, -1, -1), atol=1e-4)
    with pytest.raises(arpro.ArproError, match="channels must be 1 or"):
        registry.get("repairer", "ddpm")(input_shape=[3, 16, 16], channels=2)


def test_the_detail_figure_tells_a_blurred_in_fill_from_the_surface_texture():
    data = surface(n_test_anomalous=2)
    test = data.test()
    normal = test.x[test.labels == 0]
    region = torch.zeros_like(normal)
    region[..., 8:24, 8:24] = 1.0
    blurred = torch.where(region.bool(), torch.nn.functional.avg_pool2d(normal, 5, 1, 2), normal)
    same, reference, has = region_detail(data.detail_map(normal), data.detail_map(normal), region)
    soft = region_detail(data.detail_map(blurred), data.detail_map(normal), region)[0]
    assert has.all() and torch.allclose(same.sum() / reference.sum(), torch.tensor(1.0))
    assert float(soft.sum() / reference.sum()) < 0.5  # an upsampled blur has little of the surface's detail
    assert registry.get("dataset", "textures")(root=None, category=None).detail_map(normal).shape == normal.shape


def test_check_weighs_the_detail_in_omega_of_input_and_repair_against_normal_pictures_there():
    from arpro.workflows.check import repair_detail

    data = surface(n_test_anomalous=2)
    test = data.test()
    bad = test.anomalous()
    omega = torch.zeros_like(bad.x)
    omega[..., 8:24, 8:24] = 1.0
    blurred = torch.where(omega.bool(), torch.nn.functional.avg_pool2d(bad.x, 5, 1, 2), bad.x)
    detail = repair_detail(data, bad.x, blurred, omega, test)
    assert detail["has"].all() and (detail["repair"] < detail["input"]).all() and (detail["normal"] > 0).all()
    omega[1] = 0.0  # nothing repaired: no region to weigh
    assert repair_detail(data, bad.x, blurred, omega, test)["has"].tolist() == [True, False]
