"""Saving and loading fitted detectors and repairers.

A checkpoint is one ``.safetensors`` file: the model's tensors, plus a JSON header entry
``arpro`` holding ``{"kind", "name", "config"}``. Loading rebuilds ``cls(**config)`` from
the registered class and fills its tensors; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from arpro import plugins
from arpro.errors import ArproError
from arpro.protocols import Detector, Model


def save(model: Model, path: Path) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    kind = "detector" if isinstance(model, Detector) else "repairer"
    header = {"kind": kind, "name": model.name, "config": model.config}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"arpro": json.dumps(header)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_header(path: Path) -> dict:
    """The ``arpro`` header of a checkpoint, or an error saying why the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise ArproError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:
        raise ArproError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if "arpro" not in metadata:
        raise ArproError(f"{path} is a safetensors file but not an arpro checkpoint (no 'arpro' header)")
    return json.loads(metadata["arpro"])


def load(path: Path, kind: str, name: str | None = None) -> Model:
    """Load a ``kind`` ("detector" or "repairer") checkpoint; ``name`` must match when given."""
    path = Path(path)
    header = read_header(path)
    if header["kind"] != kind:
        raise ArproError(f"{path} holds a {header['kind']}, not a {kind}")
    if name is not None and header["name"] != name:
        raise ArproError(f"{path} is a checkpoint of {kind} {header['name']!r}, not {name!r}")
    cls = plugins.get(kind, header["name"])
    model = cls(**header["config"])
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(tensors, assign=True)
    except Exception as error:
        raise ArproError(f"checkpoint {path} does not fit {kind} {header['name']!r}: {error}") from None
    return model.eval()
