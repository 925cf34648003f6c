"""The EfficientAD image detector on anomalib's torch model, with an exact linear decomposition.

Scores one value per pixel, ``alpha`` ``[B, H, W]`` at input resolution, and
``s(x) = alpha.sum((1, 2)) + beta`` holds by construction. Inputs are ``[B, 3, H, W]``
in [-1, 1]; they are mapped to [0, 1] inside ``decompose``, which is differentiable
in ``x``. Shared backbone utilities are in :mod:`arpro_vision.backbone`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import arpro
from arpro import ArproError
from arpro_vision.backbone import FrozenModulesMixin, PretrainedBackboneMixin, check_input_size, image_hw, seeded
from arpro_vision.bundled import ShippedModel
from arpro_vision.images import on_the_picture

# anomalib's distilled teachers (pretrained_teacher_small.pth / _medium.pth, 384 output channels), fetched
# by anomalib's own downloader into ./efficientad_pretrained_weights/
TEACHER_RECIPE = ('python -c "from pathlib import Path; from anomalib.data.utils import download_and_extract; '
                  'from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO; '
                  'download_and_extract(Path(\'.\'), WEIGHTS_DOWNLOAD_INFO)" '
                  "(then teacher_out_channels=384 and backbone_weights=efficientad_pretrained_weights/"
                  "pretrained_teacher_small.pth)")


class EfficientAdDetector(ShippedModel, PretrainedBackboneMixin, FrozenModulesMixin, arpro.Detector):
    """EfficientAD (anomalib's EfficientAdModel): the per-pixel anomaly map, score = its sum.

    ``alpha`` is anomalib's normalised anomaly map at input resolution (student–teacher
    squared distance averaged over channels, padded and bilinearly upsampled, scaled by
    the 0.9/0.995 training-map quantiles as anomalib does), ``beta = 0``, so
    ``s(x) = sum of the map``. anomalib's image score is the map's *max*; the sum instead
    grows with the defect's area as well as its strength, and is what the properties add
    up over omega and omega-bar.

    Small inputs: the full model (student–teacher plus autoencoder branch) needs at least
    256×256 (its autoencoder's upsampling collapses below that), so below 256 the
    detector uses the **student–teacher branch only** (``use_autoencoder`` = False,
    map = ST map); at 256 and above it uses both branches, map = ½ ST + ½ student–AE, as
    anomalib does. Below 64 px the PDNs are built with ``padding=True`` (an unpadded PDN
    needs at least 64 px). The teacher's weights go through the plugin's one resolver
    (:func:`~arpro_vision.backbone.resolve_weights`): ``backbone_weights`` (anomalib's distilled
    teacher, e.g. ``pretrained_teacher_small.pth``), else a frozen random PDN. No package or hub
    holds a PDN teacher, and distilling one from an ImageNet backbone as anomalib's recipe does
    needs ImageNet itself (hours of training on images this machine does not have), so for a
    pretrained detector without that file use ``patchcore``. Training omits anomalib's
    ImageNet penalty term for the same reason. AdamW, lr 1e-4.
    """

    name = "efficientad"
    domain = "image"
    smoke_fit_options = {"steps": 2, "batch_size": 4}
    guidance_scale = 2e-2  # applied ×4 at each guided step (guide_every); the core caps the gradient RMS at 1
    # guidance on a quarter of the steps, the last ones in a row, chosen on brick's defects 16-23
    # (docs/decisions/vision-guidance.md): median Ms -613.5 against -578.2 guided at every 4th step
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant", "guide_every": 4, "guide_at": "end"}

    def __init__(self, input_shape: list[int], teacher_out_channels: int = 64, model_size: str = "small",
                 padding: bool | None = None, use_autoencoder: bool | None = None,
                 backbone_weights: str | None = None, backbone_seed: int = 0, train_steps: int = 200,
                 batch_size: int = 8, lr: float = 1e-4, weights_source: str | None = None,
                 weights_sha256: str | None = None) -> None:
        height, width = image_hw(input_shape)
        if padding is None:
            padding = min(height, width) < 64
        if use_autoencoder is None:
            use_autoencoder = min(height, width) >= 256
        super().__init__()
        self.config.update(padding=padding, use_autoencoder=use_autoencoder)  # the resolved defaults
        from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel, EfficientAdModelSize

        if use_autoencoder and min(height, width) < 256:
            raise ArproError(f"efficientad's autoencoder branch needs inputs of at least 256x256, got {height}x{width}")
        if min(height, width) < 16:
            raise ArproError(f"efficientad needs inputs of at least 16x16, got {height}x{width}")
        with seeded(backbone_seed):
            torch.manual_seed(backbone_seed)
            self.model = EfficientAdModel(
                teacher_out_channels=teacher_out_channels,
                model_size=EfficientAdModelSize(model_size),
                padding=padding,
                pad_maps=not padding,
            )
        if not use_autoencoder:
            del self.model.ae
        what = f"{model_size} PDN teacher with {teacher_out_channels} output channels (teacher_out_channels)"
        self.attach_backbone(self.model, "teacher", what, prefer="teacher.", recipe=TEACHER_RECIPE)

    def backbone_arch(self) -> str:
        return f"pdn_{self.config['model_size']}"

    @classmethod
    def from_foreign_checkpoint(cls, path: Path) -> EfficientAdDetector | None:
        """anomalib's ``EfficientAd`` checkpoint (``Engine.fit``'s ``model.ckpt``), read by
        :mod:`arpro_vision.anomalib_checkpoint`."""
        from arpro_vision.anomalib_checkpoint import import_detector

        return import_detector(cls, path)

    def _teacher(self, x01: Tensor) -> Tensor:
        self.model.teacher.eval()
        out = self.model.teacher(x01)
        std = self.model.mean_std["std"]
        if bool((std != 0).any()):
            out = (out - self.model.mean_std["mean"]) / std
        return out

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The raw student–teacher and student–autoencoder maps ``[B, 1, H, W]`` (before quantile scaling)."""
        check_input_size(self.name, self.config["input_shape"], x)
        x01 = (x + 1) / 2
        size = x.shape[-2:]
        c = self.config["teacher_out_channels"]
        student = self.model.student(x01)
        map_st = (self._teacher(x01) - student[:, :c]).pow(2).mean(1, keepdim=True)
        map_stae = None
        if self.config["use_autoencoder"]:
            ae = self.model.ae(x01, size)
            map_stae = (ae - student[:, c:]).pow(2).mean(1, keepdim=True)
        maps = []
        for m in (map_st, map_stae):
            if m is not None:
                if self.model.pad_maps:
                    m = F.pad(m, (4, 4, 4, 4))
                m = F.interpolate(m, size=size, mode="bilinear")
            maps.append(m)
        return maps[0], maps[1]

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        """Scored on a letterboxed picture alone (:func:`~arpro_vision.images.on_the_picture`)."""
        return on_the_picture(self._decompose, x)

    def _decompose(self, x: Tensor) -> arpro.Decomposition:
        map_st, map_stae = self.maps(x)
        q = self.model.quantiles
        if bool(self.model._is_set_tensor(q)):
            map_st = 0.1 * (map_st - q["qa_st"]) / (q["qb_st"] - q["qa_st"])
            if map_stae is not None:
                map_stae = 0.1 * (map_stae - q["qa_ae"]) / (q["qb_ae"] - q["qa_ae"])
        anomaly_map = map_st if map_stae is None else 0.5 * map_st + 0.5 * map_stae
        alpha = anomaly_map[:, 0]
        return arpro.Decomposition(alpha=alpha, beta=alpha.new_zeros(alpha.shape[0]))

    def reference_score(self, x: Tensor) -> Tensor:
        """The sum of anomalib's own anomaly map: ``EfficientAdModel.forward`` (both branches), or,
        without the autoencoder, its ``compute_student_teacher_distance`` padded, upsampled and
        normalised as ``compute_maps`` does."""
        x01 = (x + 1) / 2
        if self.config["use_autoencoder"]:
            was_training = self.model.training
            self.model.eval()
            try:
                anomaly_map = self.model(x01, normalize=True).anomaly_map
            finally:
                self.model.train(was_training)
            return anomaly_map.flatten(1).sum(1)
        _, distance = self.model.compute_student_teacher_distance(x01)
        map_st = distance.mean(1, keepdim=True)
        if self.model.pad_maps:
            map_st = F.pad(map_st, (4, 4, 4, 4))
        map_st = F.interpolate(map_st, size=x.shape[-2:], mode="bilinear")
        q = self.model.quantiles
        if bool(self.model._is_set_tensor(q)):
            map_st = 0.1 * (map_st - q["qa_st"]) / (q["qb_st"] - q["qa_st"])
        return map_st.flatten(1).sum(1)

    @torch.no_grad()
    def _teacher_statistics(self, train: Tensor) -> None:
        outs = torch.cat([self.model.teacher(((b + 1) / 2)) for b in train.split(32)])
        self.model.mean_std["mean"].data = outs.mean((0, 2, 3), keepdim=True)
        self.model.mean_std["std"].data = outs.std((0, 2, 3), keepdim=True).clamp_min(1e-6)

    @torch.no_grad()
    def _map_quantiles(self, train: Tensor) -> None:
        st, ae = [], []
        for b in train.split(32):
            m_st, m_ae = self.maps(b)
            st.append(m_st.flatten())
            if m_ae is not None:
                ae.append(m_ae.flatten())
        for key, values in (("st", st), ("ae", ae)):
            if values:
                v = torch.cat(values)
                v = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[: 2**24]]
                qa, qb = torch.quantile(v, 0.9), torch.quantile(v, 0.995)
                self.model.quantiles[f"qa_{key}"].data = qa
                self.model.quantiles[f"qb_{key}"].data = torch.maximum(qb, qa + 1e-8)
            else:  # no autoencoder: keep the unused entries at a harmless (0, 1) range
                self.model.quantiles[f"qb_{key}"].data = torch.tensor(1.0)

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        """``options``: ``steps``, ``lr``, ``batch_size`` override the config for this call."""
        self._teacher_statistics(train)
        trainable = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("model.teacher.")]
        trainable = [p for p in trainable if not any(p is q for q in self.model.mean_std.values())]
        trainable = [p for p in trainable if not any(p is q for q in self.model.quantiles.values())]
        arpro.fit_loop(self, self._loss, train, parameters=trainable, weight_decay=1e-5, seed=seed, progress=progress,
                 description="training efficientad", **arpro.fit_options(self, options))
        with arpro.progress_phase("efficientad: the anomaly map's quantiles and the thresholds", enabled=progress):
            self._map_quantiles(train)
            self.calibrate(train)

    def _loss(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """anomalib's hard-feature student loss, plus the autoencoder terms when that branch is on."""
        c = self.config["teacher_out_channels"]
        x01 = (batch + 1) / 2
        with torch.no_grad():
            teacher = self._teacher(x01)
        student = self.model.student(x01)
        distance = (teacher - student[:, :c]).pow(2)
        hard = torch.quantile(distance.flatten()[: 2**24], 0.999)
        loss = distance[distance >= hard].mean()
        if self.config["use_autoencoder"]:
            aug = self.model.choose_random_aug_image(x01)
            ae = self.model.ae(aug, x01.shape[-2:])
            with torch.no_grad():
                teacher_aug = self._teacher(aug)
            student_aug = self.model.student(aug)[:, c:]
            loss = loss + (teacher_aug - ae).pow(2).mean() + (ae - student_aug).pow(2).mean()
        return loss
