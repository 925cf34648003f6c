"""The vision plugin: datasets, detectors' decompositions, the DDPM repairer, image I/O.

Tiny models (16-32 px, a few training steps), CPU, deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import arpro
from arpro.io import checkpoint
from arpro.io.run_spec import read_inputs
from arpro.plugin_api import registry


TINY = dict(image_size=32, n_train=16, n_test_normal=4, n_test_anomalous=4, train_steps=2, batch_size=4)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def textures(category="brick", **options):
    return registry.get("dataset", "textures")(root=None, category=category, **{**TINY, **options})


@pytest.fixture(scope="module")
def tiny_models():
    """Tiny fitted detectors and DDPM on 32 px brick patches."""
    torch.set_num_threads(1)
    data = textures(ddpm_block_out_channels=[16, 32], ddpm_norm_num_groups=8)
    models = {}
    for kind, name in [("detector", "fastflow"), ("detector", "efficientad"), ("repairer", "ddpm")]:
        model = registry.get(kind, name).for_dataset(data)
        model.fit(data.train().x, seed=0, progress=False)
        models[name] = model.eval()
    return data, models


def test_plugin_registers_image_domain():
    reg = registry.registry()
    for kind, name in [("detector", "fastflow"), ("detector", "efficientad"), ("detector", "patchnn"), ("repairer", "ddpm")]:
        assert reg.entries[kind][name].distribution == "arpro-vision"
        assert reg.entries[kind][name].domain == "image"
    assert reg.default("repairer", "image").name == "ddpm"
    embedded = [e.obj for e in reg.entries["dataset"].values() if e.domain == "image" and e.obj.embedded]
    assert [d.name for d in embedded] == ["textures"]  # the default; surface needs no files either, but is named
    for name in ["mvtec", "visa", "mpdd", "btech", "kolektor", "folder"]:
        assert reg.entries["dataset"][name].domain == "image"


def test_textures_are_deterministic_with_exact_masks():
    from arpro_vision.textures import add_defect

    a, b = textures(), textures()
    assert torch.equal(a.train().x, b.train().x) and torch.equal(a.test().x, b.test().x)
    assert a.train().x.shape == (16, 3, 32, 32) and a.test().masks.shape == (8, 32, 32)
    assert a.train().x.min() >= -1 and a.train().x.max() <= 1
    test = a.test()
    assert test.labels.tolist() == [0] * 4 + [1] * 4
    assert test.masks[:4].sum() == 0 and (test.masks[4:].flatten(1).sum(1) > 0).all()
    # another seed gives other defects; the default split has >= 20 anomalies
    assert not torch.equal(textures(seed=1).test().x, test.x)
    default = registry.get("dataset", "textures")(root=None, category="gravel", image_size=16).test()
    assert int(default.labels.sum()) >= 20 and int((default.labels == 0).sum()) >= 20
    # the mask is exactly the set of changed pixels
    rgb = np.full((32, 32, 3), 0.5, np.float32)
    for kind in ["scratch", "hole", "stain", "paste"]:
        other = np.zeros_like(rgb)
        out, mask = add_defect(rgb, kind, np.random.default_rng(3), other)
        assert np.array_equal(np.abs(out - rgb).max(-1) > 0, mask > 0), kind
        assert mask.sum() > 0


def test_textures_categories_and_errors():
    data = textures()
    assert data.categories() == ["brick", "grass", "gravel"]
    with pytest.raises(arpro.ArproError, match="no category"):
        textures(category="marble").train()
    with pytest.raises(arpro.ArproError, match="multiple of 16"):
        textures(image_size=30).sample_shape()


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_decomposition_identity_and_gradient(tiny_models, name):
    data, models = tiny_models
    detector = models[name]
    x = data.test().x
    d = detector.decompose(x)
    assert d.alpha.shape == (8, 32, 32) and d.beta.shape == (8,)
    s = detector.reference_score(x)  # computed anomalib's way, independently of decompose
    assert torch.allclose(d.alpha.flatten(1).sum(1) + d.beta, s, rtol=1e-5, atol=1e-5 * s.abs().max().item())
    xg = x[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(detector.score(xg).sum(), xg)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert detector.tau.shape == (32, 32) and detector.train_scores.shape == (16,)
    omega = arpro.compute_omega(detector, d, "train")
    assert detector.input_mask(omega, x.shape).shape == x.shape


def test_fastflow_alpha_is_spread_flow_energy(tiny_models):
    """Σ alpha = Σ_scales Σ_positions ½‖z‖², and beta = −Σ log|det J| + constants."""
    data, models = tiny_models
    ff = models["fastflow"]
    x = data.test().x[:3]
    with torch.no_grad():
        energy, logdet, n = torch.zeros(3), torch.zeros(3), 0
        for block, feature in zip(ff.model.fast_flow_blocks, ff._features(x)):
            z, ljd = block(feature)
            energy += 0.5 * z.pow(2).flatten(1).sum(1)
            logdet += ljd
            n += z[0].numel()
        d = ff.decompose(x)
    assert torch.allclose(d.alpha.flatten(1).sum(1), energy, rtol=1e-5)
    assert torch.allclose(d.beta, -logdet + 0.5 * n * math.log(2 * math.pi), rtol=1e-5)
    # each 16x16-pixel block of the coarsest scale carries equal shares: alpha is piecewise constant at 4 px
    assert torch.equal(d.alpha[:, ::4, ::4].repeat_interleave(4, 1).repeat_interleave(4, 2), d.alpha)


def test_efficientad_small_inputs_use_student_teacher_only():
    det = registry.get("detector", "efficientad")
    small = det(input_shape=[3, 32, 32])
    assert small.config["use_autoencoder"] is False and small.config["padding"] is True
    assert not hasattr(small.model, "ae")
    assert det(input_shape=[3, 64, 64]).config["padding"] is False
    with pytest.raises(arpro.ArproError, match="at least 256"):
        det(input_shape=[3, 64, 64], use_autoencoder=True)
    full = det(input_shape=[3, 256, 256], teacher_out_channels=16).eval()
    assert full.config["use_autoencoder"] is True
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        d = full.decompose(x)
        reference = full.reference_score(x)  # anomalib's own forward: 0.5 ST + 0.5 student-AE map
    assert d.alpha.shape == (1, 256, 256)
    assert torch.allclose(d.score, reference, rtol=1e-5)


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_detector_checkpoint_roundtrip_without_random_backbone(tiny_models, tmp_path, name):
    data, models = tiny_models
    path = checkpoint.save(models[name], tmp_path / f"{name}.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    frozen = "feature_extractor" if name == "fastflow" else "model.teacher."
    assert not any(frozen in k for k in keys)  # rebuilt from backbone_seed, not stored
    loaded = checkpoint.load(path, "detector", name)
    x = data.test().x
    with torch.no_grad():
        assert torch.allclose(loaded.score(x), models[name].score(x), rtol=1e-5)


def test_fastflow_learns_to_flag_defects():
    """A few dozen steps already rank defective patches above clean ones (stains and holes)."""
    data = textures(n_train=32, n_test_normal=6, n_test_anomalous=6, train_steps=40)
    det = registry.get("detector", "fastflow").for_dataset(data)
    det.fit(data.train().x, seed=0, progress=False)
    test = data.test()
    with torch.no_grad():
        scores = det.score(test.x)
    assert scores[test.labels == 1].median() > scores[test.labels == 0].median()


def test_repair_keeps_outside_of_omega_and_writes_figure(tiny_models, tmp_path):
    data, models = tiny_models
    bad = data.test().anomalous()
    settings = arpro.RepairSettings(steps=5)
    result = arpro.repair(
        bad.x[:2], models["fastflow"], models["ddpm"], settings=settings, mask=bad.masks[:2], ids=bad.ids[:2], progress=False
    )
    outside = result.omega_input == 0
    for arm in ("infill", "guided"):
        assert torch.equal(result.arms[arm].x_fix[outside], result.x_bad[outside])
    assert not torch.equal(result.arms["guided"].x_fix, result.arms["infill"].x_fix)
    batch = arpro.InputBatch(bad.x[:2], bad.ids[:2], {})
    files = data.write_repairs(result, tmp_path, batch) + data.draw_repairs(result, tmp_path, batch)
    names = {p.name for p in files}
    assert "repair.png" in names and "brick_test_scratch_000_repair.png" in names
    assert "brick_test_scratch_000_omega.png" in names and "brick_test_scratch_000_repair_baseline.png" in names
    with Image.open(tmp_path / "brick_test_scratch_000_repair.png") as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    with Image.open(tmp_path / "repair.png") as image:
        assert image.width > 400  # five columns


def user_image(mode: str, size=(70, 45), seed=0) -> Image.Image:
    """A random picture of ``size`` (width, height) in ``mode`` (RGBA with a constant alpha of 128)."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(1000, 60000, size[::-1], dtype=np.uint16))
    image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert("RGB" if mode == "RGBA" else mode)
    if mode == "RGBA":
        image.putalpha(Image.fromarray(np.full(size[::-1], 128, np.uint8)))
    return image


