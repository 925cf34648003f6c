"""A no-weights image detector: nearest-neighbour distances of raw pixel patches to normal ones.

Why: with no downloaded ImageNet weights, FastFlow's and EfficientAD's random backbones do not
separate real surface defects (image AUROC ~0.5 on KolektorSDD). Grayscale surfaces are
described well by their own small patches once the slow illumination is removed, so this
detector needs nothing but the normal training images. Its defaults were chosen on the
``surface`` dataset's seed-0 test pictures (docs/decisions/vision-detectors.md).

Features, differentiable in ``x``: the gray image (mean of the channels) minus its Gaussian blur
(``highpass_sigma`` model pixels; removes uneven illumination), in units of the training
pictures' robust high-pass std (1.4826 x median absolute deviation: the grain's), squashed
softly to ±``saturation`` by ``saturation·tanh(v / saturation)`` so that a part's edge, many
std deep, weighs no more than a faint crack; at each scale of ``scales`` it is average-pooled
over windows of ``k`` x ``k`` pixels (a scale ``k``) or ``h`` x ``w`` pixels (a scale ``[h, w]``:
a window one pixel high and eight wide keeps a thin crack along it while it averages isolated
specks away) and every ``patch`` x ``patch`` neighbourhood (reflect-padded) is one feature
vector. Fitting keeps,
per scale, a greedy k-centre coreset of ``bank_size`` training patches (the memory bank), chosen
from the even-numbered training pictures, and measures the odd-numbered pictures' squared
nearest-neighbour distances ``d²``; ``excess`` is their ``excess_quantile``.

Decomposition: at each position of a scale, ``max(d² − excess, 0)`` is spread evenly over the
input pixels its pooling window covers, ``alpha`` ``[B, H, W]`` is the sum over scales and
``beta = 0``, so ``s(x) = sum(alpha)`` exactly: how far, in excess of normal variation, the
picture's patches lie from every normal patch. The nearest neighbour is found without
gradients and its distance recomputed with them, so ``∇s`` is the gradient of the minimum.

Memory: no patch matrix is built except under gradients. Patches are gathered ``SEARCH_CHUNK``
rows at a time from the padded feature maps (the same values ``F.unfold`` gives, searched in the
same chunks, so the same results), and fit computes feature maps ``FIT_IMAGES`` pictures at a
time; what still grows with the training set is a few bytes per training pixel (the maps, the
random permutations, the held-out distances), about the size of the training tensor itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import arpro
from arpro import ArproError
from arpro_vision.backbone import check_input_size, image_hw
from arpro_vision.bundled import ShippedModel
from arpro_vision.images import on_the_picture

SEARCH_CHUNK = 4096  # query patches per nearest-neighbour block: bounds the patches' and distance matrix's memory
FIT_IMAGES = 16  # training pictures whose feature maps fit computes at once (blur buffers: ~17x a gray picture)
CORESET_POOL = 20000  # training patches the greedy coreset chooses from, per scale


def gaussian_blur(gray: Tensor, sigma: float) -> Tensor:
    """``[B, 1, H, W]`` blurred with a separable Gaussian, reflect-padded (differentiable)."""
    radius = max(1, int(3 * sigma))
    radius = min(radius, gray.shape[-1] - 1, gray.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=gray.dtype, device=gray.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(F.pad(gray, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def nearest(queries: Tensor, bank: Tensor) -> Tensor:
    """Index into ``bank`` ``[M, D]`` of each query's nearest row (``queries`` ``[N, D]``), without
    gradients, ``SEARCH_CHUNK`` queries at a time. Each chunk's answer is written into one tensor
    made beforehand: kept as a list of small pieces, allocated between the large transient distance
    blocks, they fragmented glibc's heap (measured at 256 px: about 16 MB lost per chunk, 9 GB after
    900 chunks of one fit)."""
    index = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    with torch.no_grad():
        for start in range(0, queries.shape[0], SEARCH_CHUNK):
            index[start : start + SEARCH_CHUNK] = torch.cdist(queries[start : start + SEARCH_CHUNK], bank).argmin(1)
    return index


def patch_rows(padded: Tensor, patch: int, rows: Tensor) -> Tensor:
    """Rows ``rows`` of the patch matrix ``F.unfold(padded, patch).transpose(1, 2).reshape(-1, patch²)``
    of a one-channel ``padded`` ``[B, 1, H', W']``, gathered without building the other rows: the
    same values, in memory that grows with ``len(rows)`` only (row ``b·L + l`` is picture ``b``'s
    ``l``-th position, row-major, of ``L = (H' − patch + 1)(W' − patch + 1)``)."""
    height, width = padded.shape[-2:]
    columns = width - patch + 1
    positions = (height - patch + 1) * columns
    image, position = rows // positions, rows % positions
    corner = image * (height * width) + (position // columns) * width + position % columns
    offsets = torch.arange(patch, device=rows.device)
    offsets = (offsets.unsqueeze(1) * width + offsets).flatten()  # unfold's order: kernel row, then column
    return padded.reshape(-1)[corner.unsqueeze(1) + offsets]


def patch_count(padded: Tensor, patch: int) -> int:
    """Rows of ``padded``'s patch matrix: pictures x positions."""
    return padded.shape[0] * (padded.shape[-2] - patch + 1) * (padded.shape[-1] - patch + 1)


