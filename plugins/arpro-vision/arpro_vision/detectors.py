"""Image detectors on anomalib's torch models, each with an exact linear decomposition.

Both score one value per pixel, ``alpha`` ``[B, H, W]`` at input resolution, and
``s(x) = alpha.sum((1, 2)) + beta`` holds by construction. Inputs are ``[B, 3, H, W]``
in [-1, 1]; they are mapped to [0, 1] (and ImageNet-normalised for the FastFlow
backbone) inside ``decompose``, which is differentiable in ``x``.

Frozen random networks (the FastFlow backbone, the EfficientAD teacher, when no
``backbone_weights`` file is given) are a deterministic function of their seed: they are
rebuilt from ``backbone_seed`` on construction and are not stored in checkpoints, which
keeps the bundled checkpoints small.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import arpro
from arpro import ArproError
from arpro.training import fit_loop, fit_options
from arpro_vision.bundled import ShippedModel

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_warned: set[str] = set()


def warn_random_init(name: str, what: str) -> None:
    """Say once per process, on stderr, that ``what`` is randomly initialised (no pretrained weights)."""
    if name in _warned:
        return
    _warned.add(name)
    print(
        f"warning: {name}: no backbone_weights file given, so the {what} is randomly initialised "
        "(pre_trained=False), not ImageNet-pretrained; pass backbone_weights=PATH (--model-option backbone_weights=PATH) "
        "to use pretrained weights",
        file=sys.stderr,
    )


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local ``.safetensors`` or torch file (``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ArproError(f"backbone weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ArproError(f"cannot read backbone weights {path}: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArproError(f"backbone weights {path} do not hold a state dict")
    return state


def hide_module(owner: nn.Module, attribute: str) -> nn.Module:
    """Take ``owner.attribute`` out of the module tree (not in state_dict, not trained) but keep it usable."""
    module = owner._modules.pop(attribute)
    module.requires_grad_(False).eval()
    object.__setattr__(owner, attribute, module)
    return module


class FrozenModulesMixin:
    """Keeps modules taken out of the module tree (see :func:`hide_module`) on the same device
    and dtype as the rest of the detector: ``.to()``, ``.double()`` etc. reach them too."""

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        for module in self.__dict__.get("_frozen_modules", []):
            module._apply(fn, *args, **kwargs)
        return result

    def _keep_frozen(self, module: nn.Module) -> None:
        self.__dict__.setdefault("_frozen_modules", []).append(module)


def seeded(seed: int):
    """A context that restores torch's global RNG afterwards (the caller seeds it inside)."""
    return torch.random.fork_rng(devices=[])


def image_hw(input_shape: list[int]) -> tuple[int, int]:
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ArproError(f"image detectors need [3, H, W] inputs, got {list(input_shape)}")
    return int(input_shape[1]), int(input_shape[2])