def repair_file(data, models, path, out, mask=None, arms=("guided",)):
    """Read ``path`` as a user's input, repair it with the tiny models, write the repairs into ``out``."""
    batch = data.read_input(path)
    result = arpro.repair(
        batch.x, models["fastflow"], models["ddpm"], settings=arpro.RepairSettings(steps=3),
        mask="top" if mask is None else mask, ids=batch.ids, progress=False, arms=list(arms),
    )  # fmt: skip
    data.write_repairs(result, out, batch)
    return batch, result


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGBA", ".png"), ("RGB", ".jpg"), ("P", ".png"),
                                         ("LA", ".png"), ("I;16", ".png")])
def test_user_file_comes_back_at_its_size_and_mode_unchanged_outside_omega(tiny_models, tmp_path, mode, suffix):
    """Compositing: the written repair has the input's size and mode (L stays L, 16-bit stays
    16-bit, alpha kept); outside the mapped omega every pixel is the input's own."""
    data, models = tiny_models
    path = tmp_path / f"user{suffix}"
    user_image(mode).save(path)
    batch, _ = repair_file(data, models, path, tmp_path / "out", arms=("baseline", "infill", "guided"))
    assert batch.x.shape == (1, 3, 32, 32) and batch.x.min() >= -1 and batch.x.max() <= 1
    with Image.open(path) as original:
        original = original.convert("RGB") if mode == "P" else original
        before = np.asarray(original)
    with Image.open(tmp_path / "out" / "user_repair.png") as repaired:
        assert repaired.size == (70, 45)
        assert repaired.mode == {"P": "RGB"}.get(mode, mode)
        after = np.asarray(repaired)
    with Image.open(tmp_path / "out" / "user_omega.png") as omega:
        outside = np.asarray(omega) == 0
    assert omega.size == (70, 45) and 0 < outside.mean() < 1
    assert np.array_equal(after[outside], before[outside])  # byte for byte
    assert not np.array_equal(after[~outside], before[~outside])
    if mode in ("RGBA", "LA"):
        assert np.array_equal(after[..., -1], before[..., -1])  # alpha untouched, inside omega too
    with Image.open(tmp_path / "out" / "user_repair_baseline.png") as baseline:  # the baseline regenerates everything
        assert baseline.size == (70, 45) and not np.array_equal(np.asarray(baseline)[outside], before[outside])


