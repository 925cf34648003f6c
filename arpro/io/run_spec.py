"""One description of a run, and the one way to turn it into a dataset and fitted models.

``repair``, ``evaluate``, ``ablate`` and the Python API all start from a :class:`RunSpec`;
:func:`resolve` checks it and returns a :class:`Run` that repairs inputs with it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from fnmatch import fnmatch
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from arpro._version import __version__
from arpro.algorithm.properties import DEFAULT_PROPERTIES, PropertySpec, expand_properties, make_property, property_record
from arpro.algorithm.service import check_steps, check_weights, reported_properties, resolve_settings, run_arms
from arpro.algorithm.settings import ARMS, MASK_RULES, MAX_SEED, RepairSettings
from arpro.errors import ArproError
from arpro.io.checkpoint import obtain_model, read_header
from arpro.io.outputs import staged_output, strict_json
from arpro.plugin_api import registry
from arpro.plugin_api.constraints import load_mask
from arpro.plugin_api.models import Detector, Repairer
from arpro.plugin_api.protocols import Dataset, InputBatch, Property, Split, TrainingStats
from arpro.plugin_api.result import RepairResult
from arpro.runtime.devices import check_device, check_precision, current_fabric, place, use_fabric


@dataclass
class RunSpec:
    """Everything that decides a run's results, resolved once, when the spec is made.

    ``settings`` may be given as a mapping of the settings to change: the rest then come from the
    detector's ``repair_defaults``, else :class:`RepairSettings`' defaults; the guidance scale is a number.
    ``properties`` are expanded and made (``guiding``) once; names are checked before any data loads.
    """

    detector: str
    repairer: str | None = None  # default: the domain's
    dataset: str | None = None  # NAME[:CATEGORY]; default: the domain's embedded dataset
    data_root: Path | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    detector_checkpoint: Path | None = None  # default: the bundled one, else train now
    repairer_checkpoint: Path | None = None
    # the guiding properties: names, "NAME:key=value,...", (name, options) pairs or instances; "+NAME"
    # adds to P1–P4 (or to those named without "+"). P1–P4 are always reported.
    properties: Sequence[PropertySpec] = DEFAULT_PROPERTIES
    settings: RepairSettings | dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"  # recorded as resolved: auto -> cuda where present, else cpu
    precision: str = "32"  # 32 (bit-stable), bf16-mixed or 16-mixed: Fabric's autocast
    repairer_named: bool = field(init=False, repr=False, compare=False)  # False: the domain's default was taken
    guiding: tuple[Property, ...] = field(init=False, repr=False, compare=False)  # the properties, made
    reported: tuple[Property, ...] = field(init=False, repr=False, compare=False)  # and P1–P4 not among them

    def __post_init__(self) -> None:
        self.device = check_device(self.device)  # a missing device fails first, before any name is looked up
        check_precision(self.precision, self.device.partition(":")[0])
        detector_cls = registry.get("detector", self.detector)
        domain = detector_cls.domain
        self.repairer_named = self.repairer is not None
        repairer_cls = registry.get("repairer", self.repairer) if self.repairer else registry.get_default("repairer", domain)
        if repairer_cls.domain != domain:
            raise ArproError(f"repairer {repairer_cls.name!r} works on {repairer_cls.domain} data, "
                             f"detector {self.detector!r} on {domain}")
        self.repairer = repairer_cls.name
        self.dataset_options = {**dataset_defaults(detector_cls, self.dataset, domain), **self.dataset_options}
        self.properties = expand_properties(self.properties)
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise ArproError(f"--seed must be an integer from 0 to {MAX_SEED}, not {self.seed!r}")
        self.guiding = tuple(make_property(p) for p in self.properties)  # a bad name or option fails before data loads
        self.reported = reported_properties(self.guiding)
        for flag in ("data_root", "detector_checkpoint", "repairer_checkpoint"):
            if getattr(self, flag) is not None and not Path(getattr(self, flag)).exists():
                raise ArproError(f"--{flag.replace('_', '-')} {getattr(self, flag)} does not exist")
        self.settings = (self.settings.resolved_for(detector_cls) if isinstance(self.settings, RepairSettings)
                         else RepairSettings.for_detector(detector_cls, **self.settings))
        check_weights(self.settings.weights, self.guiding)

    @property
    def domain(self) -> str:
        return registry.get("detector", self.detector).domain

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``settings.json`` and ``report.json`` record of the run."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out.update(properties=[property_record(p) for p in self.properties], settings=self.settings.to_dict())
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def dataset_defaults(detector: type[Detector], dataset: str | None, domain: str) -> dict[str, Any]:
    """The detector's ``dataset_defaults`` for the dataset ``NAME[:CATEGORY]`` (or the domain's default);
    none for a name that is not registered (``load_dataset`` says so in its place)."""
    try:
        cls = dataset_class(dataset, domain)
    except ArproError:
        return {}
    return detector.dataset_defaults(cls)


def dataset_class(spec: str | None, domain: str) -> type[Dataset]:
    """The dataset class ``NAME[:CATEGORY]`` names (or the domain's embedded dataset's), nothing loaded."""
    return registry.get("dataset", spec.partition(":")[0]) if spec else registry.get_default("dataset", domain)


def load_dataset(spec: str | None, data_root: Path | None, *, domain: str, **options: Any) -> Dataset:
    """``NAME[:CATEGORY]`` (or the domain's embedded dataset) on ``data_root``, checked against ``domain``."""
    cls, category = dataset_class(spec, domain), spec.partition(":")[2] if spec else None
    if cls.domain != domain:
        raise ArproError(f"dataset {cls.name!r} is {cls.domain} data, but the models work on {domain} data")
    if data_root is not None and not Path(data_root).exists():
        raise ArproError(f"--data-root {data_root} does not exist")
    accepted = cls.accepted_options
    unknown = [k for k in options if accepted is not None and not any(fnmatch(k, pattern) for pattern in accepted)]
    if unknown:
        raise ArproError(f"dataset {cls.name!r} has no option {unknown[0]!r} (options: {', '.join(accepted) or 'none'})")
    dataset = cls(root=data_root, category=category or None, **options)
    if category and category not in dataset.categories():
        raise ArproError(f"dataset {cls.name!r} has no category {category!r} "
                         f"(has: {', '.join(dataset.categories()) or 'no categories'})")
    return dataset


def read_mask(path: Path, shape: torch.Size) -> Tensor:
    """A user's mask from a ``.npy`` file (never unpickled), with or without the batch axis."""
    if path.suffix != ".npy" or not path.is_file():
        raise ArproError(f"--mask must be {', '.join(MASK_RULES)}, truth or an existing .npy file, not {str(path)!r}")
    mask = load_mask(path, "--mask")
    if mask.dim() == len(shape) - 1:
        mask = mask.unsqueeze(0).expand(shape[0], *mask.shape)
    return mask


MAX_COUNT = 10_000  # inputs `arpro repair` takes from a dataset: they are repaired as one batch


def read_inputs(dataset: Dataset, input_path: Path | None = None, count: int = 8,
                exclude: Sequence[str] = ()) -> tuple[InputBatch, Tensor | None]:
    """A user's input file, else ``count`` anomalous test samples not in ``exclude`` (a calibration
    split's ids), of every kind where kinds are known; and their ground-truth masks where the dataset has them."""
    if input_path is not None:
        if not Path(input_path).exists():
            raise ArproError(f"--input {input_path} does not exist")
        return dataset.read_input(Path(input_path)), None
    if not 1 <= count <= MAX_COUNT:
        raise ArproError(f"--count must be 1 to {MAX_COUNT} (one batch; `arpro evaluate` repairs whole datasets in "
                         f"chunks), not {count}")
    anomalous = without(dataset.test().anomalous(), exclude)
    if len(anomalous) == 0:
        raise ArproError(f"dataset {dataset.name!r} has no anomalous test samples; pass --input")
    picked = anomalous.subset(anomalous.spread(count))
    meta = {} if picked.masks is None else {"truth": picked.masks}  # drawn beside omega in the domain's figure
    return InputBatch(picked.x, picked.ids or [str(i) for i in range(len(picked))], meta, picked.valid), picked.masks


def without(split: Split, ids: Sequence[str]) -> Split:
    """``split`` less the samples whose ids are in ``ids``."""
    if not ids:
        return split
    excluded, names = set(ids), split.ids or [str(i) for i in range(len(split))]  # unnamed samples: by index
    return replace(split, ids=names).subset([i for i, name in enumerate(names) if name not in excluded])


@dataclass
class Run:
    """A resolved :class:`RunSpec`: the dataset and the fitted detector and repairer."""

    spec: RunSpec
    dataset: Dataset
    detector: Detector
    repairer: Repairer

    def repair(self, x_bad: Tensor, *, truth: Tensor | None = None, ids: list[str] | None = None,
               settings: RepairSettings | None = None, seed: int | Sequence[int] | None = None, arms: Sequence[str] = ARMS,
               progress: bool = True, valid: Tensor | None = None) -> RepairResult:
        """Repair ``x_bad`` with the run's properties and settings (or ``settings``, resolved here as
        :func:`arpro.repair` does); sample ``i`` draws its noise from ``seed + i`` (default: the spec's
        seed); omega stays on ``valid`` (the data, not padding)."""
        spec, mask = self.spec, None
        settings = spec.settings if settings is None else resolve_settings(settings, self.detector, self.repairer,
                                                                           spec.guiding)
        if settings.mask == "truth":
            if truth is None:
                raise ArproError("--mask truth needs ground-truth masks: the test samples of a dataset that has them")
            mask = truth
        elif settings.mask not in MASK_RULES:
            mask = read_mask(Path(settings.mask), x_bad.shape)
        return run_arms(x_bad, self.detector, self.repairer, guiding=spec.guiding, reported=spec.reported,
                        settings=settings, mask=mask, seed=spec.seed if seed is None else seed, arms=arms, ids=ids,
                        progress=progress, dataset=self.dataset, stats=self.training_stats, valid=valid)

    @cached_property
    def training_stats(self) -> TrainingStats:
        """Per-element min, max, mean and std of the normal training samples, for the properties."""
        return TrainingStats(lambda: self.dataset.train().x)


def resolve(spec: RunSpec, *, dataset: Dataset | None = None, progress: bool = True,
            detector: Detector | None = None) -> Run:
    """Load the spec's dataset (unless given) and obtain its models: from checkpoints, bundled
    ones, or trained now (the spec's ``detector``, when already obtained, may be given).
    ``--steps`` is checked once, before any model is obtained (against a folder checkpoint: once it is)."""
    dataset = dataset or load_dataset(spec.dataset, spec.data_root, domain=spec.domain, **spec.dataset_options)
    repairer_cls = registry.get("repairer", spec.repairer)
    path = spec.repairer_checkpoint or repairer_cls.bundled_checkpoint(dataset)
    early = path is None or Path(path).is_file()
    if early:
        config = read_header(path)["config"] if path else {}
        check_steps(spec.settings.steps, config.get("num_train_timesteps", repairer_cls.default_train_timesteps()))
    # the repairer first: a user's checkpoint that cannot be read fails before the detector says anything
    models = obtain_models(spec, dataset, ("repairer",) if detector else ("repairer", "detector"), progress=progress)
    if not early:
        check_steps(spec.settings.steps, models["repairer"].train_timesteps)
    return Run(spec, dataset, detector or models["detector"], models["repairer"])


def training_free_fallback(spec: RunSpec, dataset: Dataset, *, progress: bool = True) -> RunSpec:
    """The spec a first explanation runs: where the repairer was left to the domain's default, which has no
    checkpoint for ``dataset``, the domain's training-free repairer instead of minutes to hours of training
    now (``arpro repair`` and ``arpro check``; naming ``--repairer`` trains it as before)."""
    default = registry.get("repairer", spec.repairer)
    free = registry.get_baseline(dataset.domain, "repairer")
    if spec.repairer_named or spec.repairer_checkpoint or free in (None, default) or default.bundled_checkpoint(dataset):
        return spec
    if progress:
        print(f"note: no {default.name} checkpoint for this dataset, so the training-free {free.name} repairs (it needs "
              f"no training); for a trained one: arpro train repairer --repairer {default.name} ... --out FILE, then "
              "--repairer-checkpoint FILE", file=sys.stderr)
    return replace(spec, repairer=free.name)


def obtain_models(spec: RunSpec, dataset: Dataset, kinds: Sequence[str], *, progress: bool = True) -> dict:
    """The spec's models of ``kinds`` ("detector", "repairer"): from checkpoints, bundled ones, or
    trained now, placed on the spec's device."""
    on_cpu = (spec.device, spec.precision) == ("cpu", "32")  # as ever: Lightning is not even imported
    fabric = None if on_cpu else current_fabric(spec.device, spec.precision)
    with nullcontext() if on_cpu else use_fabric(fabric):  # a model trained now trains there too
        return {kind: place(obtain_model(kind, getattr(spec, kind), dataset, checkpoint_path=getattr(spec, f"{kind}_checkpoint"),
                                         seed=spec.seed, progress=progress), fabric) for kind in kinds}


def repair_into(out: Path, spec: RunSpec, *, input_path: Path | None = None, count: int = 8, overwrite: bool = False,
                exclude: Sequence[str] = (), progress: bool = True, figure: bool = False,
                arms: Sequence[str] = ARMS, calibration: dict | None = None) -> tuple[RepairResult, list[Path]]:
    """``arpro repair``: resolve ``spec``, repair its inputs, and write ``report.json`` and the
    domain's files (its figure too, with ``figure``) into ``out``, all at once at the end;
    returns the result and the files."""
    with staged_output(out, overwrite) as stage:
        dataset = load_dataset(spec.dataset, spec.data_root, domain=spec.domain, **spec.dataset_options)
        batch, truth = read_inputs(dataset, input_path, count, exclude)  # a bad input fails before any model loads
        spec = training_free_fallback(spec, dataset, progress=progress)
        run = resolve(spec, dataset=dataset, progress=progress)
        run = replace(run, **dict(zip(("detector", "repairer"), dataset.models_for(batch, run.detector, run.repairer))))
        result = run.repair(batch.x, truth=truth, ids=batch.ids, arms=arms, progress=progress, valid=batch.valid)
        report = {"arpro_version": __version__, "spec": spec.to_dict(), "input": str(input_path) if input_path else None,
                  "count": count, **({"calibration": calibration} if calibration else {}), **result.to_dict()}
        (stage / "report.json").write_text(strict_json(report, indent=2) + "\n")
        files = run.dataset.write_repairs(result, stage, batch) + (run.dataset.draw_repairs(result, stage, batch) if figure else [])
        written = [out / "report.json", *[out / p.name for p in files]]
        draws = {arm: a.draws.x_fix.contiguous() for arm, a in result.arms.items() if a.draws is not None}
        if draws:  # best-of-K: every draw, [K, B, *X] per arm in the model's space
            save_file(draws, str(stage / "samples.safetensors"), metadata={"ids": json.dumps(result.ids)})
            written.append(out / "samples.safetensors")
    return result, written
