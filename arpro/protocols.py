"""The four things a plugin can provide: detectors, repairers, properties, datasets.

Shapes, used throughout arpro:

- an input batch ``x`` is ``[B, *X]`` (a table row: ``[B, D]``; a window: ``[B, T, D]``;
  an image: ``[B, C, H, W]``);
- a detector's feature scores ``alpha`` are ``[B, *F]`` and its regulariser ``beta`` is
  ``[B]``, with ``s(x) = alpha.flatten(1).sum(1) + beta`` exactly (paper Def. 2.1).
  ``F`` may differ from ``X``: an image detector scores one value per pixel, ``F = [H, W]``,
  while ``X = [C, H, W]``; :meth:`Detector.input_mask` says how a feature mask covers the
  input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from arpro.result import RepairResult


@dataclass
class Decomposition:
    """``s(x) = alpha(x).flatten(1).sum(1) + beta(x)``: the detector's linear decomposition."""

    alpha: Tensor  # [B, *F] feature scores
    beta: Tensor  # [B] regulariser

    @property
    def score(self) -> Tensor:
        """The anomaly score ``s(x)``, ``[B]``."""
        return self.alpha.flatten(1).sum(1) + self.beta

    def region_score(self, z: Tensor) -> Tensor:
        """``s_z(x) = beta(x) + sum_{i: z_i = 1} alpha_i(x)``, ``[B]``; ``z`` is ``[B, *F]``."""
        return self.beta + (self.alpha * z).flatten(1).sum(1)


class Model(nn.Module):
    """What detectors and repairers share: a name, a domain, a config, and ``fit``.

    A model is rebuilt from ``cls(**config)`` and its ``state_dict``; that is all a
    checkpoint holds, so loading one never unpickles code.
    """

    name: ClassVar[str]
    domain: ClassVar[str]  # "tabular", "image", "timeseries", or a plugin's own
    is_default: ClassVar[bool] = False  # the domain's default choice when none is given

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)

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
    def describe(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def for_dataset(cls, dataset: Dataset, **overrides: Any) -> Model:
        """A fresh, unfitted model sized for ``dataset``'s samples; ``overrides`` change its config."""
        return cls(**{"input_shape": list(dataset.sample_shape()), **overrides})

    @classmethod
    def bundled_checkpoint(cls, dataset: Dataset) -> Path | None:
        """A checkpoint shipped with the plugin for ``dataset`` (its embedded default), if any."""
        return None


class Detector(Model):
    """An anomaly detector with a linear decomposition ``s(x) = sum(alpha(x)) + beta(x)``.

    Subclasses implement :meth:`decompose` and :meth:`fit`; ``fit`` must end by calling
    :meth:`calibrate` on the normal training data so that the feature thresholds ``tau``
    (paper: the per-feature 90% quantile of training feature scores) and the training
    score statistics are stored with the model.
    """

    threshold_quantile: ClassVar[float] = 0.9
    guidance_scale: ClassVar[float] = 1.0  # suggested eta for this detector's score scale
    # RepairSettings fields this detector repairs best with (e.g. {"eta_schedule": "constant"});
    # the CLI uses them for options the user leaves out.
    repair_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
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
            f"{self.name}: cannot map features {feature_shape} onto input {x_shape}; "
            "override Detector.input_mask"
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
        alphas, scores = [], []
        for batch in train.split(batch_size):
            d = self.decompose(batch)
            alphas.append(d.alpha.float())
            scores.append(d.score.float())
        alpha = torch.cat(alphas)
        self.tau = torch.quantile(alpha.flatten(1), self.threshold_quantile, dim=0).reshape(alpha.shape[1:])
        self.train_scores = torch.cat(scores)
        self.train(was_training)

    @property
    def is_calibrated(self) -> bool:
        return self.train_scores.numel() > 0


class Repairer(Model):
    """A diffusion model trained on normal samples, driven step by step by the engine.

    The engine owns the loop (eqs. 4–7); the repairer gives it the network output for
    one step and the diffusers scheduler that turns that output into ``x_{t-1}``.
    ``prediction_type`` follows diffusers: ``"epsilon"`` (the noise) or ``"sample"``
    (``x0`` directly, as Diffusion-TS does).
    """

    prediction_type: ClassVar[str] = "epsilon"

    def __init__(self, *, num_train_timesteps: int = 1000, beta_schedule: str = "linear", **config: Any) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, **config)
        self.register_buffer("x_mean", torch.zeros(0))  # [*X] mean normal sample, set by fit

    @abstractmethod
    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Network output for noisy ``x_t`` ``[B, *X]`` at integer timesteps ``t`` ``[B]``."""

    def make_scheduler(self, kind: str = "ddpm"):
        """A fresh diffusers scheduler (``"ddpm"`` or ``"ddim"``) matching this model's training."""
        from arpro.diffusion import make_scheduler

        return make_scheduler(
            kind,
            num_train_timesteps=self.config["num_train_timesteps"],
            beta_schedule=self.config["beta_schedule"],
            prediction_type=self.prediction_type,
        )

    def prefill(self, x_bad: Tensor, omega_input: Tensor) -> Tensor:
        """The input with its masked region replaced by the mean normal sample there.

        This is the reference code's SDEdit start ("pre-filled by its mean colour"),
        generalised to any domain: the mean is taken over the normal training data.
        """
        return torch.where(omega_input.bool(), self.x_mean.expand_as(x_bad), x_bad)


