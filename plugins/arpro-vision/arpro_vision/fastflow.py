"""The FastFlow image detector on anomalib's torch model, with an exact linear decomposition.

Scores one value per pixel, ``alpha`` ``[B, H, W]`` at input resolution, and
``s(x) = alpha.sum((1, 2)) + beta`` holds by construction. Inputs are ``[B, 3, H, W]``
in [-1, 1]; they are mapped to [0, 1] (and ImageNet-normalised for the backbone) inside
``decompose``, which is differentiable in ``x``. Shared backbone utilities are in
:mod:`arpro_vision.backbone`.
"""

from __future__ import annotations

import math
from pathlib import Path

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

WEIGHTS_RECIPES = {  # torchvision's ImageNet weights, in the key layout timm (and so anomalib) reads
    "resnet18": 'python -c "import torch, torchvision; torch.save(torchvision.models.resnet18('
                'weights=\'IMAGENET1K_V1\').state_dict(), \'resnet18.pth\')"',
    "wide_resnet50_2": 'python -c "import torch, torchvision; torch.save(torchvision.models.wide_resnet50_2('
                       'weights=\'IMAGENET1K_V1\').state_dict(), \'wide_resnet50_2.pth\')"',
}


class FastFlowDetector(ShippedModel, PretrainedBackboneMixin, FrozenModulesMixin, arpro.Detector):
    """FastFlow (anomalib's FastflowModel): feature negative log-likelihood, one score per pixel.

    ``s(x) = -log p(features(x))`` in nats, summed over the three resnet18 scales:
    ``sum_k [ sum_positions ½‖z_k‖² − log|det J_k| + ½·n_k·log 2π ]``. ``alpha`` spreads
    each position's ½‖z‖² evenly over the ``r×r`` input pixels it covers (r = 4, 8, 16),
    so sums are preserved; ``beta = sum_k (−log|det J_k| + ½·n_k·log 2π)`` (the Jacobian
    and the Gaussian constant). This is exactly the quantity anomalib trains FastFlow on
    (its loss, plus a constant); anomalib's own anomaly map is instead the mean over
    scales of ``−exp(−mean_c ½ z²)`` upsampled bilinearly, and its image score the map's
    max. Training: AdamW, lr 1e-4, frozen backbone: pretrained where
    :func:`~arpro_vision.backbone.resolve_weights` finds weights (``backbone_weights``, the hub), else random.
    """

    name = "fastflow"
    domain = "image"
    smoke_fit_options = {"steps": 2, "batch_size": 4}
    guidance_scale = 3e-3  # applied ×4 at each guided step (guide_every); the core caps the gradient RMS at 1
    # chosen on brick's defects 16-23 against paper mode (docs/decisions/vision-guidance.md): DDPM's 38
    # reverse steps with a quarter of them guided match its 600 at 1/20 of the time (DDIM's 30 do not), and
    # guiding the last quarter (guide_at "end") beats every 4th: median Ms 3930 against 4510 (paper mode 4307)
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant", "scheduler": "ddpm", "steps": 60, "guide_every": 4,
                       "guide_at": "end"}

    def __init__(self, input_shape: list[int], backbone: str = "resnet18", flow_steps: int = 4,
                 hidden_ratio: float = 0.5, conv3x3_only: bool = False, backbone_weights: str | None = None,
                 backbone_seed: int = 0, train_steps: int = 500, batch_size: int = 8, lr: float = 1e-4,
                 weights_source: str | None = None, weights_sha256: str | None = None) -> None:
        super().__init__()
        from anomalib.models.image.fastflow.torch_model import FastflowModel

        height, width = image_hw(input_shape)
        if backbone not in ("resnet18", "wide_resnet50_2"):
            raise ArproError(f"fastflow backbone must be resnet18 or wide_resnet50_2, not {backbone!r}")
        if height % 16 or width % 16:
            raise ArproError(f"fastflow needs image sizes divisible by 16, got {height}x{width}")
        with seeded(backbone_seed):
            torch.manual_seed(backbone_seed)
            self.model = FastflowModel(
                input_size=(height, width),
                backbone=backbone,
                pre_trained=False,
                flow_steps=flow_steps,
                conv3x3_only=conv3x3_only,
                hidden_ratio=hidden_ratio,
            )
        del self.model.anomaly_map_generator  # the decomposition replaces anomalib's map
        self.attach_backbone(self.model, "feature_extractor", backbone, prefer="feature_extractor.",
                             recipe=WEIGHTS_RECIPES[backbone])
        self.scales = [int(r) for r in self.model.feature_extractor.feature_info.reduction()]

    @classmethod
    def from_foreign_checkpoint(cls, path: Path) -> FastFlowDetector | None:
        """anomalib's ``Fastflow`` checkpoint (``Engine.fit``'s ``model.ckpt``), read by
        :mod:`arpro_vision.anomalib_checkpoint`."""
        from arpro_vision.anomalib_checkpoint import import_detector

        return import_detector(cls, path)

    def _features(self, x: Tensor) -> list[Tensor]:
        check_input_size(self.name, self.config["input_shape"], x)
        x01 = (x + 1) / 2
        normed = (x01 - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x)
        self.model.feature_extractor.eval()
        return self.model._get_cnn_features(normed)

    def flow_outputs(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per backbone scale: the flow's ``z`` ``[B, C, h, w]`` and ``log|det J|`` ``[B]``, as in anomalib's
        training forward. anomalib's anomaly map is ``mean_k bilinear(−exp(−mean_c ½ z_k²))`` of these."""
        outputs = []
        for block, feature in zip(self.model.fast_flow_blocks, self._features(x), strict=True):
            z, log_jac_det = block(feature)
            outputs.append((z, log_jac_det.reshape(-1)))
        return outputs

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        """Scored on a letterboxed picture alone (:func:`~arpro_vision.images.on_the_picture`)."""
        return on_the_picture(self._decompose, x)

    def _decompose(self, x: Tensor) -> arpro.Decomposition:
        height, width = x.shape[-2:]
        alpha = x.new_zeros(x.shape[0], height, width)
        beta = x.new_zeros(x.shape[0])
        for z, log_jac_det in self.flow_outputs(x):
            per_position = 0.5 * z.pow(2).sum(1)  # [B, h, w]
            h, w = per_position.shape[-2:]
            spread = per_position / ((height // h) * (width // w))
            alpha = alpha + F.interpolate(spread.unsqueeze(1), size=(height, width), mode="nearest").squeeze(1)
            beta = beta - log_jac_det + 0.5 * z[0].numel() * math.log(2 * math.pi)
        return arpro.Decomposition(alpha=alpha, beta=beta)

    def reference_score(self, x: Tensor) -> Tensor:
        """The NLL from anomalib's own training-mode forward (``(hidden_variables, log_jacobians)``)."""
        was_training = self.model.training
        self.model.train()
        try:
            x01 = (x + 1) / 2
            hidden, log_jacobians = self.model((x01 - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x))
        finally:
            self.model.train(was_training)
        score = x.new_zeros(x.shape[0])
        for z, log_jac_det in zip(hidden, log_jacobians, strict=True):
            score = score + 0.5 * z.pow(2).sum((1, 2, 3)) - log_jac_det.reshape(-1)
            score = score + 0.5 * z[0].numel() * math.log(2 * math.pi)
        return score

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        """``options``: ``steps``, ``lr``, ``batch_size`` override the config for this call."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        arpro.fit_loop(self, self._nll_per_pixel, train, parameters=trainable, seed=seed, progress=progress,
                 description="training fastflow", **arpro.fit_options(self, options))
        self.calibrate(train)

    def _nll_per_pixel(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        d = self.decompose(batch)
        return d.score.mean() / d.alpha[0].numel()