def test_the_figure_draws_each_arm_as_written_at_native_size_in_gray(tiny_models, tmp_path):
    """repair.png shows a user's L file at its own 70x45 in gray, each arm as its written file, and the
    ground truth when the batch carries it."""
    from arpro_vision.figure import as_drawn, repair_figure

    data, models = tiny_models
    path = tmp_path / "user.png"
    user_image("L").save(path)
    batch, result = repair_file(data, models, path, tmp_path / "out", arms=("baseline", "infill", "guided"))
    info, omega = batch.meta["images"][0], result.omega_input[0].amax(0)
    for arm, region in (("infill", omega), ("guided", omega), ("baseline", torch.ones_like(omega))):
        drawn = as_drawn(result.arms[arm].x_fix[0], info, region)
        written = tmp_path / "out" / ("user_repair.png" if arm == "guided" else f"user_repair_{arm}.png")
        assert drawn.shape == (45, 70) and np.array_equal(drawn, np.asarray(Image.open(written)))
    assert as_drawn(batch.x[0], info).shape == (45, 70)  # the input: cropped to the picture, gray
    plain = repair_figure(result, tmp_path / "plain.png", [info])
    with_truth = repair_figure(result, tmp_path / "truth.png", [info], truth=torch.ones(1, 32, 32))
    assert Image.open(with_truth).width > Image.open(plain).width  # one more column: the ground truth


