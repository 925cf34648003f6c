"""Detectors and repairers: the two kinds of model a plugin provides.

A model records its config from its own ``__init__`` signature (in the manner of
diffusers' ``register_to_config``): ``cls(**model.config)`` rebuilds it, and a checkpoint
holds nothing but that config and the ``state_dict``, so loading one never unpickles code.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib.resources
import inspect
import math
import types
import typing
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from arpro.errors import ArproError
from arpro.plugin_api.protocols import Decomposition
from arpro.plugin_api.schedulers import make_scheduler

if TYPE_CHECKING:
    from arpro.plugin_api.protocols import Dataset

MAX_INPUT_ELEMENTS = 2**28  # one sample of at most 1 GiB in float32
FIT_STEPS = "fit_steps"  # a dataset option: models built for it train this many steps (tests, quick looks)


def _recording_config(init):
    """Wrap ``init`` so the outermost call stores its bound arguments, defaults included, as ``self.config``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recorded(self, *args: Any, **kwargs: Any) -> None:
        if "config" not in self.__dict__:  # the outermost __init__ records; super() calls do not
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            config = {k: v for k, v in list(bound.arguments.items())[1:] if signature.parameters[k].kind not in variadic}
            object.__setattr__(self, "config", {**config, **bound.kwargs})  # bound.kwargs: **config arguments too
        init(self, *args, **kwargs)

    recorded.records_config = True
    return recorded


def _fits(value: Any, hint: Any) -> bool:
    """Does a JSON-like ``value`` fit the type annotation ``hint``? (ints pass for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is Any or hint is None or hint is type(None):
        return hint is Any or value is None
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else True
    if origin is typing.Literal:
        return value in args
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint) if isinstance(origin or hint, type) else True


def check_types(function: Any, options: dict[str, Any], source: str) -> None:
    """Refuse, naming ``source``, an option whose value does not fit ``function``'s type hint for it
    (bool, int, float, str, lists and unions of them), or that holds NaN or infinity: before a
    plugin's code ever sees it."""
    try:
        hints = typing.get_type_hints(inspect.unwrap(function))
    except Exception:  # an annotation that does not evaluate: nothing to check types against
        hints = {}
    for key, value in options.items():
        if key in hints and not _fits(value, hints[key]):
            raise ArproError(f"{source}: {key}={value!r} is not a {_type_name(hints[key])}")
        if not _all_finite(value):
            raise ArproError(f"{source}: {key}={value!r} is not finite")


def _all_finite(value: Any) -> bool:
    """No NaN or infinity in a JSON-like value (a number, or lists and dicts of them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(map(_all_finite, value))
    if isinstance(value, dict):
        return all(map(_all_finite, value.values()))
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class Model(nn.Module):
    """What detectors and repairers share: a name, a domain, a config, and ``fit``.

    Write ``__init__`` with the model's config as keyword arguments and call
    ``super().__init__()`` with none: ``self.config`` is filled from the signature.
    """

    name: ClassVar[str]
    domain: ClassVar[str]  # "tabular", "image", "timeseries", or a plugin's own
    is_default: ClassVar[bool] = False  # the domain's default choice when none is given
    folder_format: ClassVar[str | None] = None  # another tool's checkpoint folder it reads and writes, e.g. "diffusers"
    # test-only: fit() options that make training a smoke test, passed by arpro.testing (a plugin sets values)
    smoke_fit_options: ClassVar[dict[str, Any]] = {}
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "records_config", False):
            cls.__init__ = _recording_config(init)

    @classmethod
    def config_parameters(cls) -> dict[str, inspect.Parameter] | None:
        """The config keys ``cls`` accepts, by name; ``None`` when it takes any (``**config``)."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        return {p.name: p for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}

    @classmethod
    def check_config(cls, config: dict[str, Any], source: str) -> None:
        """Refuse, naming ``source``, config keys ``cls`` does not take, values of the wrong type,
        and an ``input_shape`` too large to allocate: before anything is built."""
        accepted = cls.config_parameters()
        unknown = sorted(set(config) - set(accepted)) if accepted is not None else []
        if unknown:
            raise ArproError(f"{source}: {cls.name!r} has no config key(s) {', '.join(unknown)}")
        check_types(cls.__init__, config, source)
        shape = config.get("input_shape")
        if isinstance(shape, list) and (any(d < 1 for d in shape) or math.prod(shape) > MAX_INPUT_ELEMENTS):
            raise ArproError(f"{source}: input_shape {shape} is not a sample size arpro can hold "
                             f"(1 to {MAX_INPUT_ELEMENTS} elements)")

    @abstractmethod
    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        """Train on normal samples ``train`` (``[N, *X]``)."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Buffers that fit() sets (tau, train_scores, x_mean) start empty; take the saved shape.
        for name, buffer in self._buffers.items():
            key = prefix + name
            if buffer is not None and buffer.numel() == 0 and key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def for_dataset(cls, dataset: Dataset, **overrides: Any) -> Model:
        """A fresh, unfitted model sized for ``dataset``'s samples; ``overrides`` change its config. A dataset
        option ``fit_steps`` (tests, quick looks; the dataset must accept it) sets config ``train_steps``."""
        steps = (getattr(dataset, "options", None) or {}).get(FIT_STEPS)
        if steps is not None and "train_steps" in (cls.config_parameters() or {}):
            overrides.setdefault("train_steps", int(steps))
        return cls(**{"input_shape": list(dataset.sample_shape()), **overrides})

    @classmethod
    def from_foreign_checkpoint(cls, path: Path) -> Model | None:
        """The model in ``path`` when it is another library's checkpoint that ``cls`` reads (e.g. an
        anomalib ``.ckpt``), without unpickling code; None when ``path`` is not one (an arpro checkpoint)."""
        return None

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config saved by an older version, as this one's ``__init__`` takes it: an option added
        since gets the value that reproduces the saved model, not the new default."""
        return config

    @classmethod
    def from_folder(cls, folder: Path, dataset: Dataset) -> Model:
        """A fitted model read from a checkpoint folder in ``folder_format``, checked against ``dataset``."""
        raise ArproError(f"{cls.name!r} reads an arpro .safetensors checkpoint file, not a folder ({folder})")

    def save_folder(self, folder: Path) -> None:
        """Write the fitted model into the empty ``folder`` in ``folder_format``."""
        raise ArproError(f"{self.name!r} has no folder format; write an arpro .safetensors checkpoint")

    @classmethod
    def bundled_checkpoint(cls, dataset: Dataset) -> Path | None:
        """A checkpoint shipped with the plugin for ``dataset`` (its embedded default), if any: see :meth:`shipped`."""
        return None

    @classmethod
    def shipped(cls, filename: str, dataset: Dataset) -> Path | None:
        """``checkpoints/FILENAME`` inside the package that defines ``cls``, if it is there, for a plugin's
        :meth:`bundled_checkpoint`; None for a dataset that sets ``fit_steps`` (it asks for models trained now)."""
        if FIT_STEPS in (getattr(dataset, "options", None) or {}):
            return None
        path = Path(str(importlib.resources.files(cls.__module__.partition(".")[0]))) / "checkpoints" / filename
        return path if path.is_file() else None