class FastFlowDetector(ShippedModel, FrozenModulesMixin, arpro.Detector):
    """FastFlow (anomalib's FastflowModel): feature negative log-likelihood, one score per pixel.

    ``s(x) = -log p(features(x))`` in nats, summed over the three resnet18 scales:
    ``sum_k [ sum_positions ½‖z_k‖² − log|det J_k| + ½·n_k·log 2π ]``. ``alpha`` spreads
    each position's ½‖z‖² evenly over the ``r×r`` input pixels it covers (r = 4, 8, 16),
    so sums are preserved; ``beta = sum_k (−log|det J_k| + ½·n_k·log 2π)`` (the Jacobian
    and the Gaussian constant). This is exactly the quantity anomalib trains FastFlow on
    (its loss, plus a constant); anomalib's own anomaly map is instead the mean over
    scales of ``−exp(−mean_c ½ z²)`` upsampled bilinearly, and its image score the map's
    max. Training: AdamW, lr 1e-4, frozen backbone (random unless ``backbone_weights``).
    """

    name = "fastflow"
    domain = "image"
    smoke_fit_options = {"steps": 2, "batch_size": 4}
    guidance_scale = 1e-3  # measured on brick (docs/vision.md); the core caps the gradient RMS at 1
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant"}  # the settings guidance_scale was measured with

    def __init__(
        self,
        input_shape: list[int],
        backbone: str = "resnet18",
        flow_steps: int = 4,
        hidden_ratio: float = 0.5,
        conv3x3_only: bool = False,
        backbone_weights: str | None = None,
        backbone_seed: int = 0,
        train_steps: int = 500,
        batch_size: int = 8,
        lr: float = 1e-4,
    ) -> None:
        super().__init__(
            input_shape=list(input_shape),
            backbone=backbone,
            flow_steps=flow_steps,
            hidden_ratio=hidden_ratio,
            conv3x3_only=conv3x3_only,
            backbone_weights=backbone_weights,
            backbone_seed=backbone_seed,
            train_steps=train_steps,
            batch_size=batch_size,
            lr=lr,
        )
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
        if backbone_weights:
            path = Path(backbone_weights).expanduser()
            if path.is_file():  # else the checkpoint being loaded fills the (stored) backbone
                self.model.feature_extractor.load_state_dict(load_weights(path), strict=False)
            self.model.feature_extractor.requires_grad_(False)
        else:
            warn_random_init(self.name, f"{backbone} backbone")
            self._keep_frozen(hide_module(self.model, "feature_extractor"))
        self.scales = [int(r) for r in self.model.feature_extractor.feature_info.reduction()]

    def _features(self, x: Tensor) -> list[Tensor]:
        x01 = (x + 1) / 2
        normed = (x01 - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x)
        self.model.feature_extractor.eval()
        return self.model._get_cnn_features(normed)

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        height, width = x.shape[-2:]
        alpha = x.new_zeros(x.shape[0], height, width)
        beta = x.new_zeros(x.shape[0])
        for block, feature in zip(self.model.fast_flow_blocks, self._features(x), strict=True):
            z, log_jac_det = block(feature)
            per_position = 0.5 * z.pow(2).sum(1)  # [B, h, w]
            h, w = per_position.shape[-2:]
            spread = per_position / ((height // h) * (width // w))
            alpha = alpha + F.interpolate(spread.unsqueeze(1), size=(height, width), mode="nearest").squeeze(1)
            beta = beta - log_jac_det.reshape(-1) + 0.5 * z[0].numel() * math.log(2 * math.pi)
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
        fit_loop(self, self._nll_per_pixel, train, parameters=trainable, seed=seed, progress=progress,
                 description="training fastflow", **fit_options(self, options))
        self.calibrate(train)

    def _nll_per_pixel(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        d = self.decompose(batch)
        return d.score.mean() / d.alpha[0].numel()


class EfficientAdDetector(ShippedModel, FrozenModulesMixin, arpro.Detector):
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
    needs at least 64 px). Without ``backbone_weights`` (anomalib's distilled teacher,
    e.g. ``pretrained_teacher_small.pth``) the teacher is a frozen random PDN. Training
    omits anomalib's ImageNet penalty term (no ImageNet here). AdamW, lr 1e-4.
    """

    name = "efficientad"
    domain = "image"
    smoke_fit_options = {"steps": 2, "batch_size": 4}
    guidance_scale = 2e-3  # measured on brick (docs/vision.md); |ds/dx| ~ 0.3-1.2 per element
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant"}  # the settings guidance_scale was measured with

    def __init__(
        self,
        input_shape: list[int],
        teacher_out_channels: int = 64,
        model_size: str = "small",
        padding: bool | None = None,
        use_autoencoder: bool | None = None,
        backbone_weights: str | None = None,
        backbone_seed: int = 0,
        train_steps: int = 200,
        batch_size: int = 8,
        lr: float = 1e-4,
    ) -> None:
        height, width = image_hw(input_shape)
        if padding is None:
            padding = min(height, width) < 64
        if use_autoencoder is None:
            use_autoencoder = min(height, width) >= 256
        super().__init__(
            input_shape=list(input_shape),
            teacher_out_channels=teacher_out_channels,
            model_size=model_size,
            padding=padding,
            use_autoencoder=use_autoencoder,
            backbone_weights=backbone_weights,
            backbone_seed=backbone_seed,
            train_steps=train_steps,
            batch_size=batch_size,
            lr=lr,
        )
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
        if backbone_weights:
            path = Path(backbone_weights).expanduser()
            if path.is_file():
                self.model.teacher.load_state_dict(load_weights(path))
            self.model.teacher.requires_grad_(False)
        else:
            warn_random_init(self.name, "teacher network")
            self._keep_frozen(hide_module(self.model, "teacher"))

    def _teacher(self, x01: Tensor) -> Tensor:
        self.model.teacher.eval()
        out = self.model.teacher(x01)
        std = self.model.mean_std["std"]
        if bool((std != 0).any()):
            out = (out - self.model.mean_std["mean"]) / std
        return out

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The raw student–teacher and student–autoencoder maps ``[B, 1, H, W]`` (before quantile scaling)."""
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
        fit_loop(self, self._loss, train, parameters=trainable, weight_decay=1e-5, seed=seed, progress=progress,
                 description="training efficientad", **fit_options(self, options))
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
