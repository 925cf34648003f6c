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


def warn_random_init(name: str, what: str, recipe: str) -> None:
    """Say once per process, on stderr, that ``what`` is randomly initialised, and how to make
    the local weights file (``recipe``, a command for a machine with network) that fixes it."""
    if name in _warned:
        return
    _warned.add(name)
    print(
        f"warning: {name}: no backbone_weights file given, so the {what} is randomly initialised "
        f"(pre_trained=False), not pretrained. Make the file once on a machine with network: {recipe} "
        "then pass backbone_weights=PATH (arpro train detector --model-option backbone_weights=PATH, "
        f"or --option {name}_backbone_weights=PATH on repair/evaluate)",
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
            from arpro_vision.anomalib_checkpoint import read_torch_file

            state = read_torch_file(path, "Save the network's weights alone: torch.save(network.state_dict(), PATH)")
    except ArproError:
        raise
    except Exception as error:
        raise ArproError(f"cannot read backbone weights {path}: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArproError(f"backbone weights {path} do not hold a state dict")
    return state


def load_backbone(module: nn.Module, path: str | Path, what: str, prefer: str = "") -> None:
    """Fill every tensor of ``module`` from the state dict in the file ``path``, checked.

    The file may hold more than ``module`` (a classifier's ``fc``, a ``layer4`` the features do
    not use, a whole anomalib checkpoint) and its keys may carry a prefix (``module.``,
    ``model.feature_extractor.``); the prefix under which all of ``module``'s tensors are found
    with their shapes is used, one ending in ``prefer`` first. A file lacking one of them, or
    holding it with another shape, is refused: nothing is half-loaded.
    """
    wanted = module.state_dict()
    state = load_weights(path)
    anchor = next(iter(wanted))
    prefixes = {k[: -len(anchor)] for k in state if isinstance(k, str) and k.endswith(anchor)}
    complete = sorted((p for p in prefixes if all(p + k in state for k in wanted)),
                      key=lambda p: (not p.endswith(prefer), len(p)))
    if not complete:
        missing = next(k for k in wanted if k not in state)
        raise ArproError(f"backbone weights {path} are not a {what} state dict: no {missing!r}")
    fits = [p for p in complete if all(getattr(state[p + k], "shape", None) == v.shape for k, v in wanted.items())]
    if not fits:
        key = next(k for k, v in wanted.items() if getattr(state[complete[0] + k], "shape", None) != v.shape)
        found = getattr(state[complete[0] + key], "shape", None)
        raise ArproError(f"backbone weights {path} do not fit the {what}: {complete[0] + key!r} is "
                         f"{list(found) if found is not None else 'no tensor'} in the file, "
                         f"{list(wanted[key].shape)} in the model")
    module.load_state_dict({k: state[fits[0] + k] for k in wanted})


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


def check_input_size(name: str, input_shape: list[int], x: Tensor) -> None:
    """Refuse images of another size than the detector was built for (e.g. an imported 256 px model
    given the dataset's default 64 px), naming the dataset option that fixes it."""
    expected = tuple(input_shape[1:])
    if tuple(x.shape[-2:]) != expected:
        size = f"{expected[0]}x{expected[1]}"
        hint = f" (--option image_size={expected[0]})" if expected[0] == expected[1] else ""
        raise ArproError(f"{name} was built for {size} images, got {x.shape[-2]}x{x.shape[-1]}: "
                         f"read the images at {size}{hint}")
