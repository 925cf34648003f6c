"""Shared pieces of the image detectors: local backbone weights, frozen (hidden) modules, seeding.

Frozen random networks (the FastFlow backbone, the EfficientAD teacher, when no
``backbone_weights`` file is given) are a deterministic function of their seed: they are
rebuilt from ``backbone_seed`` on construction and are not stored in checkpoints, which
keeps the bundled checkpoints small.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from arpro import ArproError

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_warned: set[str] = set()


def warn_random_init(name: str, what: str) -> None:
    """Say once per process, on stderr, that ``what`` is randomly initialised (no pretrained weights)."""
    if name in _warned:
        return
    _warned.add(name)
    print(
        f"warning: {name}: no backbone_weights file given, so the {what} is randomly initialised "
        "(pre_trained=False), not ImageNet-pretrained; pass backbone_weights=PATH (--model-option backbone_weights=PATH) "
        "to use pretrained weights",
        file=sys.stderr,
    )


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local ``.safetensors`` or torch file (``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ArproError(f"backbone weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ArproError(f"cannot read backbone weights {path}: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArproError(f"backbone weights {path} do not hold a state dict")
    return state


def hide_module(owner: nn.Module, attribute: str) -> nn.Module:
    """Take ``owner.attribute`` out of the module tree (not in state_dict, not trained) but keep it usable."""
    module = owner._modules.pop(attribute)
    module.requires_grad_(False).eval()
    object.__setattr__(owner, attribute, module)
    return module


class FrozenModulesMixin:
    """Keeps modules taken out of the module tree (see :func:`hide_module`) on the same device
    and dtype as the rest of the detector: ``.to()``, ``.double()`` etc. reach them too."""

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        for module in self.__dict__.get("_frozen_modules", []):
            module._apply(fn, *args, **kwargs)
        return result

    def _keep_frozen(self, module: nn.Module) -> None:
        self.__dict__.setdefault("_frozen_modules", []).append(module)


def seeded(seed: int):
    """A context that restores torch's global RNG afterwards (the caller seeds it inside)."""
    return torch.random.fork_rng(devices=[])


def image_hw(input_shape: list[int]) -> tuple[int, int]:
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ArproError(f"image detectors need [3, H, W] inputs, got {list(input_shape)}")
    return int(input_shape[1]), int(input_shape[2])
