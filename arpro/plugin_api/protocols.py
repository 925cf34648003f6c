"""What a decomposition, a property and a dataset are (detectors and repairers: ``arpro.plugin_api.models``).

Shapes, used throughout arpro: an input batch ``x`` is ``[B, *X]`` (a row ``[B, D]``, a window
``[B, T, D]``, an image ``[B, C, H, W]``); a detector's feature scores ``alpha`` are ``[B, *F]``
and its regulariser ``beta`` ``[B]``, with ``s(x) = alpha.flatten(1).sum(1) + beta`` exactly
(paper Def. 2.1). ``F`` may differ from ``X`` (one score per pixel: ``F = [H, W]``);
:meth:`Detector.input_mask` says how a feature mask covers the input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor

    from arpro.plugin_api.result import RepairResult


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


class TrainingStats:
    """Per input element ``[*X]``, over the normal training samples, in the model's space.

    Computed on first use: a run whose properties never look at them never loads the
    training split for them (for image datasets that is every training image).
    """

    def __init__(self, samples: Callable[[], Tensor]) -> None:
        self._samples = samples

    @classmethod
    def of(cls, x: Tensor) -> TrainingStats:
        return cls(lambda: x)

    @cached_property
    def _values(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self._samples()
        return x.amin(0), x.amax(0), x.mean(0), x.std(0) if x.shape[0] > 1 else x[0].new_zeros(x.shape[1:])

    min = property(lambda self: self._values[0])
    max = property(lambda self: self._values[1])
    mean = property(lambda self: self._values[2])
    std = property(lambda self: self._values[3])


@dataclass
class PropertyContext:
    """What every property needs about ``x_bad``, computed once per repair; the data fields
    (``detector`` onwards) are ``None`` when a repair is called without a dataset."""

    x_bad: Tensor  # [B, *X]
    bad: Decomposition  # decomposition of x_bad
    omega: Tensor  # [B, *F] feature mask, float 0/1
    omega_input: Tensor  # [B, *X] the same mask on the input, float 0/1
    delta2: Tensor  # [B] tolerance for P2 (on L2)
    delta4: Tensor  # [B] tolerance for P4
    bad_in: Tensor = field(init=False)  # s_omega(x_bad)
    bad_out: Tensor = field(init=False)  # s_omega_bar(x_bad)
    detector: Any = None  # the run's arpro.Detector (typed loosely: arpro.plugin_api.models imports this module)
    feature_names: list[str] | None = None  # names along the input's last axis (columns, sensors)
    stats: TrainingStats | None = None
    value_range: tuple[float, float] | None = None  # the dataset's valid input range, e.g. (-1, 1) for images

    def __post_init__(self) -> None:
        self.bad_in = self.bad.region_score(self.omega)
        self.bad_out = self.bad.region_score(1 - self.omega)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_bad.shape[1:])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.omega.shape[1:])


class Property(ABC):
    """A formal property of a repair: a differentiable loss, a metric and a holds-check."""

    name: ClassVar[str]
    metric_name: ClassVar[str]  # the key of its metric in results (ASCII, e.g. "Momega")
    metric_label: ClassVar[str] = ""  # how tables show the metric (e.g. "Mω"); default: metric_name
    needs_detector: ClassVar[bool] = True  # False: loss() ignores `fix` (saves a detector pass)
    guides: ClassVar[bool] = True  # False: a constraint that acts by frozen()/bounds(), not by its loss
    options: dict[str, Any]  # the options it was made with (set by arpro; {} when none)

    def frozen(self, ctx: PropertyContext) -> Tensor | None:
        """Input elements ``[B, *X]`` (1 = frozen) the repair must keep equal to ``x_bad``; None: none."""
        return None

    def bounds(self, ctx: PropertyContext) -> tuple[Tensor, Tensor] | None:
        """``(low, high)``, each broadcastable to ``[B, *X]``, that every repaired value must lie in; None: none."""
        return None

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
    def label(cls) -> str:
        return cls.metric_label or cls.metric_name


@dataclass
class Split:
    """Samples of one split: inputs, labels (1 = anomalous) and, where known, input masks and
    each sample's kind (a defect type, an attack kind), so that subsets can cover every kind."""

    x: Tensor  # [N, *X]
    labels: Tensor  # [N] long
    masks: Tensor | None = None  # [N, *X] or [N, *F], 1 = anomalous element
    ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    valid: Tensor | None = None  # [N, *X] or [N, *F], 1 = the sample's own data, 0 = padding (omega stays off it)

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, idx: list[int]) -> Split:
        """The samples at ``idx``, in that order."""
        masks = None if self.masks is None else self.masks[idx]
        return Split(self.x[idx], self.labels[idx], masks, [self.ids[i] for i in idx] if self.ids else [],
                     [self.kinds[i] for i in idx] if self.kinds else [], None if self.valid is None else self.valid[idx])

    def spread(self, n: int) -> list[int]:
        """Indices of ``n`` samples that cover every kind: taken in turn from each kind, first
        appearance first, each kind in its own order; returned in the split's order. Without
        kinds, the first ``n``."""
        if not self.kinds:
            return list(range(min(n, len(self))))
        by_kind: dict[str, list[int]] = {}
        for i, kind in enumerate(self.kinds):
            by_kind.setdefault(kind, []).append(i)
        queues, chosen = list(by_kind.values()), []
        for turn in range(max(map(len, queues), default=0)):
            chosen += [q[turn] for q in queues if turn < len(q)]
        return sorted(chosen[:n])

    def anomalous(self) -> Split:
        return self.subset((self.labels == 1).nonzero().flatten().tolist())


