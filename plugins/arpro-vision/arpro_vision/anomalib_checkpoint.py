"""Reading anomalib's own FastFlow and EfficientAD checkpoints into arpro's detectors.

``Engine.fit`` writes a Lightning checkpoint (``<root>/<Model>/<data>/vN/weights/lightning/model.ckpt``):
a zip of tensors and plain data, plus, for EfficientAD, the ``EfficientAdModelSize`` enum in
its hyper-parameters. It is read with ``torch.load(weights_only=True)`` and an allow-list of
that one enum, so nothing else can be unpickled. The detector's config (image size, backbone,
flow steps, hidden ratio, teacher channels, model size, padding) comes from the
hyper-parameters, the pre-processor's ``Resize`` and the tensor shapes. The ``model.*``
tensors are anomalib's torch model, which the arpro detectors hold under the same names.

anomalib's torch export (``ExportType.TORCH``, ``model.pt``) pickles the whole Lightning
module: it is refused with the one-liner that turns it into a plain checkpoint of this layout.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arpro import ArproError

IMAGENET = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]  # the mean and std FastFlow inputs are normalised with


def plain_checkpoint_recipe(path: Path | str) -> str:
    """The command that writes a plain (tensors and plain data) checkpoint from an exported model."""
    return (f"python -c \"import torch; m = torch.load('{path}', weights_only=False)['model']; "
            "torch.save({'state_dict': m.state_dict(), 'input_size': list(m.input_size), 'hyper_parameters': "
            "{k: v for k, v in m.hparams.items() if isinstance(v, (bool, int, float, str))}}, 'model.ckpt')\"")


def read_torch_file(path: Path, remedy: str) -> Any:
    """A torch file's content, unpickling nothing but tensors, plain data and ``EfficientAdModelSize``;
    a file that pickles anything else is refused with ``remedy``."""
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModelSize

    try:
        with torch.serialization.safe_globals([EfficientAdModelSize]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = found.group(1) if found else "a Python object"
        raise ArproError(f"{path} pickles {what}, which arpro does not unpickle. {remedy}") from None
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArproError(f"cannot read {path}: {reason}") from None


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """``path``'s checkpoint dict (with ``state_dict``), or None when it is no torch file (a safetensors one)."""
    path = Path(path)
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return None
    content = read_torch_file(path, "An anomalib export to torch (ExportType.TORCH) pickles the whole model: pass "
                              "the Lightning checkpoint Engine.fit wrote (weights/lightning/model.ckpt), or, if you "
                              f"trust the file, write a plain one: {plain_checkpoint_recipe(path)}")
    if isinstance(content, dict) and all(isinstance(v, Tensor) for v in content.values()):
        content = {"state_dict": content}  # a bare state dict: everything inferred from its tensors
    if not (isinstance(content, dict) and isinstance(content.get("state_dict"), dict)):
        raise ArproError(f"{path} is a torch file but not an anomalib checkpoint (no 'state_dict'); "
                         f"for an exported model.pt write one with: {plain_checkpoint_recipe(path)}")
    model_state = {k: v for k, v in content["state_dict"].items() if k.startswith("model.")}
    if not model_state:  # a torch model's own state dict, without the Lightning module's "model." prefix
        model_state = {f"model.{k}": v for k, v in content["state_dict"].items()}
    return {**content, "state_dict": model_state}


def _preprocessing(checkpoint: dict[str, Any], path: Path) -> tuple[list[int] | None, list | None]:
    """The size of the pre-processor's ``Resize`` and the (mean, std) of its ``Normalize``, where recorded."""
    size, normalize = checkpoint.get("input_size"), None
    transform = (checkpoint.get("anomalib_pre_processor_config") or {}).get("transform") or {}
    steps = transform.get("init_args", {}).get("transforms", [transform]) if isinstance(transform, dict) else []
    for step in steps:
        kind, args = str(step.get("class_path", "")).rsplit(".", 1)[-1], step.get("init_args", {})
        if kind == "Resize":
            size = args.get("size")
            size = [size, size] if isinstance(size, int) else size
        elif kind == "Normalize":
            normalize = [list(args.get("mean", [])), list(args.get("std", []))]
        elif kind:
            raise ArproError(f"{path}: anomalib's pre-processor holds a {kind}, which arpro does not apply; "
                             "only Resize (and ImageNet Normalize for FastFlow) are supported")
    return (list(size) if size is not None else None), normalize


def _size(checkpoint: dict[str, Any], path: Path, from_tensors: list[int] | None) -> list[int]:
    size, _ = _preprocessing(checkpoint, path)
    if size is None:
        size = from_tensors
    if size is None:
        raise ArproError(f"{path} does not record the image size: add 'input_size': [H, W] to it "
                         f"(the exported model's m.input_size; see {plain_checkpoint_recipe('model.pt')})")
    if from_tensors is not None and list(size) != list(from_tensors):
        raise ArproError(f"{path}: its pre-processor resizes to {size}, its tensors are for {from_tensors}")
    return [int(s) for s in size]


