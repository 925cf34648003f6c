"""The image repairer: a DDPM on diffusers' ``UNet2DModel`` trained on normal images, or read
from a diffusers ``save_pretrained`` folder (and written as one)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

import arpro
from arpro_vision.bundled import ShippedModel
from arpro_vision.masks import SquareMasks


class ImageDDPM(ShippedModel, SquareMasks, arpro.Repairer):
    """DDPM with a diffusers UNet2DModel noise predictor for [3, S, S] images in [-1, 1].

    ``channels`` 1 (chosen by :meth:`for_dataset` for a set whose pictures are all gray) trains
    and runs a 1-channel UNet on the pictures' gray level, so that no colour can appear: the
    engine's three-channel chain is read through it (:meth:`forward`). A checkpoint records the
    count in its config; one saved before it existed is 3-channel, and still repairs gray sets.

    Trained with ``arpro.train_denoiser`` (the standard epsilon objective, AdamW,
    ``lr`` 1e-4 by default as in the paper; 2e-4 trains faster on a small CPU budget).
    DDPM or DDIM sampling comes from the core's ``make_scheduler``. The default network
    (block channels 32/64/64/128, one ResNet layer per block, no attention) has 3.0 M
    parameters; ``block_out_channels`` and ``layers_per_block`` size it. ``unet``, a whole
    ``UNet2DModel`` config, replaces them: that of a UNet read from a diffusers folder.
    """

    name = "ddpm"
    smoke_fit_options = {"steps": 2, "batch_size": 4}
    domain = "image"
    is_default = True
    folder_format = "diffusers"

    def __init__(self, input_shape: list[int], block_out_channels: list[int] = (32, 64, 64, 128),
                 layers_per_block: int = 1, norm_num_groups: int = 8, attention: bool = False,
                 train_steps: int = 3000, batch_size: int = 16, lr: float = 1e-4, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", beta_start: float = 0.0001, beta_end: float = 0.02,
                 prediction_type: str = "epsilon", unet: dict | None = None, channels: int = 3) -> None:
        super().__init__()
        from diffusers.models.unets.unet_2d import UNet2DModel

        data_channels, height, width = input_shape
        if height != width:
            raise arpro.ArproError(f"ddpm needs square images, got {height}x{width}")
        if prediction_type not in ("epsilon", "sample"):
            raise arpro.ArproError(f"ddpm repairs with prediction_type epsilon or sample, not {prediction_type!r}")
        self.prediction_type = prediction_type
        if channels not in (1, data_channels):
            raise arpro.ArproError(f"ddpm: channels must be 1 or the samples' {data_channels}, not {channels}")
        self.channels = channels if unet is None else int(unet.get("in_channels", channels))
        self.register_buffer("alphas", self.make_scheduler("ddpm").alphas_cumprod.float(), persistent=False)
        if unet is not None:
            try:
                self.unet = UNet2DModel.from_config(unet)
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise arpro.ArproError(f"ddpm: the UNet config does not describe a UNet2DModel diffusers can build: "
                                       f"{str(error).splitlines()[0]}") from None
            return
        levels = len(block_out_channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if attention and levels > 1:  # self-attention at the lowest resolution only
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=height,
            in_channels=self.channels,
            out_channels=self.channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=norm_num_groups,
        )

    @classmethod
    def for_dataset(cls, dataset, **overrides) -> ImageDDPM:
        """Sized for ``dataset``; 1 channel where all its normal training pictures are gray."""
        gray = getattr(dataset, "grayscale", None)
        if "channels" not in overrides and "ddpm_channels" not in getattr(dataset, "options", {}) and callable(gray):
            overrides["channels"] = 1 if gray() else 3
        return super().for_dataset(dataset, **overrides)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.shape[1] == self.channels:
            return self.unet(x_t, t).sample
        return self._gray_forward(x_t, t)

    def _gray_forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The 1-channel UNet's output for a 3-channel ``x_t`` of a gray picture.

        With ``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` and x0's channels equal, the channels' mean
        is x0 at a third of the noise variance: it is rescaled to the timestep t' of that noise
        level, where the UNet predicts x0; each channel's output is then the one for that x0
        (the noise, or x0 itself), so the scheduler's x0 is gray."""
        a = self.alphas.to(x_t.device)
        a_t = a[t].view(-1, 1, 1, 1)
        ratio = (1 - a_t.flatten()) / (3 * a_t.flatten())  # the mean's noise-to-signal variance
        t_gray = torch.searchsorted((1 - a) / a, ratio.contiguous()).clamp(max=len(a) - 1)
        a_g = a[t_gray].view(-1, 1, 1, 1)
        x_gray = x_t.mean(1, keepdim=True) * (a_g / a_t).sqrt()
        out = self.unet(x_gray, t_gray).sample
        x0 = out if self.prediction_type == "sample" else (x_gray - (1 - a_g).sqrt() * out) / a_g.sqrt()
        x0 = x0.expand_as(x_t)
        return x0 if self.prediction_type == "sample" else (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> list[float]:
        """``options``: ``steps``, ``lr``, ``batch_size`` override the config for this call. A 1-channel
        model trains on the pictures' first channel (of gray pictures, their gray level)."""
        data = train[:, : self.channels]
        losses = arpro.train_denoiser(self, data, seed=seed, progress=progress, **arpro.fit_options(self, options))
        self.x_mean = train.mean(0)  # in the samples' space: the SDEdit start and the naive fill
        return losses

    @classmethod
    def from_folder(cls, folder: Path, dataset: arpro.Dataset) -> ImageDDPM:
        """A diffusers folder: a pipeline's ``unet/`` and ``scheduler/`` (``DDPMPipeline.save_pretrained``,
        as diffusers' unconditional training example writes it), or a bare ``UNet2DModel`` folder
        (with ``scheduler_config.json`` beside it, else DDPMScheduler's defaults). Weights are read
        from safetensors only; the mean normal image (for the SDEdit start) comes from ``dataset``."""
        from safetensors.torch import load_file

        unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
        weights = unet_dir / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            pickled = [p.name for p in unet_dir.glob("*.bin")]
            raise arpro.ArproError(
                f"{unet_dir} holds no diffusion_pytorch_model.safetensors" + (
                    f" but {pickled[0]}, a pickle arpro does not load; convert it once with diffusers: "
                    f"UNet2DModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)" if pickled else ""))
        unet = {k: v for k, v in _read_json(unet_dir / "config.json").items() if not k.startswith("_")}
        scheduler_file = next((p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                               if p.is_file()), None)
        schedule = _read_json(scheduler_file) if scheduler_file else {}
        size = unet.get("sample_size", 0)
        whole = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
        if not (whole(size) or isinstance(size, list) and len(size) == 2 and all(map(whole, size))) or not all(
                whole(unet.get(key, 3)) for key in ("in_channels", "out_channels")):
            raise arpro.ArproError(f"{unet_dir / 'config.json'}: sample_size, in_channels and out_channels must be "
                                   f"positive whole numbers (sample_size: one, or [height, width])")
        keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")
        cls.check_config({k: schedule[k] for k in keys if k in schedule}, str(scheduler_file))
        takes = [unet.get("in_channels", 3), *([size, size] if isinstance(size, int) else size)]
        wanted = list(dataset.sample_shape())
        gray = takes[0] == 1 and takes[1:] == wanted[1:] and getattr(dataset, "grayscale", lambda: False)()
        if (takes != wanted and not gray) or unet.get("out_channels", 3) != takes[0]:
            raise arpro.ArproError(
                f"the UNet in {unet_dir} takes {'x'.join(map(str, takes))} images and returns {unet.get('out_channels', 3)} "
                f"channels, but dataset {dataset.name!r} has {'x'.join(map(str, wanted))} samples; give the dataset "
                f"the UNet's size (--option image_size={takes[-1]}) or use a UNet of the dataset's")
        model = cls(input_shape=wanted, unet=unet, channels=takes[0], **{k: schedule[k] for k in keys if k in schedule})
        try:
            model.unet.load_state_dict(load_file(str(weights)))
        except Exception as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            first = next((line for line in lines[1:] if line.startswith(("size mismatch", "Missing", "Unexpected"))),
                         lines[0] if lines else type(error).__name__)
            raise arpro.ArproError(f"{weights} does not fit the UNet its config.json describes: {first[:300]}") from None
        model.x_mean = dataset.train().x.mean(0)
        return model

    def save_folder(self, folder: Path) -> None:
        """``DDPMPipeline.save_pretrained``: ``model_index.json``, ``unet/`` and ``scheduler/`` (safetensors)."""
        from diffusers.pipelines.ddpm.pipeline_ddpm import DDPMPipeline

        DDPMPipeline(unet=self.unet, scheduler=self.make_scheduler("ddpm")).save_pretrained(folder, safe_serialization=True)


def _read_json(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise arpro.ArproError(f"cannot read {path}: {error}") from None