def test_non_square_input_is_letterboxed_not_squashed(tiny_models, tmp_path):
    """A 96x48 picture fills a 32x16 box in the 32 px square, its edge mirrored above and below;
    the padding never reaches the written file, whatever omega covers there."""
    from arpro_vision.images import Letterbox

    data, models = tiny_models
    assert Letterbox.fit((1024, 768), 64) == Letterbox(64, 0, 8, 64, 48)
    assert Letterbox.fit((250, 620), 64) == Letterbox(64, 19, 0, 26, 64)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (48, 96), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    batch = data.read_input(path)
    box = batch.meta["images"][0].box
    assert (box.left, box.top, box.width, box.height) == (0, 8, 32, 16)
    x = batch.x[0, 0]
    expected = torch.from_numpy(np.asarray(Image.fromarray(pixels).resize((32, 16), Image.Resampling.BICUBIC,
                                                                          reducing_gap=None)).astype(np.float32) / 127.5 - 1)
    assert torch.allclose(x[8:24], expected)  # the picture itself: resized, not squashed
    assert torch.equal(x[7], x[8]) and torch.equal(x[24], x[23])  # mirrored edge
    padding_only = torch.zeros(1, 32, 32)
    padding_only[:, :8] = 1  # omega covers only the padding: nothing of the picture may change
    repair_file(data, models, path, tmp_path / "out", mask=padding_only, arms=("infill", "guided"))
    with Image.open(tmp_path / "out" / "wide_repair.png") as repaired:
        assert repaired.size == (96, 48) and np.array_equal(np.asarray(repaired), pixels)


@pytest.mark.parametrize("size", [(26, 64), (64, 26), (64, 9), (30, 32)])
def test_a_letterboxed_picture_is_found_from_its_mirrored_padding_and_folds_onto_itself(size):
    """``Letterbox.of_mirrored`` finds the box ``letterbox_rgb`` padded (tall, wide, padding wider than
    the picture, one side only), also once a repair left the padding a stale copy of a changed edge, and
    ``mirror`` makes that padding again; ``fold`` keeps the sum, leaves the padding 0 and puts a padding
    pixel's value on the picture pixel it copies. A square picture, or noise, has none."""
    from arpro_vision.images import Letterbox, letterbox_rgb, to_tensor, to_uint8

    rgb = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    square, box = letterbox_rgb(rgb, 64)
    x = to_tensor(square)
    assert Letterbox.of_mirrored(x) == box
    values = torch.rand(64, 64)
    folded = box.fold(values)
    torch.testing.assert_close(folded.sum(), values.sum())
    assert torch.equal(folded * (1 - box.valid()), torch.zeros(64, 64))
    rows, columns = box.sources()
    spike = torch.zeros(64, 64)
    spike[0, 0] = 1.0  # a padding pixel (every box here pads the first row or column)
    assert box.valid()[0, 0] == 0 and box.fold(spike)[rows[0], columns[0]] == 1.0
    assert torch.equal(x[:, rows[0], columns[0]], x[:, 0, 0])  # the pixel it copies
    repaired = box.mirror(x).clone()
    repaired[:, rows[0], columns[0]] *= -1  # a repair changed a picture pixel the padding copies: stale there
    assert Letterbox.of_mirrored(repaired) == box and not torch.equal(box.mirror(repaired), repaired)
    torch.testing.assert_close(box.mirror(repaired), to_tensor(letterbox_rgb(to_uint8(box_crop(box, repaired)), 64)[0]),
                               atol=1 / 255, rtol=0)  # the padding made again: as if the repaired picture were letterboxed
    noise = torch.rand_like(x) * 2 - 1
    assert Letterbox.of_mirrored(noise) is None and Letterbox.of_mirrored(to_tensor(rgb[:26, :26].copy())) is None


def box_crop(box, x: torch.Tensor) -> torch.Tensor:
    return x[:, box.top : box.top + box.height, box.left : box.left + box.width]


def test_feather_stays_inside_omega_and_fades_in(tiny_models, tmp_path):
    """Upsampling 4x: the feather is one model pixel (4 px) wide, inside the mapped omega."""
    from arpro_vision.images import feather

    region = np.zeros((40, 40), bool)
    region[8:32, 8:32] = True
    weight = feather(region, 4.0)
    assert weight[~region].max() == 0 and weight[20, 20] == 1
    assert 0 < weight[8, 20] < weight[9, 20] < weight[11, 20] == 1  # rises over 4 px from the boundary
    border = np.zeros((40, 40), bool)
    border[:, :10] = True
    assert feather(border, 4.0)[20, 0] == 1  # the image's border is no boundary


def test_bad_image_files_give_one_line_errors(tiny_models, tmp_path):
    data, _ = tiny_models
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(arpro.ArproError, match="not an image") as info:
        data.read_input(text)
    assert "\n" not in str(info.value)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(arpro.ArproError) as info:
        data.read_input(truncated)
    assert "\n" not in str(info.value) and "truncated.png" in str(info.value)
    with pytest.raises(arpro.ArproError, match="does not exist"):
        data.read_input(tmp_path / "missing.png")