class Detector(Model):
    """An anomaly detector with a linear decomposition ``s(x) = sum(alpha(x)) + beta(x)``.

    Subclasses implement :meth:`decompose` and :meth:`fit`, which ends by calling :meth:`calibrate`
    on the normal training data: it stores the feature thresholds ``tau`` (paper: the per-feature
    90% quantile of training feature scores) and the training score statistics with the model.
    """

    threshold_quantile: ClassVar[float] = 0.9
    guidance_scale: ClassVar[float] = 1.0  # suggested eta for this detector's score scale
    # the RepairSettings this detector repairs best with, where the user sets none (e.g. {"eta_schedule": "constant"})
    repair_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("tau", torch.zeros(0))  # [*F], set by calibrate()
        self.register_buffer("train_scores", torch.zeros(0))  # [N], set by calibrate()

    @abstractmethod
    def decompose(self, x: Tensor) -> Decomposition:
        """Feature scores ``alpha`` ``[B, *F]`` and regulariser ``beta`` ``[B]`` of ``x``."""

    def score(self, x: Tensor) -> Tensor:
        """The anomaly score ``s(x)``, ``[B]``."""
        return self.decompose(x).score

    def reference_score(self, x: Tensor) -> Tensor | None:
        """The score computed the model's own way, independently of :meth:`decompose`.

        The identity test checks ``reference_score == sum(alpha) + beta``; return ``None``
        only when no independent computation exists.
        """
        return None

    @classmethod
    def dataset_defaults(cls, dataset: type[Dataset]) -> dict[str, Any]:
        """Dataset options this detector reads ``dataset``'s samples best with, where the user sets
        none (e.g. a larger ``image_size`` for pictures read from files). Default: none."""
        return {}

    def provenance(self) -> dict[str, str]:
        """Where the detector's weights came from, as ``arpro check`` prints and records it: e.g.
        ``{"backbone": "efficientnet_lite0, ImageNet, from package ... (sha256 ...)"}``. A ``"problem"``
        entry (e.g. "backbone weights are random: ...") joins the check's verdict. Default: nothing to say."""
        return {}

    def input_mask(self, omega: Tensor, input_shape: torch.Size) -> Tensor:
        """Map a feature mask ``[B, *F]`` onto the input ``[B, *X]``.

        Default: identity when ``F == X``; broadcast over the leading channel axis when
        ``X = [C, *F]`` (one score per pixel covers all channels of that pixel).
        """
        feature_shape, x_shape = tuple(omega.shape[1:]), tuple(input_shape[1:])
        if feature_shape == x_shape:
            return omega
        if x_shape[1:] == feature_shape:
            return omega.unsqueeze(1).expand(-1, x_shape[0], *feature_shape)
        raise NotImplementedError(
            f"{self.name}: cannot map features {feature_shape} onto input {x_shape}; override Detector.input_mask"
        )

    def feature_mask(self, input_mask: Tensor) -> Tensor:
        """Map a mask given on the input ``[B, *X]`` (e.g. ground truth) onto features ``[B, *F]``.

        Default: identity when shapes agree, else a feature is anomalous if any input
        element it covers is (the inverse of :meth:`input_mask`).
        """
        feature_shape = tuple(self.tau.shape)
        if tuple(input_mask.shape[1:]) == feature_shape:
            return input_mask
        if tuple(input_mask.shape[2:]) == feature_shape:
            return input_mask.amax(dim=1)
        raise NotImplementedError(f"{self.name}: override Detector.feature_mask")

    @torch.no_grad()
    def calibrate(self, train: Tensor, batch_size: int = 64) -> None:
        """Store ``tau`` (per-feature ``threshold_quantile`` of training alpha) and training scores."""
        was_training = self.training
        self.eval()
        self.calibrate_on(self.decompose(batch) for batch in train.split(batch_size))
        self.train(was_training)

    def calibrate_on(self, decompositions: collections.abc.Iterable[Decomposition]) -> None:
        """:meth:`calibrate` from the training data's decompositions, made however the detector's fit can."""
        pairs = [(d.alpha.float(), d.score.float()) for d in decompositions]
        alpha = torch.cat([a for a, _ in pairs])
        self.tau = torch.quantile(alpha.flatten(1), self.threshold_quantile, dim=0).reshape(alpha.shape[1:])
        self.train_scores = torch.cat([score for _, score in pairs])

    @property
    def is_calibrated(self) -> bool:
        return self.train_scores.numel() > 0


