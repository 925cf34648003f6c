"""Diffusion-TS: an interpretable transformer denoiser that predicts x0 directly.

After X. Yuan and Y. Qiao, "Diffusion-TS: Interpretable Diffusion for General Time Series
Generation", ICLR 2024 (arXiv:2403.01742). Written from the paper's description:

- the noisy window ``x_t`` ``[B, T, D]`` is embedded per time step (a convolution over
  time) and goes through a transformer **encoder**; the **decoder** blocks attend to
  themselves and to the encoder output, every block conditioned on the diffusion step
  through adaptive layer norm;
- each decoder block adds to three outputs:
  * a **trend** part: coefficients of a low-degree polynomial basis
    ``(t / (T+1))^p, p = 1..degree``, pooled from the block's activations over time;
  * a **seasonal** part: the top-k frequencies (by amplitude) of the block's activations,
    rebuilt as sinusoids (Fourier synthesis), k = ``fourier_factor · log(T/2)``;
  * the block's time-mean (a level term) — the rest flows on as the residual;
- output ``x̂0 = trend + seasonal + residual``; ``prediction_type = "sample"``;
- training loss ``‖x0 − x̂0‖² + fourier_weight · ‖FFT(x0) − FFT(x̂0)‖²`` (real and
  imaginary parts, ``norm="forward"``), with ``fourier_weight = sqrt(T) / 5`` (the weight
  recalled from the authors' code, not checked here).

Differences from the paper: small widths and the diffusers cosine schedule
(``squaredcos_cap_v2``, 500 steps) instead of its own, for a CPU budget; the paper's
reconstruction-guided conditional sampling is replaced by arpro's own masked in-filling and
property guidance (the engine); and, by default, ``parameterization="v"``:
``x̂0 = sqrt(ᾱ_t)·x_t + sqrt(1 − ᾱ_t)·(trend + seasonal + residual)``, trained with each
window's loss divided by ``1 − ᾱ_t``. That is v-prediction (Salimans & Ho, 2022) written on
x0: at low noise x̂0 is almost ``x_t`` by construction, where a network that must output x0
whole smooths away the sensors' measurement noise, and the detectors then flag every generated
element as a frozen sensor (docs/explanation/timeseries.md). ``parameterization="x0"`` is the paper's.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor, nn

import arpro
from arpro_timeseries.bundled import ShippedModel
from arpro_timeseries.masks import WindowMasks


class AdaLayerNorm(nn.Module):
    """Layer norm whose scale and shift come from the diffusion-step embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.to_scale_shift(emb)[:, None, :].chunk(2, dim=-1)
        return self.norm(h) * (1 + scale) + shift


class Mlp(nn.Sequential):
    def __init__(self, width: int, ratio: int) -> None:
        super().__init__(nn.Linear(width, ratio * width), nn.GELU(), nn.Linear(ratio * width, width))