def test_mvtec_layout_from_a_fake_folder(tmp_path):
    root = tmp_path / "mvtec"
    rng = np.random.default_rng(0)
    for sub, n in [("train/good", 3), ("test/good", 2), ("test/crack", 2)]:
        (root / "widget" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "widget" / sub / f"{i:03d}.png")
    (root / "widget/ground_truth/crack").mkdir(parents=True)
    for i in range(2):
        mask = np.zeros((40, 48), np.uint8)
        mask[:20] = 255  # top half
        Image.fromarray(mask).save(root / "widget/ground_truth/crack" / f"{i:03d}_mask.png")
    data = registry.get("dataset", "mvtec")(root=root, category="widget", image_size=16)
    assert data.categories() == ["widget"]
    assert data.train().x.shape == (3, 3, 16, 16) and data.train().labels.sum() == 0
    test = data.test()
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1]
    bad = test.anomalous()
    # letterboxed: 48x40 -> 16x13 at row 1, the top row mirrored above, the bottom two below
    assert bad.masks.shape == (2, 16, 16) and torch.equal(bad.masks[0, :8], torch.ones(8, 16))
    assert bad.masks[0, 8:].sum() == 0
    with pytest.raises(arpro.ArproError, match="does not exist"):
        registry.get("dataset", "mvtec")(root=root, category="gadget").train()
    with pytest.raises(arpro.ArproError, match="needs --data-root"):
        registry.get("dataset", "mvtec")(root=None, category="widget").train()


def _mvtec(root, mask_hw=(40, 48)):
    rng = np.random.default_rng(0)
    for sub, n in [("train/good", 3), ("test/good", 2), ("test/crack", 2)]:
        (root / "widget" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "widget" / sub / f"{i:03d}.png")
    if mask_hw is not None:
        (root / "widget/ground_truth/crack").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros(mask_hw, np.uint8)).save(root / "widget/ground_truth/crack" / f"{i:03d}_mask.png")
    return root


def test_omega_of_a_letterboxed_picture_never_lies_on_its_padding(tiny_models, tmp_path):
    """48x40 pictures in the 32 px square: 27 rows of picture, mirrored rows above and below. The
    dataset's samples and a user's file both mark the picture (``valid``), and omega stays on it."""
    data, models = tiny_models
    mvtec = registry.get("dataset", "mvtec")(root=_mvtec(tmp_path / "mvtec"), category="widget", image_size=32)
    bad = mvtec.test().anomalous()
    picture = torch.zeros(32, 32)
    picture[2:29] = 1  # Letterbox.fit((48, 40), 32): 32x27 at row 2
    assert bad.valid.shape == (2, 32, 32) and torch.equal(bad.valid[0], picture)
    result = arpro.repair(bad.x, models["fastflow"], models["ddpm"], settings=arpro.RepairSettings(steps=2, mask="top",
                          mask_quantile=0.0), valid=bad.valid, arms=("infill",), progress=False)
    assert torch.equal(result.omega, bad.valid)  # quantile 0: the whole picture, and not one pixel of padding
    user = mvtec.read_input(tmp_path / "mvtec/widget/test/crack/000.png")
    assert torch.equal(user.valid, picture[None])
    assert torch.equal(read_inputs(mvtec, None, 2)[0].valid, bad.valid)  # what `arpro repair` passes on
    d = models["fastflow"].decompose(user.x)
    assert (arpro.compute_omega(models["fastflow"], d, "top", 0.0) * (1 - picture)).sum() > 0  # without it: padding too
    omega = arpro.compute_omega(models["fastflow"], d, "top", 0.9, valid=user.valid)
    assert omega.sum() > 0 and (omega * (1 - picture)).sum() == 0


def test_mvtec_layouts_that_do_not_fit_are_one_clear_error(tmp_path):
    def test_split(root):
        with pytest.raises(arpro.ArproError) as info:
            registry.get("dataset", "mvtec")(root=root, category="widget", image_size=16).test()
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "widget/ground_truth/crack is missing" in test_split(_mvtec(tmp_path / "nogt", mask_hw=None))
    assert "is 13x11 pixels, but its image is 48x40" in test_split(_mvtec(tmp_path / "small", mask_hw=(11, 13)))
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(outside)
    linked = _mvtec(tmp_path / "linked")
    (linked / "widget/test/crack/001.png").unlink()
    (linked / "widget/test/crack/001.png").symlink_to(outside)
    assert "leads outside --data-root" in test_split(linked)