def nearest_distances(padded: Tensor, patch: int, bank: Tensor) -> Tensor:
    """Each patch's (every row of ``patch_rows``, in order) squared distance to its nearest bank
    row, without gradients, ``SEARCH_CHUNK`` rows at a time: peak memory grows with the chunk, not with
    the number of pictures or their size, and the chunks (hence the results) are ``nearest``'s."""
    count = patch_count(padded, patch)
    d2 = padded.new_empty(count)  # filled in place, not concatenated: see nearest
    with torch.no_grad():
        for start in range(0, count, SEARCH_CHUNK):
            stop = min(start + SEARCH_CHUNK, count)
            chunk = patch_rows(padded, patch, torch.arange(start, stop, device=padded.device))
            d2[start:stop] = (chunk - bank[torch.cdist(chunk, bank).argmin(1)]).pow(2).sum(1)
    return d2


def greedy_coreset(features: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """``size`` rows of ``features`` chosen by farthest-point sampling (k-centre), from a random start."""
    if features.shape[0] <= size:
        return features.clone()
    chosen = [int(torch.randint(features.shape[0], (1,), generator=generator))]
    distance = (features - features[chosen[0]]).pow(2).sum(1)
    for _ in range(size - 1):
        chosen.append(int(distance.argmax()))
        distance = torch.minimum(distance, (features - features[chosen[-1]]).pow(2).sum(1))
    return features[chosen].clone()


def pooling_window(scale: int | list[int]) -> tuple[int, int]:
    """A scale's pooling window, (height, width): ``k`` is ``k`` x ``k``, ``[h, w]`` is ``h`` x ``w``."""
    window = (scale, scale) if isinstance(scale, int) else tuple(scale)
    if len(window) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in window):
        raise ArproError(f"patchnn scale {scale!r} must be a whole number >= 1 or a pair [height, width] of them")
    return window


def bank_name(window: tuple[int, int]) -> str:
    """The buffer holding a scale's memory bank: ``bank_4`` for 4 x 4 (as checkpoints name it), ``bank_1x8``."""
    height, width = window
    return f"bank_{height}" if height == width else f"bank_{height}x{width}"