class EncoderBlock(nn.Module):
    def __init__(self, width: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = AdaLayerNorm(width), AdaLayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = Mlp(width, ratio)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        a = self.ln1(h, emb)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        return h + self.mlp(self.ln2(h, emb))


class TrendBlock(nn.Module):
    """Polynomial trend: ``degree`` coefficients per output feature, pooled over time."""

    def __init__(self, length: int, width: int, features: int, degree: int) -> None:
        super().__init__()
        self.pool = nn.Linear(length, degree)  # time -> polynomial coefficients
        self.to_features = nn.Linear(width, features)
        grid = torch.arange(1, length + 1, dtype=torch.float32) / (length + 1)
        self.register_buffer("basis", torch.stack([grid ** (p + 1) for p in range(degree)]), persistent=False)

    def forward(self, h: Tensor) -> Tensor:  # [B, T, W] -> [B, T, D]
        coeffs = self.pool(h.transpose(1, 2))  # [B, W, degree]
        coeffs = self.to_features(coeffs.transpose(1, 2))  # [B, degree, D]
        return torch.einsum("bpd,pt->btd", coeffs, self.basis)


class FourierLayer(nn.Module):
    """Seasonality: keep the top-k frequencies of each channel by amplitude, rebuild as sinusoids."""

    def __init__(self, length: int, factor: float) -> None:
        super().__init__()
        self.length = length
        n_freq = length // 2 + 1 - 1 - (1 if length % 2 == 0 else 0)  # without DC and Nyquist
        self.top_k = max(1, min(n_freq, int(factor * math.log(max(n_freq, 2)))))
        freqs = torch.fft.rfftfreq(length)[1 : 1 + n_freq]
        t = torch.arange(length, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)
        self.register_buffer("t", t, persistent=False)

    def forward(self, h: Tensor) -> Tensor:  # [B, T, W] -> [B, T, W]
        spectrum = torch.fft.rfft(h, dim=1)[:, 1 : 1 + self.freqs.numel()]  # [B, F, W]
        amplitude = spectrum.abs()
        top = amplitude.topk(self.top_k, dim=1).indices  # [B, k, W]
        chosen = spectrum.gather(1, top)
        f = self.freqs[top]  # [B, k, W]
        angle = 2 * math.pi * f[:, :, None, :] * self.t[None, None, :, None] + chosen.angle()[:, :, None, :]
        return (2.0 / self.length * chosen.abs()[:, :, None, :] * torch.cos(angle)).sum(1)  # [B, T, W]


class DecoderBlock(nn.Module):
    def __init__(self, length: int, width: int, features: int, heads: int, ratio: int, degree: int, factor: float):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = AdaLayerNorm(width), AdaLayerNorm(width), AdaLayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.split = nn.Linear(width, 2 * width)
        self.trend = TrendBlock(length, width, features, degree)
        self.seasonal = FourierLayer(length, factor)
        self.mlp = Mlp(width, ratio)
        self.level = nn.Linear(width, features)

    def forward(self, h: Tensor, enc: Tensor, emb: Tensor):
        a = self.ln1(h, emb)
        h = h + self.self_attn(a, a, a, need_weights=False)[0]
        a = self.ln2(h, emb)
        h = h + self.cross_attn(a, enc, enc, need_weights=False)[0]
        for_trend, for_season = self.split(h).chunk(2, dim=-1)
        trend, season = self.trend(for_trend), self.seasonal(for_season)
        h = h + self.mlp(self.ln3(h, emb))
        mean = h.mean(1, keepdim=True)
        return h - mean, self.level(mean), trend, season


PARAMETERIZATIONS = ("v", "x0")


class DiffusionTS(ShippedModel, WindowMasks, arpro.Repairer):
    """Diffusion-TS (Yuan & Qiao, ICLR 2024): interpretable trend + seasonal + residual x0-predicting denoiser."""

    name = "diffusion-ts"
    smoke_fit_options = {"steps": 2}
    domain = "timeseries"
    is_default = True
    prediction_type = "sample"

    def __init__(self, input_shape: list[int], width: int = 64, heads: int = 4, encoder_layers: int = 1,
                 decoder_layers: int = 2, mlp_ratio: int = 2, trend_degree: int = 3, fourier_factor: float = 1.0,
                 fourier_weight: float | None = None, train_steps: int = 10000, batch_size: int = 32, lr: float = 1e-3,
                 num_train_timesteps: int = 500, beta_schedule: str = "squaredcos_cap_v2", parameterization: str = "v") -> None:
        t, d = (int(v) for v in input_shape)
        fourier_weight = math.sqrt(t) / 5 if fourier_weight is None else float(fourier_weight)
        if parameterization not in PARAMETERIZATIONS:
            raise arpro.ArproError(f"diffusion-ts: parameterization must be {' or '.join(PARAMETERIZATIONS)}, "
                                   f"not {parameterization!r}")
        super().__init__()
        self.config.update(input_shape=[t, d], fourier_weight=fourier_weight)  # the resolved default
        self.embed = nn.Conv1d(d, width, kernel_size=3, padding=1)
        self.pos_enc = nn.Parameter(torch.randn(1, t, width) * 0.02)
        self.pos_dec = nn.Parameter(torch.randn(1, t, width) * 0.02)
        arpro.import_diffusers()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.encoder = nn.ModuleList(EncoderBlock(width, heads, mlp_ratio) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(
            DecoderBlock(t, width, d, heads, mlp_ratio, trend_degree, fourier_factor) for _ in range(decoder_layers)
        )
        self.combine_levels = nn.Linear(decoder_layers, 1)
        self.combine_season = nn.Linear(width, d)
        self.out = nn.Conv1d(width, d, kernel_size=3, padding=1)
        self.register_buffer("alphas_cumprod", self.make_scheduler("ddpm").alphas_cumprod.float(), persistent=False)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Checkpoints saved before ``parameterization`` existed output x̂0 directly."""
        return {"parameterization": "x0", **config}

    def decompose_output(self, x_t: Tensor, t: Tensor) -> dict[str, Tensor]:
        """The interpretable parts of x̂0: ``trend``, ``seasonal``, ``residual`` (each ``[B, T, D]``)."""
        emb = self.time_embed(self.time_proj(t).to(x_t.dtype))
        h = self.embed(x_t.transpose(1, 2)).transpose(1, 2)
        enc = h + self.pos_enc
        for block in self.encoder:
            enc = block(enc, emb)
        dec = h + self.pos_dec
        trend = x_t.new_zeros(x_t.shape)
        season = x_t.new_zeros(*x_t.shape[:2], self.config["width"])
        levels = []
        for block in self.decoder:
            dec, level, block_trend, block_season = block(dec, enc, emb)
            trend, season = trend + block_trend, season + block_season
            levels.append(level)
        residual = self.out(dec.transpose(1, 2)).transpose(1, 2)
        residual_mean = residual.mean(1, keepdim=True)
        level = self.combine_levels(torch.cat(levels, dim=1).transpose(1, 2)).transpose(1, 2)  # [B, 1, D]
        parts = {
            "trend": trend + level + residual_mean,
            "seasonal": self.combine_season(season),
            "residual": residual - residual_mean,
        }
        if self.config["parameterization"] == "x0":
            return parts
        alpha_bar = self.alphas_cumprod[t.long()].to(x_t.dtype)[:, None, None]
        skip = alpha_bar.sqrt() * x_t  # its level counts as trend, the rest as residual
        parts = {key: (1 - alpha_bar).sqrt() * part for key, part in parts.items()}
        parts["trend"] = parts["trend"] + skip.mean(1, keepdim=True)
        parts["residual"] = parts["residual"] + skip - skip.mean(1, keepdim=True)
        return parts

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        parts = self.decompose_output(x_t, t)
        return parts["trend"] + parts["seasonal"] + parts["residual"]

    def fourier_loss(self, x0: Tensor, prediction: Tensor) -> Tensor:
        a = torch.fft.fft(x0, dim=1, norm="forward")
        b = torch.fft.fft(prediction, dim=1, norm="forward")
        return self.config["fourier_weight"] * ((a - b).real.pow(2) + (a - b).imag.pow(2)).flatten(1).mean(1)

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options: Any) -> list[float]:
        """The core's denoiser loop (x0 target, weighted as v-prediction with ``parameterization="v"``) plus the
        Fourier term. Options: ``steps``, ``lr``, ``batch_size``."""
        resolved = arpro.fit_options(self, options)
        note_few_windows(len(train), resolved["steps"], resolved["batch_size"])
        return arpro.train_denoiser(
            self, train, seed=seed, progress=progress, extra_loss=self.fourier_loss,
            weighting="snr+1" if self.config["parameterization"] == "v" else "uniform", **resolved
        )


# TEP's 13 windows: 2,000 steps (4,900 passes) repaired nearly as well as 10,000; the plant cut to 18 windows did not
PASSES_ENOUGH = 5_000


def note_few_windows(windows: int, steps: int, batch_size: int) -> None:
    """Say so when the steps pass over a short series' windows far more often than over the plant's 993 (322
    passes in 10,000 steps), naming the shorter run a user may trade some quality for
    (docs/decisions/ts-repairer-steps.md)."""
    passes = steps * batch_size / max(windows, 1)
    if passes > PASSES_ENOUGH:
        fewer = math.ceil(PASSES_ENOUGH * windows / batch_size / 100) * 100
        print(f"note: {steps:,} steps of {batch_size} pass over these {windows} training windows {passes:,.0f} times; "
              f"--model-option train_steps={fewer} ({PASSES_ENOUGH:,} passes) trains in {fewer / steps:.0%} of the "
              f"time, at a cost in repair quality that depends on the series (docs/decisions/ts-repairer-steps.md)",
              file=sys.stderr)
