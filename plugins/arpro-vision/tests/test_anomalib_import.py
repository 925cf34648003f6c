"""anomalib's own checkpoints load as arpro detectors and score exactly as anomalib does;
pretrained backbone files in torchvision's and timm's layouts load as ``backbone_weights``.

The checkpoints come from anomalib's ``Engine.fit`` (the ``anomalib_checkpoints`` fixture);
anomalib's side of every comparison is its own ``load_from_checkpoint`` of the same file.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from arpro import ArproError
from arpro.io.checkpoint import load, obtain_model, save
from arpro.plugin_api import registry
from arpro.testing import check_decomposition

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def images(size: int, count: int = 3) -> torch.Tensor:
    """Images in [0, 1], anomalib's input range (arpro's is [-1, 1])."""
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_decomposition_identity_of_anomalib_checkpoints(name, anomalib_checkpoints):
    """s(x) = sum(alpha) + beta for detectors read from anomalib's own ``Engine.fit`` checkpoints."""
    detector = load(anomalib_checkpoints[name], "detector", name)
    size = detector.config["input_shape"][-1]
    check_decomposition(detector, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1)


def test_fastflow_checkpoint_scores_as_anomalib(anomalib_checkpoints):
    from anomalib.models import Fastflow
    from anomalib.models.image.fastflow.loss import FastflowLoss

    path = anomalib_checkpoints["fastflow"]
    detector = load(path, "detector", "fastflow")
    assert {k: detector.config[k] for k in ("input_shape", "backbone", "flow_steps", "hidden_ratio", "conv3x3_only")} == {
        "input_shape": [3, 64, 64], "backbone": "resnet18", "flow_steps": 2, "hidden_ratio": 1.0, "conv3x3_only": False}
    theirs = Fastflow.load_from_checkpoint(path, pre_processor=Fastflow.configure_pre_processor((64, 64))).model
    x01 = images(64)
    normed = (x01 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        d = detector.decompose(2 * x01 - 1)
        outputs = detector.flow_outputs(2 * x01 - 1)
        theirs.train()  # anomalib's training forward: (hidden variables, log-Jacobians), FastflowLoss on them
        losses = torch.stack([FastflowLoss()(*theirs(normed[i : i + 1])) for i in range(len(x01))])
        theirs.eval()  # anomalib's raw (pre-normalisation) output: anomaly map and its max
        prediction = theirs(normed)
    gaussian_constant = sum(0.5 * z[0].numel() * math.log(2 * math.pi) for z, _ in outputs)
    # s is anomalib's per-image FastFlow loss (the NLL it trains on) plus the Gaussian constant
    torch.testing.assert_close(d.score, losses + gaussian_constant, rtol=1e-5, atol=1e-3)
    # anomalib's map is a per-scale transform of the same z: mean_k bilinear(-exp(-mean_c z_k^2 / 2))
    rebuilt = torch.stack([F.interpolate(-torch.exp(-0.5 * z.pow(2).mean(1, keepdim=True)), size=(64, 64),
                                         mode="bilinear", align_corners=False) for z, _ in outputs], -1).mean(-1)
    torch.testing.assert_close(rebuilt, prediction.anomaly_map, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rebuilt.amax((-2, -1)).flatten(), prediction.pred_score.flatten(), rtol=1e-5, atol=1e-6)


def test_efficientad_checkpoint_scores_as_anomalib(anomalib_checkpoints):
    from anomalib.models import EfficientAd

    path = anomalib_checkpoints["efficientad"]
    detector = load(path, "detector", "efficientad")
    assert {k: detector.config[k] for k in ("input_shape", "teacher_out_channels", "model_size", "padding",
                                             "use_autoencoder")} == {
        "input_shape": [3, 256, 256], "teacher_out_channels": 16, "model_size": "small", "padding": False,
        "use_autoencoder": True}
    theirs = EfficientAd.load_from_checkpoint(path).model.eval()
    assert theirs.is_set(theirs.quantiles)  # the map normalisation inside anomalib's model is exercised
    x01 = images(256, count=2)
    with torch.no_grad():
        d = detector.decompose(2 * x01 - 1)
        prediction = theirs(x01)  # anomalib's raw output, before its post-processor's min-max normalisation
    torch.testing.assert_close(d.alpha, prediction.anomaly_map[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d.score, prediction.anomaly_map.flatten(1).sum(1), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(d.alpha.amax((1, 2)), prediction.pred_score.flatten(), rtol=1e-5, atol=1e-6)
    assert torch.equal(d.beta, torch.zeros(2))


@pytest.mark.parametrize("name", ["fastflow", "efficientad"])
def test_exported_torch_model_is_refused_with_a_recipe_that_works(anomalib_checkpoints, name, tmp_path, monkeypatch):
    from anomalib.models import EfficientAd, Fastflow

    path = anomalib_checkpoints[name]
    cls, size = {"fastflow": (Fastflow, 64), "efficientad": (EfficientAd, 256)}[name]
    theirs = cls.load_from_checkpoint(path, pre_processor=cls.configure_pre_processor((size, size)))
    exported = theirs.to_torch(tmp_path)
    with pytest.raises(ArproError, match="does not unpickle") as refused:
        load(exported, "detector", name)
    message = str(refused.value)
    assert "\n" not in message
    # run the line the error gives, as a user who trusts the file would
    monkeypatch.chdir(tmp_path)
    exec(re.search(r'python -c "(.*)"', message).group(1), {})
    converted, original = load(tmp_path / "model.ckpt", "detector", name), load(path, "detector", name)
    assert converted.config == {**original.config, "backbone_weights": str(tmp_path / "model.ckpt"),
                                "weights_source": f"file {tmp_path / 'model.ckpt'}",
                                "weights_sha256": converted.config["weights_sha256"]}
    theirs = original.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in converted.state_dict().items())  # so the same scores


def test_imported_detector_is_calibrated_on_the_dataset_and_checks_its_size(anomalib_checkpoints, tmp_path):
    textures = registry.get("dataset", "textures")
    dataset = textures(root=None, category="brick", image_size=64, n_train=4, n_test_normal=2, n_test_anomalous=2)
    detector = obtain_model("detector", "fastflow", dataset, checkpoint_path=anomalib_checkpoints["fastflow"])
    assert detector.is_calibrated and detector.tau.shape == (64, 64) and detector.train_scores.shape == (4,)
    # kept as an arpro checkpoint, it reloads with the same tensors and thresholds
    again = load(save(detector, tmp_path / "fastflow.safetensors"), "detector", "fastflow")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in detector.state_dict().items())
    small = textures(root=None, category="brick", image_size=32, n_train=4, n_test_normal=2, n_test_anomalous=2)
    with pytest.raises(ArproError, match=r"built for 64x64 images, got 32x32.*--option image_size=64"):
        obtain_model("detector", "fastflow", small, checkpoint_path=anomalib_checkpoints["fastflow"])


def test_fastflow_config_is_inferred_from_tensors_alone(anomalib_checkpoints, tmp_path):
    path = anomalib_checkpoints["fastflow"]
    checkpoint = torch.load(path, weights_only=True)
    model_state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    torch.save(model_state, tmp_path / "bare.pt")  # the torch model's state dict: no hyper-parameters, no size
    bare = load(tmp_path / "bare.pt", "detector", "fastflow").config
    assert bare == {**load(path, "detector", "fastflow").config, "backbone_weights": str(tmp_path / "bare.pt"),
                    "weights_source": f"file {tmp_path / 'bare.pt'}", "weights_sha256": bare["weights_sha256"]}
    transforms = checkpoint["anomalib_pre_processor_config"]["transform"]["init_args"]["transforms"]
    del transforms[1]  # Resize only: anomalib's model would see unnormalised images
    torch.save(checkpoint, tmp_path / "unnormalised.ckpt")
    with pytest.raises(ArproError, match="normalises with nothing; arpro's FastFlow uses ImageNet's"):
        load(tmp_path / "unnormalised.ckpt", "detector", "fastflow")


def test_torch_files_that_are_not_anomalib_checkpoints_are_refused(tmp_path):
    torch.save({"weights": [1, 2]}, tmp_path / "other.ckpt")
    with pytest.raises(ArproError, match="not an anomalib checkpoint"):
        load(tmp_path / "other.ckpt", "detector", "fastflow")
    torch.save({"state_dict": {"model.conv.weight": torch.zeros(1)}}, tmp_path / "wrong.ckpt")
    with pytest.raises(ArproError, match="not an anomalib EfficientAd checkpoint"):
        load(tmp_path / "wrong.ckpt", "detector", "efficientad")


def resnet_state(source: str, arch: str) -> dict[str, torch.Tensor]:
    """A randomly initialised ImageNet classifier's state dict, as torchvision or timm write it."""
    torch.manual_seed(3)
    if source == "torchvision":
        import torchvision

        return getattr(torchvision.models, arch)().state_dict()
    import timm

    return timm.create_model(arch, pretrained=False).state_dict()


@pytest.mark.parametrize(("source", "arch"), [("torchvision", "resnet18"), ("timm", "resnet18"),
                                              ("torchvision", "wide_resnet50_2")])
def test_backbone_weights_files_load_exactly(source, arch, tmp_path):
    state = resnet_state(source, arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    detector = registry.get("detector", "fastflow")(input_shape=[3, 32, 32], backbone=arch, flow_steps=1,
                                                   backbone_weights=str(path))
    loaded = detector.model.feature_extractor.state_dict()
    assert {k for k in state if not k.startswith(("fc.", "layer4."))} == set(loaded)
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_timm_and_torchvision_wide_resnet_files_share_one_layout():
    """So the torchvision file above stands for timm's too (shapes only: built on the meta device)."""
    import timm
    import torchvision

    with torch.device("meta"):
        ours = {k: v.shape for k, v in torchvision.models.wide_resnet50_2().state_dict().items()}
        theirs = {k: v.shape for k, v in timm.create_model("wide_resnet50_2", pretrained=False).state_dict().items()}
    assert ours == theirs


def test_wrong_backbone_files_are_refused(tmp_path):
    state = resnet_state("torchvision", "resnet18")
    torch.save({k: v for k, v in state.items() if not k.startswith("layer3.")}, tmp_path / "cut.pth")
    fastflow = registry.get("detector", "fastflow")
    with pytest.raises(ArproError, match=r"not a resnet18 state dict: no 'layer3\."):
        fastflow(input_shape=[3, 32, 32], flow_steps=1, backbone_weights=str(tmp_path / "cut.pth"))
    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ArproError, match=r"do not fit the resnet18: 'conv1.weight' is \[64, 3, 3, 3\] in the file"):
        fastflow(input_shape=[3, 32, 32], flow_steps=1, backbone_weights=str(tmp_path / "other.pth"))
    torch.save(torch.nn.Linear(1, 1), tmp_path / "module.pth")  # a whole network pickled, not its state dict
    with pytest.raises(ArproError, match=r"pickles torch\.nn\.modules\.linear\.Linear.*torch\.save\(network\.state_dict"):
        fastflow(input_shape=[3, 32, 32], flow_steps=1, backbone_weights=str(tmp_path / "module.pth"))


def test_efficientad_teacher_file_loads_exactly(tmp_path):
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    torch.manual_seed(4)
    teacher = EfficientAdModel(teacher_out_channels=384).teacher.state_dict()  # pretrained_teacher_small.pth's layout
    torch.save(teacher, tmp_path / "pretrained_teacher_small.pth")
    efficientad = registry.get("detector", "efficientad")
    detector = efficientad(input_shape=[3, 64, 64], teacher_out_channels=384,
                           backbone_weights=str(tmp_path / "pretrained_teacher_small.pth"))
    assert all(torch.equal(v, teacher[k]) for k, v in detector.model.teacher.state_dict().items())
    with pytest.raises(ArproError, match=r"teacher_out_channels.*\[384, 256, 4, 4\] in the file, \[64, 256, 4, 4\]"):
        efficientad(input_shape=[3, 64, 64], backbone_weights=str(tmp_path / "pretrained_teacher_small.pth"))


def test_no_weights_warning_says_how_to_make_the_file(monkeypatch, capsys):
    from arpro_vision import backbone

    monkeypatch.setattr(backbone, "_warned", set())
    registry.get("detector", "fastflow")(input_shape=[3, 32, 32])
    registry.get("detector", "efficientad")(input_shape=[3, 32, 32])
    err = capsys.readouterr().err
    assert "torch.save(torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict(), 'resnet18.pth')" in err
    assert "download_and_extract(Path('.'), WEIGHTS_DOWNLOAD_INFO)" in err and "teacher_out_channels=384" in err
    assert "--option fastflow_backbone_weights=PATH" in err