def test_folder_dataset_holds_out_normals(tmp_path):
    rng = np.random.default_rng(1)
    for sub, n in [("normal", 10), ("abnormal", 2), ("masks", 2)]:
        (tmp_path / sub).mkdir()
        for i in range(n):
            arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) if sub != "masks" else np.full((20, 20), 255, np.uint8)
            Image.fromarray(arr).save(tmp_path / sub / f"{i:03d}.png")
    data = registry.get("dataset", "folder")(root=tmp_path, category=None, image_size=16)
    assert len(data.train()) == 8 and len(data.test()) == 4
    assert data.test().anomalous().masks.sum() == 2 * 16 * 16
    crops = registry.get("dataset", "folder")(root=tmp_path, category=None, image_size=16, crops=3).train()
    assert crops.x.shape == (8 * 3, 3, 16, 16) and len(set(crops.ids)) == 24
    first = np.asarray(Image.open(tmp_path / "normal" / "000.png"))  # crops at native resolution, not resized
    windows = [first[y : y + 16, x : x + 16] for y in range(5) for x in range(5)]
    assert any(np.array_equal(crops.x[0].permute(1, 2, 0).add(1).mul(127.5).round().byte().numpy(), w) for w in windows)
    with pytest.raises(arpro.ArproError, match="crops must be"):
        registry.get("dataset", "folder")(root=tmp_path, category=None, image_size=16, crops=0).train()


def test_reading_pictures_is_a_logged_phase(tmp_path, monkeypatch, capsys):
    """Parsing a layout and reading its pictures took 23 s before a first line on KolektorSDD: a phase, never silent."""
    monkeypatch.setenv("ARPRO_PROGRESS_INTERVAL", "0")  # every phase writes its lines, however short
    for sub, n in [("normal", 5), ("abnormal", 1)]:
        (tmp_path / sub).mkdir()
        for i in range(n):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / sub / f"{i:03d}.png")
    registry.get("dataset", "folder")(root=tmp_path, category=None, image_size=16).test()
    registry.get("dataset", "folder")(root=tmp_path, category=None, image_size=16, crops=2).train()
    err = capsys.readouterr().err
    assert "reading dataset folder: started" in err and "reading dataset folder: done in " in err
    assert "reading dataset folder: 2 crops per picture: done in " in err


def test_model_options_are_never_silently_ignored_for_a_bundled_checkpoint():
    """`--option fastflow_backbone_weights=...` on the embedded default: no shipped model was built with it."""
    textures = registry.get("dataset", "textures")
    plain, asked = textures(root=None, category=None), textures(root=None, category=None, fastflow_backbone_weights="r.pth")
    assert registry.get("detector", "fastflow").bundled_checkpoint(plain) is not None
    assert registry.get("detector", "fastflow").bundled_checkpoint(asked) is None  # trained with the weights instead
    assert registry.get("detector", "efficientad").bundled_checkpoint(asked) is not None  # not its option
    assert registry.get("repairer", "ddpm").bundled_checkpoint(textures(root=None, category=None, train_steps=5)) is None


def test_bundled_demo_path(tmp_path):
    """The `arpro repair --detector fastflow|efficientad` path with no input: embedded default + bundled checkpoints."""
    reg = registry.registry()
    dataset_cls = next(e.obj for e in reg.entries["dataset"].values() if e.domain == "image" and e.obj.embedded)
    dataset = dataset_cls(root=None, category=None)
    for name in ["fastflow", "efficientad", "ddpm"]:
        kind = "repairer" if name == "ddpm" else "detector"
        assert registry.get(kind, name).bundled_checkpoint(dataset) is not None, f"no bundled checkpoint for {name}"
    repairer = arpro.obtain_model("repairer", reg.default("repairer", "image").name, dataset, progress=False)
    bad = dataset.test().anomalous()
    for name in ["fastflow", "efficientad"]:
        detector = arpro.obtain_model("detector", name, dataset, progress=False)
        result = arpro.repair(
            bad.x[:2], detector, repairer, settings=arpro.RepairSettings(steps=6), ids=bad.ids[:2], progress=False
        )
        assert set(result.arms) == {"baseline", "infill", "guided"}
        batch = arpro.InputBatch(bad.x[:2], bad.ids[:2], {})
        files = dataset.write_repairs(result, tmp_path / name, batch) + dataset.draw_repairs(result, tmp_path / name, batch)
        assert (tmp_path / name / "repair.png").is_file() and len(files) == 2 * 4 + 1
        json.dumps(result.to_dict())
        assert torch.isfinite(result.arms["guided"].score).all()