@dataclass
class PropertyContext:
    """What every property needs about ``x_bad``, computed once per repair."""

    x_bad: Tensor  # [B, *X]
    bad: Decomposition  # decomposition of x_bad
    omega: Tensor  # [B, *F] feature mask, float 0/1
    omega_input: Tensor  # [B, *X] the same mask on the input, float 0/1
    delta2: Tensor  # [B] tolerance for P2 (on L2)
    delta4: Tensor  # [B] tolerance for P4
    bad_in: Tensor = field(init=False)  # s_omega(x_bad)
    bad_out: Tensor = field(init=False)  # s_omega_bar(x_bad)

    def __post_init__(self) -> None:
        self.bad_in = self.bad.region_score(self.omega)
        self.bad_out = self.bad.region_score(1 - self.omega)


class Property(ABC):
    """A formal property of a repair: a differentiable loss, a metric and a holds-check."""

    name: ClassVar[str]
    metric_name: ClassVar[str]
    needs_detector: ClassVar[bool] = True  # False: loss() ignores `fix` (saves a detector pass)

    @abstractmethod
    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        """Per-sample loss ``[B]``, differentiable in ``x_fix``."""

    @abstractmethod
    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        """Per-sample evaluation metric ``[B]`` (lower is better)."""

    @abstractmethod
    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        """Per-sample bool ``[B]``: does the repair satisfy the property?"""

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


@dataclass
class Split:
    """Samples of one split: inputs, labels (1 = anomalous) and, where known, input masks."""

    x: Tensor  # [N, *X]
    labels: Tensor  # [N] long
    masks: Tensor | None = None  # [N, *X] or [N, *F], 1 = anomalous element
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.x.shape[0]

    def anomalous(self) -> Split:
        keep = self.labels == 1
        idx = keep.nonzero().flatten().tolist()
        return Split(
            self.x[keep],
            self.labels[keep],
            None if self.masks is None else self.masks[keep],
            [self.ids[i] for i in idx] if self.ids else [],
        )


@dataclass
class InputBatch:
    """Inputs read from a user's file, with what is needed to write repairs back."""

    x: Tensor  # [B, *X], in the model's space
    ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


class Dataset(ABC):
    """Normal training data, labelled test data, and the domain's file I/O.

    A dataset also owns the transform between the user's files and the model's space
    (standardisation, resizing), so ``read_input`` and ``write_repairs`` live here.
    """

    name: ClassVar[str]
    domain: ClassVar[str]
    embedded: ClassVar[bool] = False  # True: needs no data on disk; the domain's default

    def __init__(self, root: Path | None = None, category: str | None = None, **options: Any) -> None:
        self.root = root
        self.category = category
        self.options = options

    @abstractmethod
    def train(self) -> Split:
        """Normal training samples (labels all 0)."""

    @abstractmethod
    def test(self) -> Split:
        """Test samples with labels and, where known, masks."""

    def validation(self) -> Split | None:
        """Held-out normal samples, never trained on (``None``: the dataset has none).

        ``arpro evaluate`` calibrates its conformal TNR threshold on these when given,
        else on the normal samples of the test split.
        """
        return None

    def categories(self) -> list[str]:
        """Categories this dataset has (``[]`` when it has none)."""
        return []

    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train().x.shape[1:])

    def read_input(self, path: Path) -> InputBatch:
        """Read a user's input file into the model's space."""
        raise NotImplementedError(f"dataset {self.name!r} cannot read input files")

    def write_repairs(self, result: RepairResult, out_dir: Path, batch: InputBatch) -> list[Path]:
        """Write the repairs (and any figures) in the user's space; return the files written."""
        return []

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