@dataclass
class InputBatch:
    """Inputs read from a user's file, with what is needed to write repairs back."""

    x: Tensor  # [B, *X], in the model's space
    ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    valid: Tensor | None = None  # [B, *X] or [B, *F], 1 = the user's data, 0 = padding (as Split.valid)


class Dataset(ABC):
    """Normal training data, labelled test data, and the domain's file I/O.

    A dataset also owns the transform between the user's files and the model's space
    (standardisation, resizing), so ``read_input`` and ``write_repairs`` live here.
    """

    name: ClassVar[str]
    domain: ClassVar[str]
    embedded: ClassVar[bool] = False  # True: needs no data on disk; the domain's default
    value_range: ClassVar[tuple[float, float] | None] = None  # every valid input value lies here (images: -1, 1)
    accepted_options: ClassVar[tuple[str, ...] | None] = None  # --option names (fnmatch patterns); None: any
    evaluate_chunk: ClassVar[int] = 16  # evaluate's default --chunk-size; larger where a batch costs little more

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

    def feature_names(self) -> list[str] | None:
        """Names along the input's last axis (a table's columns, a series' sensors); None: unnamed."""
        return None

    def detail_map(self, x: Tensor) -> Tensor | None:
        """Fine detail per element of ``x`` (pictures: high-frequency energy), shaped like it, for check's
        figure of a repair's detail in ω against normal samples'; None: the domain has none."""
        return None

    def read_input(self, path: Path) -> InputBatch:
        """Read a user's input file into the model's space."""
        raise NotImplementedError(f"dataset {self.name!r} cannot read input files")

    def models_for(self, batch: InputBatch, detector: Any, repairer: Any) -> tuple[Any, Any]:
        """The (detector, repairer) that repair ``batch`` from :meth:`read_input`: these ones, unless
        the dataset's input space differs from theirs (full-resolution images) and it wraps them."""
        return detector, repairer

    def write_repairs(self, result: RepairResult, out_dir: Path, batch: InputBatch) -> list[Path]:
        """Write the repairs in the user's space (data files and images); return the files written."""
        return []

    def draw_repairs(self, result: RepairResult, out_dir: Path, batch: InputBatch) -> list[Path]:
        """Draw the figure a person reads (``repair.png``); return the files written. Apart from
        :meth:`write_repairs` because drawing (importing matplotlib) can cost more than a small
        repair: ``arpro repair`` draws only with ``--figure``, evaluate's gallery always."""
        return []
