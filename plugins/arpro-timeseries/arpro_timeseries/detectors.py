"""GPT-2 and Llama-2 reconstruction detectors for windows ``[B, T, D]``.

Both follow the "one fits all" recipe the paper uses (GPT-2 / Llama-2 backbones on time
steps as tokens), as reconstruction models:

1. the windows arrive standardised per feature with the normal training rows' mean and std
   (the dataset does it), and by default (``normalise="dataset"``) go in as they are, so a
   sustained level shift or a change of variability — what valve manipulations and sensor
   offsets look like — is seen by the model. ``normalise="window"`` adds per-window instance
   normalisation, ``z = (x − mean_t) / sqrt(var_t + eps)`` per feature, which makes the score
   blind to a window's level (kept as an option; docs/decisions/ts-detectors-plant.md has the measurement);
2. each time step ``z_t`` (``D`` features) goes through a linear bottleneck of
   ``bottleneck < D`` units and up to the backbone width (the bottleneck stops the
   network from learning the identity: it must rebuild the features from their
   physical couplings and from the other time steps). By default ``fit`` sizes it as PCA
   would: the number of principal components that explain ``BOTTLENECK_VARIANCE`` (90%) of
   the training rows' variance. A fixed share of ``D`` was too narrow on real process data
   (TEP: 17 of 52 units against PCA's 31; docs/decisions/ts-detectors-tep.md) and, at ``D // 3``, left 2
   units for an 8-sensor pump;
3. the transformer backbone (``GPT2Model`` / ``LlamaModel`` built from a config; no hub);
4. a linear reconstruction head back to ``D`` features (de-normalised under ``"window"``).

Decomposition (paper Example 2.2): ``alpha[t, d] = (x̂[t, d] − x[t, d])² + w · v[t, d]`` and
``beta = 0``, so ``s(x) = Σ_{t,d} alpha`` is exactly the window's total squared reconstruction
error (the usual reconstruction score, as a sum rather than a mean) plus ``w`` (config
``variability``, default 10; 0 turns it off) times the variability score ``v`` of
:mod:`arpro_timeseries.variability`, which sees frozen readings and noise-level changes that a
reconstruction misses. ``v`` is zero on almost every normal cell.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import arpro
from arpro_timeseries import variability as variability_score
from arpro_timeseries.bundled import ShippedModel

# Backbone sizes. "paper": GPT-2 first 6 layers of GPT-2 small; Llama-2 first 4 layers at
# width 1024 (section 4 of the paper). "small": what trains on 2 CPU cores in minutes.
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "gpt2": {
        "small": {"n_layer": 2, "hidden": 64, "n_head": 4, "intermediate": 128},
        "paper": {"n_layer": 6, "hidden": 768, "n_head": 12, "intermediate": 3072},
    },
    "llama2": {
        "small": {"n_layer": 2, "hidden": 64, "n_head": 4, "intermediate": 128},
        "paper": {"n_layer": 4, "hidden": 1024, "n_head": 16, "intermediate": 2752},
    },
}


NORMALISATIONS = ("dataset", "window")
GRADIENTS = ("fixed-target", "exact")
VARIABILITY_RANGES = ("eps_still", "eps_rough", "on", "lo", "hi")
BOTTLENECK_VARIANCE = 0.9  # the share of the training rows' variance the default bottleneck keeps (PCA's usual rule)


class ReconstructionDetector(ShippedModel, arpro.Detector):
    """Shared logic of the transformer reconstruction detectors."""

    domain = "timeseries"
    family: ClassVar[str]
    embedding_key: ClassVar[str]
    layer_key: ClassVar[str]
    guidance_scale = 0.005  # applied ×3 at each guided step (guide_every); chosen on process(seed=1) with these defaults:
    # in-filling to the last step keeps omega_bar exact (P2); omega is each window's top 3% of alpha among the
    # cells above their training quantile tau: tau alone flags ~40% of a faulty window's cells and P4 then rarely
    # holds, and a larger top share also repairs cells that score as normal ones, which P4 pays for too; 40 steps
    # (32 from t0 = 0.8) match paper mode's guided Ms at 1/12 of its time on the validation windows, and guidance
    # on the last third of them repairs as well as every step at 0.025 for 1/3 of the detector's cost; 0.005 (×3)
    # had the highest all-hold rate for both detectors among 0.0025-0.02 (docs/decisions/ts-repair-loop.md)
    repair_defaults = {"eta_schedule": "constant", "guide_on": "x0", "infill_stop": 0.0, "t0": 0.8, "mask": "top-train",
                       "mask_quantile": 0.97, "steps": 40, "guide_every": 3, "guide_at": "end"}
    smoke_fit_options = {"steps": 5}

    def __init__(self, input_shape: list[int], preset: str = "small", n_layer: int | None = None,
                 hidden: int | None = None, n_head: int | None = None, intermediate: int | None = None,
                 bottleneck: int | None = None, eps: float = 1e-2, train_steps: int = 800, batch_size: int = 64,
                 lr: float = 1e-3, pretrained: str | None = None, normalise: str = "dataset",
                 variability: float = 10.0, gradient: str = "fixed-target") -> None:
        if normalise not in NORMALISATIONS:
            raise arpro.ArproError(f"{self.name}: normalise must be one of {', '.join(NORMALISATIONS)}, not {normalise!r}")
        if gradient not in GRADIENTS:
            raise arpro.ArproError(f"{self.name}: gradient must be one of {', '.join(GRADIENTS)}, not {gradient!r}")
        if not 0.0 <= variability < float("inf"):
            raise arpro.ArproError(f"{self.name}: variability must be >= 0 and finite, not {variability!r}")
        if preset not in PRESETS[self.family]:
            raise arpro.ArproError(f"{self.name}: unknown preset {preset!r} (choose {', '.join(PRESETS[self.family])})")
        size = dict(PRESETS[self.family][preset])
        for key, value in (("n_layer", n_layer), ("hidden", hidden), ("n_head", n_head), ("intermediate", intermediate)):
            if value is not None:
                size[key] = int(value)
        t, d = (int(v) for v in input_shape)
        if variability > 0 and t < 3:
            raise arpro.ArproError(f"{self.name}: the variability score needs windows of at least 3 steps, not {t}; "
                                   "use longer windows or --model-option variability=0")
        super().__init__()
        self.config.update(input_shape=[t, d], **size)  # the resolved preset; fit resolves bottleneck=None
        width = int(bottleneck) if bottleneck is not None else d  # a placeholder until fit sizes it
        self.squeeze = nn.Linear(d, width)
        self.expand = nn.Linear(width, size["hidden"])
        self.backbone = self.build_backbone(t, **size)
        self.head = nn.Linear(size["hidden"], d)
        if variability > 0:  # the normal ranges of the variability statistics, set by calibrate()
            for key in VARIABILITY_RANGES:
                self.register_buffer(f"variability_{key}", torch.zeros(0))

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Checkpoints saved before ``normalise`` existed normalised every window, and those saved
        before ``variability`` existed scored reconstruction alone: keep them so. (``gradient`` changes
        no score, so an older checkpoint takes its default.)"""
        return {"normalise": "window", "variability": 0.0, **config}

    def build_backbone(self, length: int, n_layer: int, hidden: int, n_head: int, intermediate: int) -> nn.Module:
        raise NotImplementedError

    def load_pretrained(self, path: Path) -> None:
        """Copy the first ``n_layer`` layers of a local transformers checkpoint into the backbone
        (the token embedding, which the windows never use, is left out)."""
        if not path.exists():
            raise arpro.ArproError(f"{self.name}: pretrained weights {path} do not exist")
        if not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise arpro.ArproError(f"{self.name}: {path} has no model.safetensors; arpro reads pretrained weights "
                                   "only as safetensors, never as a pickle (save them with save_pretrained)")
        try:
            source = type(self.backbone).from_pretrained(str(path), use_safetensors=True).state_dict()
        except Exception as error:
            raise arpro.ArproError(f"{self.name}: cannot load pretrained weights from {path}: "
                                   f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        n_layer = self.config["n_layer"]
        keep = {k: v for k, v in source.items() if not k.startswith(self.embedding_key) and _layer_ok(k, self.layer_key, n_layer)}
        try:
            self.backbone.load_state_dict(keep, strict=False)
        except RuntimeError as error:
            raise arpro.ArproError(f"{self.name}: {path} does not fit preset {self.config['preset']!r}: {error}") from None

    def size_bottleneck(self, train: Tensor) -> int:
        """Rebuild the bottleneck with as many units as the principal components that explain
        ``BOTTLENECK_VARIANCE`` of the rows of ``train`` ``[N, T, D]`` (at least 1, at most ``D − 1``),
        record it in the config, and return it. The reconstruction then has PCA's capacity per step
        and the transformer adds the time context."""
        d = self.config["input_shape"][1]
        rows = train.reshape(-1, d).double()
        power = torch.linalg.svdvals(rows - rows.mean(0)).pow(2)
        share = power.cumsum(0) / power.sum().clamp_min(1e-12)
        width = min(max(1, d - 1), max(1, int((share < BOTTLENECK_VARIANCE).sum()) + 1))
        self.squeeze = nn.Linear(d, width)
        self.expand = nn.Linear(width, self.config["hidden"])
        self.config["bottleneck"] = width
        return width

    def reconstruct(self, x: Tensor) -> Tensor:
        """``x̂`` in the units of ``x``; the score's target is ``x`` itself under either normalisation."""
        if self.config["normalise"] == "dataset":
            return self._rebuild(x)
        mean = x.mean(1, keepdim=True)
        std = (x.var(1, unbiased=False, keepdim=True) + self.config["eps"]).sqrt()
        return self._rebuild((x - mean) / std) * std + mean

    def _rebuild(self, z: Tensor) -> Tensor:
        h = self.expand(self.squeeze(z))
        h = self.backbone(inputs_embeds=h, use_cache=False).last_hidden_state
        return self.head(h)

    def reference_score(self, x: Tensor) -> Tensor:
        """The window's total squared reconstruction error, computed with ``mse_loss``, plus its
        weighted variability score."""
        error = torch.nn.functional.mse_loss(self.reconstruct(x), x, reduction="none").sum((1, 2))
        return error + self._variability(x).sum((1, 2))

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        """The values are exact either way. With ``gradient="fixed-target"`` (the default) the
        gradient treats the reconstruction ``x̂`` as a fixed target, ``∂alpha/∂x = −2(x̂ − x)`` for the
        reconstruction part: a guided step then costs one backbone forward and no backward. The
        term it drops, through ``∂x̂/∂x``, is mostly small for a bottlenecked reconstruction (cosine
        similarity of the two gradients: median 0.996 over 64 faulty plant windows, 5% below 0.70),
        and the guided repairs of seed 1 came out the same (docs/decisions/ts-detectors-tep.md)."""
        fixed = self.config["gradient"] == "fixed-target"
        with torch.no_grad() if fixed else contextlib.nullcontext():
            x_hat = self.reconstruct(x)
        alpha = (x_hat - x).pow(2) + self._variability(x)
        return arpro.Decomposition(alpha=alpha, beta=x.new_zeros(x.shape[0]))

    def _variability(self, x: Tensor) -> Tensor:
        """``w · v`` per cell; zero while the normal ranges are not fitted (during training) or ``w = 0``."""
        weight = self.config["variability"]
        if weight == 0 or self.variability_lo.numel() == 0:
            return torch.zeros_like(x)
        ranges = {key: getattr(self, f"variability_{key}") for key in VARIABILITY_RANGES}
        return weight * variability_score.score(x, ranges)

    @torch.no_grad()
    def calibrate(self, train: Tensor, batch_size: int = 64) -> None:
        """Fit the variability score's normal ranges, then the thresholds on the whole score."""
        if self.config["variability"] > 0:
            error = torch.cat([(self.reconstruct(b) - b).pow(2).flatten(0, 1) for b in train.split(batch_size)])
            for key, value in variability_score.fit(train, error.median(0).values).items():
                setattr(self, f"variability_{key}", value.to(self.head.weight))
        super().calibrate(train, batch_size)

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        """AdamW on the mean squared reconstruction error of normal windows, then calibrate.

        Options: ``steps`` (default: config ``train_steps``), ``lr``, ``batch_size``. A model whose
        config has ``bottleneck=None`` has it sized from ``train`` first (:meth:`size_bottleneck`).
        """
        torch.manual_seed(seed)  # load_pretrained and the bottleneck build layers; fit_loop seeds again for training
        if self.config["bottleneck"] is None:
            self.size_bottleneck(train)
        if self.config["pretrained"]:
            self.load_pretrained(Path(self.config["pretrained"]))
        arpro.fit_loop(
            self, lambda x, generator: (self.reconstruct(x) - x).pow(2).mean(), train, seed=seed, progress=progress,
            weight_decay=1e-4, cosine=True, **arpro.fit_options(self, options),
        )
        with torch.no_grad():
            self.calibrate(train)


class GPT2Detector(ReconstructionDetector):
    """GPT-2 backbone (transformers GPT2Model) reconstructing each window; score = squared error.

    Presets: ``small`` (2 layers, width 64; the bundled checkpoint) and ``paper`` (the first
    6 layers of GPT-2 small, width 768). ``pretrained``: a local GPT-2 folder whose first
    ``n_layer`` blocks initialise the backbone (nothing is downloaded).
    """

    name = "gpt2"
    family = "gpt2"
    embedding_key, layer_key = "wte", "h."  # state-dict prefixes of the token embedding and of the layers
    is_default = True

    def build_backbone(self, length, n_layer, hidden, n_head, intermediate):
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            n_positions=max(1024, length), n_embd=hidden, n_layer=n_layer, n_head=n_head, n_inner=intermediate,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, vocab_size=1, use_cache=False,
            bos_token_id=None, eos_token_id=None,
        )
        model = GPT2Model(config)
        return model


class Llama2Detector(ReconstructionDetector):
    """Llama-2 backbone (transformers LlamaModel) reconstructing each window; score = squared error.

    Presets: ``small`` (2 layers, width 64; the bundled checkpoint) and ``paper`` (4 layers,
    width 1024, as in the paper). ``pretrained``: a local Llama folder whose first
    ``n_layer`` layers initialise the backbone when the widths agree.
    """

    name = "llama2"
    family = "llama2"
    embedding_key, layer_key = "embed", "layers."

    def build_backbone(self, length, n_layer, hidden, n_head, intermediate):
        from transformers import LlamaConfig, LlamaModel

        config = LlamaConfig(
            vocab_size=1, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=n_layer,
            num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=max(2048, length),
            attention_dropout=0.0, use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        )
        model = LlamaModel(config)
        return model


def _layer_ok(key: str, prefix: str, n_layer: int) -> bool:
    if not key.startswith(prefix):
        return True
    return int(key[len(prefix) :].split(".")[0]) < n_layer
