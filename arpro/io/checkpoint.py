"""Saving, loading and obtaining fitted detectors and repairers.

A checkpoint is one ``.safetensors`` file: the model's tensors, plus a JSON header entry
``arpro`` holding ``{"kind", "name", "config"}``. Loading rebuilds ``cls(**config)`` from
the registered class and fills its tensors; nothing is unpickled. A model may also read and
write a folder in another tool's format (``Model.folder_format``, e.g. diffusers').
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from arpro.errors import ArproError
from arpro.io.outputs import make_ordinary, staging, unmark
from arpro.plugin_api import registry
from arpro.plugin_api.models import Detector, Model
from arpro.runtime.progress import progress_phase

if TYPE_CHECKING:
    from arpro.plugin_api.protocols import Dataset


def save(model: Model, path: Path, extra: dict[str, dict] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (a staging file renamed into place); ``extra``
    header entries (e.g. a repairer's validation figure) are stored as JSON beside ``arpro``."""
    path = Path(path)
    kind = "detector" if isinstance(model, Detector) else "repairer"
    header = {"kind": kind, "name": model.name, "config": model.config}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise ArproError(f"{model.name}: not saved, {', '.join(broken[:3])} hold values that are not finite (NaN or "
                         "Inf): the training data's statistics overflow float32 or training diverged; rescale the data")
    metadata = {"arpro": json.dumps(header), **{key: json.dumps(value) for key, value in (extra or {}).items()}}
    with staging(path, directory=False) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)  # writes a new file, 0600
        except Exception as error:  # safetensors' own error type, e.g. for a full disk
            raise ArproError(f"cannot write checkpoint {path}: {str(error).splitlines()[0]}") from None
        make_ordinary(tmp)
        os.replace(tmp, path)
    return path


def save_folder(model: Model, path: Path) -> Path:
    """Write ``model`` in its ``folder_format`` to the folder ``path``, whole or not at all: a
    staged folder swapped into place. A folder there already is replaced only if it holds
    nothing but what the new one holds (an earlier save), so no user's files are removed."""
    path = Path(path)
    with staging(path, directory=True) as tmp:
        model.save_folder(tmp)
        if path.is_dir() and not {p.name for p in path.iterdir()} <= {p.name for p in tmp.iterdir()}:
            raise ArproError(f"{path} holds files that are not a {model.folder_format} checkpoint; choose another --out")
        with staging(path, directory=True) as previous:  # removed once the new folder is in place
            unmark(tmp)
            unmark(previous)  # empty now, so that the old folder can replace it
            if path.exists():
                os.replace(path, previous)
            os.replace(tmp, path)
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's header entries (``arpro`` and any extras), or an error saying why it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ArproError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as error:
        raise ArproError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): {error}") from None


def read_header(path: Path) -> dict:
    """The ``arpro`` header of a checkpoint, or an error saying why the file is not one."""
    path = Path(path)
    metadata = read_metadata(path)
    if "arpro" not in metadata:
        raise ArproError(f"{path} is a safetensors file but not an arpro checkpoint (no 'arpro' header)")
    try:
        header = json.loads(metadata["arpro"])
    except json.JSONDecodeError:
        header = None
    if not (isinstance(header, dict) and isinstance(header.get("kind"), str) and isinstance(header.get("name"), str)
            and isinstance(header.get("config"), dict)):
        raise ArproError(f"{path} has a malformed arpro header (expected kind, name and a config mapping)")
    return header


def load(path: Path, kind: str, name: str | None = None) -> Model:
    """Load a ``kind`` ("detector" or "repairer") checkpoint; ``name`` must match when given. A file
    in another library's format is read by the named class (:meth:`Model.from_foreign_checkpoint`)."""
    path = Path(path)
    foreign = registry.get(kind, name).from_foreign_checkpoint(path) if name is not None else None
    if foreign is not None:
        return foreign.eval()
    header = read_header(path)
    if header["kind"] != kind:
        raise ArproError(f"{path} holds a {header['kind']}, not a {kind}")
    if name is not None and header["name"] != name:
        raise ArproError(f"{path} is a checkpoint of {kind} {header['name']!r}, not {name!r}")
    cls = registry.get(kind, header["name"])
    config = cls.upgrade_config(dict(header["config"]))
    cls.check_config(config, str(path))
    model = cls(**config)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        wanted = model.state_dict()
        other = next((k for k, v in tensors.items() if k in wanted and v.dtype != wanted[k].dtype), None)
        if other is not None:
            raise ArproError(f"checkpoint {path} holds {other!r} as {tensors[other].dtype}, not the model's "
                             f"{wanted[other].dtype}")
        model.load_state_dict(tensors, assign=True)
    except ArproError:
        raise
    except Exception as error:
        raise ArproError(f"checkpoint {path} does not fit {kind} {header['name']!r}: {error}") from None
    model = _finite(model, path)
    model.loaded_from = path  # where it came from: arpro check's record of it lies beside it
    return model.eval()


def check_training_data(x: Tensor, dataset: Dataset) -> Tensor:
    """``x`` (the normal training split), refused with the first offending feature's name when it holds
    NaN or Inf or values whose squares overflow float32 (every variance, every squared error would):
    a model fitted on it would be nothing but NaN."""
    limit = math.sqrt(torch.finfo(torch.float32).max)
    bad = ~x.isfinite() | (x.abs() > limit)
    if bad.any():
        feature = bad.flatten(0, -2).any(0).nonzero().flatten()[0].item() if x.dim() > 1 else 0
        names = dataset.feature_names() or []
        which = repr(names[feature]) if feature < len(names) else f"feature {feature}"
        raise ArproError(f"the training data of {dataset.name!r} holds values that are not finite or whose squares "
                         f"overflow float32 (|x| > {limit:.2g}) in {which}, in the model's units: rescale or drop it")
    return x


def _finite(model: Model, path: Path) -> Model:
    broken = next((k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()), None)
    if broken is not None:
        raise ArproError(f"checkpoint {path} holds values that are not finite (NaN or Inf) in {broken!r}")
    return model


def obtain_model(
    kind: str, name: str, dataset: Dataset, *, checkpoint_path: Path | None = None, seed: int = 0, progress: bool = True
) -> Model:
    """A fitted model: from ``checkpoint_path``, from the plugin's bundled checkpoint for
    ``dataset``, or trained on ``dataset``'s normal training split now."""
    cls = registry.get(kind, name)
    if checkpoint_path is not None and Path(checkpoint_path).is_dir():  # the model's own folder format
        return _finite(cls.from_folder(Path(checkpoint_path), dataset), checkpoint_path).eval()
    if checkpoint_path is not None:
        model = load(checkpoint_path, kind, name)
        if isinstance(model, Detector) and not model.is_calibrated:  # a foreign checkpoint has no thresholds
            model.calibrate(dataset.train().x)
        return model
    bundled = cls.bundled_checkpoint(dataset)
    if bundled is not None:
        return load(bundled, kind, name)
    torch.manual_seed(seed)  # the initial weights: torch seeds its global generator at random in each process
    model = cls.for_dataset(dataset)
    with progress_phase(f"fitting {kind} {name}", enabled=progress):  # a fit's silent stretches included
        model.fit(check_training_data(dataset.train().x, dataset), seed=seed, progress=progress)
    return model.eval()