def fastflow_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """``FastFlowDetector`` config of an anomalib ``Fastflow`` checkpoint."""
    state, hparams = checkpoint["state_dict"], checkpoint.get("hyper_parameters") or {}
    if "model.norms.0.weight" not in state or "model.fast_flow_blocks.0.module_list.0.w_perm" not in state:
        raise ArproError(f"{path} is not an anomalib Fastflow checkpoint with a resnet backbone "
                         "(no model.norms / model.fast_flow_blocks tensors)")
    channels, h, w = state["model.norms.0.weight"].shape
    backbone = hparams.get("backbone", {64: "resnet18", 256: "wide_resnet50_2"}.get(int(channels), "unknown"))
    _, normalize = _preprocessing(checkpoint, path)
    recorded = "anomalib_pre_processor_config" in checkpoint  # else a plain checkpoint: the default assumed
    if (normalize is None and recorded) or (normalize is not None and
                                            [[round(float(v), 3) for v in row] for row in normalize] != IMAGENET):
        raise ArproError(f"{path}: anomalib's pre-processor normalises with {normalize or 'nothing'}; arpro's FastFlow "
                         f"uses ImageNet's mean and std {IMAGENET}, as anomalib's default pre-processor does")
    steps = {int(k.split(".")[4]) for k in state if k.startswith("model.fast_flow_blocks.0.module_list.")}
    hidden = state["model.fast_flow_blocks.0.module_list.0.subnet.0.weight"].shape[0]
    odd_kernel = state.get("model.fast_flow_blocks.0.module_list.1.subnet.0.weight")
    return {
        "input_shape": [3, *_size(checkpoint, path, [int(h) * 4, int(w) * 4])],
        "backbone": backbone,
        "flow_steps": int(hparams.get("flow_steps", len(steps))),
        "hidden_ratio": float(hparams.get("hidden_ratio", hidden / (channels - channels // 2))),
        "conv3x3_only": bool(hparams.get("conv3x3_only", odd_kernel is not None and odd_kernel.shape[-1] == 3)),
    }


def efficientad_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """``EfficientAdDetector`` config of an anomalib ``EfficientAd`` checkpoint (both branches)."""
    state, hparams = checkpoint["state_dict"], checkpoint.get("hyper_parameters") or {}
    if "model.teacher.conv1.weight" not in state or "model.ae.encoder.enconv1.weight" not in state:
        raise ArproError(f"{path} is not an anomalib EfficientAd checkpoint (no model.teacher / model.ae tensors)")
    if _preprocessing(checkpoint, path)[1] is not None:
        raise ArproError(f"{path}: anomalib's pre-processor normalises the images; "
                         "EfficientAD's networks do that themselves")
    medium = "model.teacher.conv6.weight" in state
    last = state["model.teacher.conv6.weight" if medium else "model.teacher.conv4.weight"]
    model_size = hparams.get("model_size", "medium" if medium else "small")
    padding, pad_maps = bool(hparams.get("padding", False)), bool(hparams.get("pad_maps", True))
    if pad_maps == padding:
        raise ArproError(f"{path}: padding={padding} with pad_maps={pad_maps}; arpro's EfficientAD pads the maps "
                         "exactly when the networks are unpadded (anomalib's default)")
    return {
        "input_shape": [3, *_size(checkpoint, path, None)],
        "teacher_out_channels": int(hparams.get("teacher_out_channels", last.shape[0])),
        "model_size": getattr(model_size, "value", model_size),
        "padding": padding,
        "use_autoencoder": True,
    }


CONFIGS = {"fastflow": fastflow_config, "efficientad": efficientad_config}


def import_detector(cls, path: Path):
    """``cls`` (FastFlow or EfficientAD) filled from anomalib's checkpoint at ``path``, or None
    when ``path`` is not a torch file. Its backbone (teacher) is read from the same file."""
    checkpoint = read_checkpoint(path)
    if checkpoint is None:
        return None
    try:
        config = CONFIGS[cls.name](checkpoint, Path(path))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:  # plain data of an unexpected shape
        raise ArproError(f"{path} is not an anomalib {cls.name} checkpoint arpro can read "
                         f"({type(error).__name__}: {error})") from None
    cls.check_config(config, str(path))
    detector = cls(**config, backbone_weights=str(path))
    state = checkpoint["state_dict"]
    expected = {k for k in detector.state_dict() if k.startswith("model.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ArproError(f"{path} does not fit {cls.name} {config}: "
                         f"{'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]}")
    try:
        detector.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError) as error:
        raise ArproError(f"{path} does not fit {cls.name} {config}: {str(error).splitlines()[-1].strip()}") from None
    broken = next((k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if broken is not None:
        raise ArproError(f"{path} holds values that are not finite (NaN or Inf) in {broken!r}")
    return detector
