"""From command-line choices to a finished repair: datasets, models, inputs, masks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from arpro import plugins
from arpro.api import obtain_model, repair
from arpro.engine import RepairSettings
from arpro.errors import ArproError
from arpro.protocols import Dataset, InputBatch
from arpro.result import RepairResult


def load_dataset(spec: str | None, data_root: Path | None, *, domain: str, **options) -> Dataset:
    """``NAME[:CATEGORY]`` (or the domain's embedded dataset) constructed on ``data_root``."""
    registry = plugins.registry()
    if spec is None:
        cls, category = registry.default("dataset", domain), None
    else:
        name, _, category = spec.partition(":")
        cls = registry.get("dataset", name)
    if data_root is not None and not data_root.exists():
        raise ArproError(f"--data-root {data_root} does not exist")
    if category:
        dataset = cls(root=data_root, category=category, **options)
        known = dataset.categories()
        if known and category not in known:
            raise ArproError(f"dataset {cls.name!r} has no category {category!r} (has: {', '.join(known)})")
        return dataset
    return cls(root=data_root, category=None, **options)


@dataclass
class RepairRequest:
    """Everything ``arpro repair`` was asked to do."""

    detector: str
    repairer: str | None = None
    input_path: Path | None = None
    dataset: str | None = None
    data_root: Path | None = None
    dataset_options: dict = field(default_factory=dict)
    count: int = 8
    properties: list[str] = field(default_factory=lambda: ["p1", "p2", "p3", "p4"])
    settings: RepairSettings = field(default_factory=RepairSettings)
    mask: str = "train"
    mask_quantile: float = 0.9
    delta2: float | None = None
    delta4: float | None = None
    detector_checkpoint: Path | None = None
    repairer_checkpoint: Path | None = None
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def read_mask(path: Path, batch: InputBatch) -> torch.Tensor:
    """A user's mask from a ``.npy`` file (never unpickled), with or without the batch axis."""
    if path.suffix != ".npy":
        raise ArproError(f"--mask file must be a .npy array, got {path.name}")
    try:
        mask = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
    except Exception as error:
        raise ArproError(f"cannot read mask {path}: {error}") from None
    if mask.dim() < batch.x.dim():
        mask = mask.unsqueeze(0).expand(batch.x.shape[0], *mask.shape)
    return mask


def run_repair(request: RepairRequest) -> tuple[RepairResult, Dataset, InputBatch]:
    """Resolve the request's plugins, models, inputs and mask, and repair."""
    registry = plugins.registry()
    detector_cls = registry.get("detector", request.detector)
    domain = detector_cls.domain
    repairer_cls = registry.get("repairer", request.repairer) if request.repairer else registry.default("repairer", domain)
    if repairer_cls.domain != domain:
        raise ArproError(f"repairer {repairer_cls.name!r} works on {repairer_cls.domain} data, detector {detector_cls.name!r} on {domain}")
    for name in request.properties:
        registry.get("property", name)
    if request.input_path is not None and not request.input_path.exists():
        raise ArproError(f"--input {request.input_path} does not exist")
    if request.count < 1:
        raise ArproError("--count must be at least 1")
    request.settings.validate()

    dataset = load_dataset(request.dataset, request.data_root, domain=domain, **request.dataset_options)
    if dataset.domain != domain:
        raise ArproError(f"dataset {dataset.name!r} is {dataset.domain} data, detector {detector_cls.name!r} works on {domain}")
    if request.input_path is not None:
        batch = dataset.read_input(request.input_path)
        truth = None
    else:
        anomalous = dataset.test().anomalous()
        if len(anomalous) == 0:
            raise ArproError(f"dataset {dataset.name!r} has no anomalous test samples; pass --input")
        n = min(request.count, len(anomalous))
        batch = InputBatch(anomalous.x[:n], anomalous.ids[:n] or [str(i) for i in range(n)])
        truth = None if anomalous.masks is None else anomalous.masks[:n]

    if request.mask in ("train", "top"):
        mask: str | torch.Tensor = request.mask
    elif request.mask == "truth":
        if truth is None:
            raise ArproError("--mask truth needs ground-truth masks: the embedded samples of a dataset that has them")
        mask = truth
    else:
        mask = read_mask(Path(request.mask), batch)

    detector = obtain_model("detector", detector_cls.name, dataset, checkpoint_path=request.detector_checkpoint, seed=request.seed, progress=request.progress)
    repairer = obtain_model("repairer", repairer_cls.name, dataset, checkpoint_path=request.repairer_checkpoint, seed=request.seed, progress=request.progress)
    result = repair(
        batch.x,
        detector,
        repairer,
        properties=request.properties,
        settings=request.settings,
        mask=mask,
        mask_quantile=request.mask_quantile,
        delta2=request.delta2,
        delta4=request.delta4,
        seed=request.seed,
        ids=batch.ids,
        progress=request.progress,
    )
    return result, dataset, batch