def painted_defect_image(size=(1024, 768), seed=0) -> Image.Image:
    """A grayscale defect image at full size: a test-strip crop of scikit-image's brick photograph
    (what the bundled brick models know at 64 px), enlarged, with fine noise and a dark painted scratch."""
    import skimage.data

    w, h = size
    crop = skimage.data.brick()[400:448, 0:64]
    surface = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    surface += np.random.default_rng(seed).normal(0, 4, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    surface[(np.abs((yy - 300) - 0.4 * (xx - 400)) < 12) & (xx > 300) & (xx < 700)] = 15
    return Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8), mode="L")


@pytest.mark.slow
def test_cli_repairs_a_1024x768_grayscale_image_at_its_own_size(tmp_path):
    """The bar: `arpro repair --detector fastflow` (bundled checkpoints) on a 1024x768 L image writes
    1024x768 L PNGs whose pixels outside the written omega are the input's, byte for byte."""
    from arpro.testing import run_cli

    path = tmp_path / "big.png"
    painted_defect_image().save(path)
    proc = run_cli("repair", "--detector", "fastflow", "--input", str(path), "--steps", "3", "--infill-stop", "0.5",
                   "--arms", "infill,guided", "--out", str(tmp_path / "out"), "--quiet")  # the last step is freed
    assert proc.returncode == 0, proc.stderr
    before = np.asarray(Image.open(path))
    omega = np.asarray(Image.open(tmp_path / "out" / "big_omega.png")) > 0
    assert omega.shape == (768, 1024) and 0 < omega.mean() < 1
    for name in ("big_repair.png", "big_repair_infill.png"):
        with Image.open(tmp_path / "out" / name) as repaired:
            assert repaired.size == (1024, 768) and repaired.mode == "L"
            after = np.asarray(repaired)
        assert np.array_equal(after[~omega], before[~omega])
        assert not np.array_equal(after[omega], before[omega])


def test_the_default_detector_keeps_every_pixel_outside_the_written_omega(tiny_models, tmp_path):
    """The bar of issue 30 with the no-weights default detector (patchnn, whose defaults free the last
    10 % of the steps): a 1024x768 L picture comes back at 1024x768 in mode L, equal to the input
    outside the written omega mask byte for byte, and P2 is judged on that repair (M_d = 0)."""
    data, models = tiny_models
    detector = registry.get("detector", "patchnn")(input_shape=list(data.sample_shape()))
    detector.fit(data.train().x, seed=0, progress=False, bank_size=64)
    settings = arpro.RepairSettings.for_detector(detector, steps=10)
    assert settings.infill_stop == 0.1  # with 10 DDIM steps from t0 = 0.6, the last one is freed
    path = tmp_path / "big.png"
    painted_defect_image().save(path)
    batch = data.read_input(path)
    result = arpro.repair(batch.x, detector.eval(), models["ddpm"], settings=settings, ids=batch.ids, progress=False,
                          arms=["infill", "guided"])
    data.write_repairs(result, tmp_path / "out", batch)
    before = np.asarray(Image.open(path))
    omega = np.asarray(Image.open(tmp_path / "out" / "big_omega.png")) > 0
    assert omega.shape == (768, 1024) and 0 < omega.mean() < 1
    for arm, name in (("guided", "big_repair.png"), ("infill", "big_repair_infill.png")):
        outside = result.omega_input == 0
        assert torch.equal(result.arms[arm].x_fix[outside], batch.x[outside]) and result.arms[arm].metrics["Md"].item() == 0
        with Image.open(tmp_path / "out" / name) as repaired:
            assert repaired.size == (1024, 768) and repaired.mode == "L"
            after = np.asarray(repaired)
        assert np.array_equal(after[~omega], before[~omega]) and not np.array_equal(after[omega], before[omega])