class Repairer(Model):
    """A diffusion model trained on normal samples, driven step by step by the engine.

    The engine owns the loop (eqs. 4–7); the repairer gives it the network output for one step
    and the diffusers scheduler that turns that output into ``x_{t-1}``. ``prediction_type``
    follows diffusers: ``"epsilon"`` (the noise) or ``"sample"`` (``x0``, as Diffusion-TS). The
    noise schedule is read from the config keys ``num_train_timesteps`` and ``beta_schedule``
    (default 1000, ``"linear"``), ``beta_start`` and ``beta_end`` (default diffusers').
    """

    prediction_type: ClassVar[str] = "epsilon"
    min_batch: ClassVar[int] = 1  # calls of fewer rows are padded to it (engine.py): where a call costs as much anyway

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(0))  # [*X] mean normal sample, set by fit

    @abstractmethod
    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Network output for noisy ``x_t`` ``[B, *X]`` at integer timesteps ``t`` ``[B]``."""

    @classmethod
    def default_train_timesteps(cls) -> int:
        """T of a model built with the default config: what a repairer trained now will have."""
        parameter = (cls.config_parameters() or {}).get("num_train_timesteps")
        return parameter.default if parameter is not None and isinstance(parameter.default, int) else 1000

    @property
    def train_timesteps(self) -> int:
        return self.config.get("num_train_timesteps", 1000)

    def make_scheduler(self, kind: str = "ddpm"):
        """A fresh diffusers scheduler (``"ddpm"``, ``"ddim"`` or ``"dpm++"``) matching this model's training."""
        return make_scheduler(
            kind,
            num_train_timesteps=self.train_timesteps,
            beta_schedule=self.config.get("beta_schedule", "linear"),
            prediction_type=self.prediction_type,
            **{key: self.config[key] for key in ("beta_start", "beta_end") if key in self.config},
        )

    def prefill(self, x_bad: Tensor, omega_input: Tensor) -> Tensor:
        """The input with its masked region replaced by the mean normal sample there.

        This is the reference code's SDEdit start ("pre-filled by its mean colour"),
        generalised to any domain: the mean is taken over the normal training data.
        """
        return torch.where(omega_input.bool(), self.x_mean.to(x_bad.device).expand_as(x_bad), x_bad)

    def infill_masks(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Masks ``[n, *X]`` (1 = in-filled) shaped like the regions this domain's repairs regenerate, by name, for
        ``arpro check``'s in-fill figure; a ``"time block"`` (whole steps along the first axis, known neighbours)
        is also compared with linear interpolation. Default: a random quarter of each sample's elements."""
        d = self.x_mean.numel()
        chosen = torch.stack([torch.randperm(d, generator=generator)[: max(1, d // 4)] for _ in range(n)])
        return {"feature subset": torch.zeros(n, d).scatter_(1, chosen, 1.0).reshape(n, *self.x_mean.shape)}