class PatchNNDetector(ShippedModel, arpro.Detector):
    """Nearest-neighbour distances of illumination-flattened pixel patches; no pretrained weights."""

    name = "patchnn"
    domain = "image"
    smoke_fit_options = {"bank_size": 64}
    guidance_scale = 3e-3  # chosen on surface seed 0 (guided repair, 16 defective pictures); the core caps the gradient RMS at 1
    # chosen with it: the last 10 % of the steps regenerate the whole picture, so the seams that the
    # DDPM's in-fill leaves at omega's edge are smoothed under guidance (measured before the core put
    # omega_bar back exactly after the loop, issue 30; only omega's side of a seam is smoothed now);
    # omega is the picture's top 3 % of alpha among the pixels above tau (on seed 0, all 40 defective
    # pictures: TNR 0.97 and all-hold 0.95, against 0.75 and 0.53 with tau alone; docs/explanation/vision.md)
    repair_defaults = {"guide_on": "x0", "eta_schedule": "constant", "infill_stop": 0.1, "mask": "top-train",
                       "mask_quantile": 0.97}

    def __init__(self, input_shape: list[int], patch: int = 5, scales: list[int | list[int]] | None = None,
                 highpass_sigma: float = 4.0, saturation: float = 2.0, bank_size: int = 1024,
                 excess_quantile: float = 0.99) -> None:
        super().__init__()
        scales = [1, 2, 4] if scales is None else scales
        self.windows = [pooling_window(k) for k in scales]
        self.config["scales"] = [h if h == w else [h, w] for h, w in self.windows]
        height, width = image_hw(input_shape)
        if patch < 1 or patch % 2 == 0:
            raise ArproError(f"patchnn patch must be an odd number of pixels, not {patch}")
        if not scales or any(height % h or width % w or min(height // h, width // w) <= patch // 2
                             for h, w in self.windows):
            raise ArproError(f"patchnn scales {scales} must each divide the image size {height}x{width} and leave "
                             f"more than {patch // 2} pixels per side")
        if highpass_sigma <= 0 or saturation <= 0 or bank_size < 1 or not 0.0 < excess_quantile <= 1.0:
            raise ArproError("patchnn needs highpass_sigma > 0, saturation > 0, bank_size >= 1 and excess_quantile in (0, 1]")
        self.register_buffer("feature_std", torch.zeros(0))  # set by fit
        self.register_buffer("excess", torch.zeros(0))  # [len(scales)], set by fit
        for window in self.windows:
            self.register_buffer(bank_name(window), torch.zeros(0))  # [bank_size, patch²], set by fit

    def _highpass(self, x: Tensor) -> Tensor:
        """The gray picture less its illumination (its Gaussian blur), ``[B, 1, H, W]``."""
        gray = x.mean(1, keepdim=True)
        return gray - gaussian_blur(gray, self.config["highpass_sigma"])

    def _padded(self, x: Tensor) -> list[Tensor]:
        """Per scale: the feature map, pooled and reflect-padded for patches,
        ``[B, 1, H/k + patch − 1, W/k + patch − 1]``."""
        check_input_size(self.name, self.config["input_shape"], x)
        limit = self.config["saturation"]
        flat = limit * torch.tanh(self._highpass(x) / self.feature_std / limit)
        p = self.config["patch"]
        return [F.pad(F.avg_pool2d(flat, window) if window != (1, 1) else flat, (p // 2,) * 4, mode="reflect")
                for window in self.windows]

    def _fit_maps(self, x: Tensor) -> list[Tensor]:
        """``_padded`` of many pictures, ``FIT_IMAGES`` at a time, filled in place (see ``nearest``)."""
        maps = None
        for start in range(0, x.shape[0], FIT_IMAGES):
            parts = self._padded(x[start : start + FIT_IMAGES])
            maps = maps or [part.new_empty(x.shape[0], *part.shape[1:]) for part in parts]
            for whole, part in zip(maps, parts, strict=True):
                whole[start : start + FIT_IMAGES] = part
        return maps

    def _patches(self, x: Tensor) -> list[Tensor]:
        """Per scale: every position's patch vector, ``[B, positions, patch²]`` (all at once: the
        gradient path and ``reference_score``)."""
        return [F.unfold(padded, self.config["patch"]).transpose(1, 2) for padded in self._padded(x)]

    def _distances(self, x: Tensor) -> list[Tensor]:
        """Per scale: squared distance of each position's patch to its nearest bank patch, ``[B, positions]``.
        Without gradients, chunk by chunk (``nearest_distances``); with them, the patches are built at once
        (autograd keeps them) and the distance is recomputed differentiably, the nearest found without gradients."""
        out, p = [], self.config["patch"]
        for window, padded in zip(self.windows, self._padded(x), strict=True):
            bank = getattr(self, bank_name(window))
            if not (torch.is_grad_enabled() and padded.requires_grad):
                out.append(nearest_distances(padded, p, bank).reshape(x.shape[0], -1))
                continue
            flat = F.unfold(padded, p).transpose(1, 2).reshape(-1, p * p)
            neighbour = bank[nearest(flat.detach(), bank)]
            out.append((flat - neighbour).pow(2).sum(1).reshape(x.shape[0], -1))
        return out

    def decompose(self, x: Tensor) -> arpro.Decomposition:
        """Scored on a letterboxed picture alone (:func:`~arpro_vision.images.on_the_picture`)."""
        return on_the_picture(self._decompose, x)

    def _decompose(self, x: Tensor) -> arpro.Decomposition:
        if self.excess.numel() == 0:
            raise ArproError("patchnn is not fitted: train it (arpro train detector --detector patchnn) first")
        height, width = x.shape[-2:]
        alpha = x.new_zeros(x.shape[0], height, width)
        for (h, w), excess, d2 in zip(self.windows, self.excess, self._distances(x), strict=True):
            over = (d2 - excess).clamp_min(0).reshape(x.shape[0], 1, height // h, width // w) / (h * w)
            alpha = alpha + F.interpolate(over, scale_factor=(h, w), mode="nearest").squeeze(1)
        return arpro.Decomposition(alpha=alpha, beta=x.new_zeros(x.shape[0]))

    def reference_score(self, x: Tensor) -> Tensor:
        """The sum over scales and positions of the excess distance, from a full distance matrix."""
        score = x.new_zeros(x.shape[0])
        for window, excess, patches in zip(self.windows, self.excess, self._patches(x), strict=True):
            d2 = torch.cdist(patches, getattr(self, bank_name(window)).unsqueeze(0).expand(x.shape[0], -1, -1)).amin(2) ** 2
            score = score + (d2 - excess).clamp_min(0).sum(1)
        return score

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> None:
        """Coreset banks from the even-numbered pictures, excess from the odd-numbered ones; ``options``:
        ``bank_size`` for this call (the smoke test's small banks)."""
        if train.shape[0] < 2:
            raise ArproError("patchnn needs at least 2 normal training pictures (one for the bank, one for the excess)")
        bank_size = int(options.get("bank_size", self.config["bank_size"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            flat = train.new_empty(train.shape[0], *train.shape[2:])  # filled in place: see nearest
            for start in range(0, train.shape[0], FIT_IMAGES):
                flat[start : start + FIT_IMAGES] = self._highpass(train[start : start + FIT_IMAGES]).squeeze(1)
            flat = flat.flatten()
            flat = flat[torch.randperm(flat.numel(), generator=generator)[:1000000]]
            self.feature_std = (1.4826 * (flat - flat.median()).abs().median()).clamp_min(1e-6).reshape(())
            excess, p = [], self.config["patch"]
            for window, bank_map, held_map in zip(self.windows, self._fit_maps(train[0::2]),
                                                  self._fit_maps(train[1::2]), strict=True):
                rows = torch.randperm(patch_count(bank_map, p), generator=generator)[:CORESET_POOL]
                pool = patch_rows(bank_map, p, rows)
                with arpro.progress_phase(f"patchnn: coreset of window {window}", enabled=progress):
                    bank = greedy_coreset(pool, bank_size, generator)
                setattr(self, bank_name(window), bank)
                d2 = nearest_distances(held_map, p, bank)
                excess.append(torch.quantile(d2[torch.randperm(d2.shape[0], generator=generator)[:100000]],
                                             self.config["excess_quantile"]))
            self.excess = torch.stack(excess)
        self.calibrate(train)

    def calibrate(self, train: Tensor, batch_size: int = 64) -> None:
        """As the core's, with ``tau`` kept above 0: alpha is 0 on most normal pixels, and omega
        (alpha >= tau) must not take those."""
        super().calibrate(train, batch_size)
        self.tau = self.tau.clamp_min(torch.finfo(self.tau.dtype).tiny)