def test_tiled_repair_runs_the_ddpm_on_full_resolution_crops_near_omega(tiny_models, tmp_path):
    """Option tiled: the input stays at 100x48, the 32 px DDPM runs on 32 px crops touching omega only,
    the detector scores the letterboxed whole; the written file is unchanged outside omega."""
    from arpro_vision.images import letterbox_rgb
    from arpro_vision.tiles import TiledDetector, TiledRepairer, letterbox_tensor, tile_starts

    _, models = tiny_models
    data = textures(tiled=True)
    pixels = np.random.default_rng(5).integers(0, 255, (48, 100), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    batch = data.read_input(path)
    assert batch.x.shape == (1, 3, 48, 100)
    detector, repairer = data.models_for(batch, models["fastflow"], models["ddpm"])
    assert isinstance(detector, TiledDetector) and isinstance(repairer, TiledRepairer)
    square = torch.from_numpy(letterbox_rgb(np.repeat(pixels[..., None], 3, -1), 32)[0].astype(np.float32) / 127.5 - 1)
    assert (letterbox_tensor(batch.x, detector.box)[0].permute(1, 2, 0) - square).abs().mean() < 0.02  # as read_image does
    mask = torch.zeros(1, 3, 48, 100)
    mask[..., 10:30, 5:25] = 1  # a defect on the left: crops on the right are never run
    result = arpro.repair(batch.x, detector, repairer, settings=arpro.RepairSettings(steps=3), mask=mask, ids=batch.ids,
                          progress=False, arms=["infill", "guided"])
    assert torch.equal(batch.valid[0], detector.box.valid())  # the picture's place in the detector's square
    windows = repairer.windows(batch.x.shape)
    assert tile_starts(48, 32, 24) == [0, 16] and tile_starts(100, 32, 24) == [0, 24, 48, 68]  # 8 crops cover it
    assert windows == [(0, 0, 0), (0, 0, 24), (0, 16, 0), (0, 16, 24)]
    top = arpro.repair(batch.x, detector, repairer, settings=arpro.RepairSettings(steps=1, mask="top", mask_quantile=0.5),
                       progress=False, arms=["infill"], valid=batch.valid)
    assert top.omega.any() and not ((top.omega[0] > 0) & ~detector.box.valid().bool()).any()  # omega is never on the padding
    assert result.arms["guided"].x_fix.shape == (1, 3, 48, 100)
    outside = result.omega_input == 0
    assert torch.equal(result.arms["guided"].x_fix[outside], batch.x[outside])
    data.write_repairs(result, tmp_path / "out", batch)
    with Image.open(tmp_path / "out" / "wide_repair.png") as repaired:
        assert repaired.size == (100, 48) and repaired.mode == "L"
        after = np.asarray(repaired)
    omega = np.asarray(Image.open(tmp_path / "out" / "wide_omega.png")) > 0
    assert np.array_equal(after[~omega], pixels[~omega]) and not np.array_equal(after[omega], pixels[omega])
    with pytest.raises(arpro.ArproError, match="tiled must be"):
        textures(tiled="yes").tiled

def changes_where(result, keep):
    """The largest change each arm made where ``keep`` is set."""
    return {arm: (a.x_fix - result.x_bad).abs()[keep].max().item() for arm, a in result.arms.items()}


def test_vision_immutable_pixels_and_range(tmp_path):
    data = registry.get("dataset", "textures")(root=None, category="brick", image_size=32, n_train=8, n_test_normal=2,
                                              n_test_anomalous=2, train_steps=2, batch_size=4,
                                              ddpm_block_out_channels=[16, 32], ddpm_norm_num_groups=8)
    torch.manual_seed(0)
    detector = registry.get("detector", "fastflow").for_dataset(data)
    detector.fit(data.train().x, seed=0, progress=False)
    repairer = registry.get("repairer", "ddpm").for_dataset(data)
    repairer.fit(data.train().x, seed=0, progress=False)
    bad = data.test().anomalous()
    pixels = np.zeros((32, 32), dtype=np.float32)
    pixels[:, :16] = 1  # the left half may not change
    np.save(tmp_path / "keep.npy", pixels)
    result = arpro.repair(bad.x, detector.eval(), repairer.eval(), dataset=data, progress=False, mask="top",
                          properties=[("+immutable", {"mask": str(tmp_path / "keep.npy")}), "+range"],
                          settings=arpro.RepairSettings(steps=4, guidance_scale=20.0))
    keep = torch.zeros_like(bad.x, dtype=torch.bool)
    keep[..., :16] = True
    changes = changes_where(result, keep)
    assert all(changes[arm] == 0.0 for arm in ("infill", "guided")) and changes["baseline"] > 0
    for arm in result.arms.values():
        assert arm.x_fix.min() >= -1 and arm.x_fix.max() <= 1 and arm.holds["range"].all()
