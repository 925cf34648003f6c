"""Where models run: the device and precision a run asks for, checked before anything loads,
and :func:`place`, which puts a model on a Lightning Fabric's device at its precision."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from arpro.errors import ArproError

if TYPE_CHECKING:
    from lightning.fabric import Fabric

    from arpro.models import Model

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
_on_device: ContextVar[bool] = ContextVar("arpro_on_device", default=False)


def check_device(device: str) -> str:
    """``device`` as a run records it: ``auto`` becomes ``cuda`` where CUDA is present, else ``cpu``
    (never ``mps``, which must be asked for). A device this machine lacks is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise ArproError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ArproError(f"--device {device}: no CUDA device is available here; use --device cpu (or auto)")
    if colon and int(index) >= torch.cuda.device_count():
        raise ArproError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ArproError("--device mps: the Apple MPS backend is not available here; use --device cpu (or auto)")
    return device


def check_precision(precision: str, device: str) -> str:
    """``precision`` if Fabric runs it on ``device``: fp16 autocast needs CUDA or MPS."""
    if precision not in PRECISIONS:
        raise ArproError(f"--precision must be {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "16-mixed" and device == "cpu":
        raise ArproError("--precision 16-mixed needs a GPU: CPUs have no fp16 autocast; use bf16-mixed on CPU")
    return precision


def place(model: Model, fabric: Fabric | None) -> Model:
    """Run ``model`` on ``fabric``'s device at its precision, and return it (``None``: on the CPU as ever).

    The model moves (``fabric.to_device``); its ``forward`` and ``decompose`` then take tensors
    anywhere, compute on the device under ``fabric.autocast()``, and return them on the CPU in
    the input's dtype, so everything around the networks (noise, schedulers, properties) stays
    on the CPU and a seed draws the same noise on every device. On the CPU at 32 bits nothing
    changes: pass ``None`` and the model runs exactly as it always did.
    """
    for name in ("forward", "decompose"):
        model.__dict__.pop(name, None)
    if fabric is None:
        return model.cpu()
    fabric.to_device(model)
    for name in ("forward", "decompose"):
        if hasattr(type(model), name):
            setattr(model, name, _on_fabric(getattr(model, name), fabric))
    return model


def _on_fabric(method: Callable, fabric: Fabric) -> Callable:
    """``method`` run on ``fabric``'s device under its autocast; nested calls pass straight through."""
    from lightning.fabric.utilities.apply_func import apply_to_collection

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _on_device.get():
            return method(*args, **kwargs)
        dtype = next((a.dtype for a in args if isinstance(a, Tensor) and a.is_floating_point()), torch.float32)
        token = _on_device.set(True)
        try:
            with fabric.autocast():
                out = method(*fabric.to_device(args), **fabric.to_device(kwargs))
        finally:
            _on_device.reset(token)
        return apply_to_collection(out, Tensor, lambda t: t.to("cpu", dtype if t.is_floating_point() else t.dtype))

    return call
