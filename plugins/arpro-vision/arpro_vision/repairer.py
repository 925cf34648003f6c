"""The image repairer: a DDPM on diffusers' ``UNet2DModel`` trained on normal images."""

from __future__ import annotations

from torch import Tensor

import arpro
from arpro_vision.bundled import ShippedModel


class ImageDDPM(ShippedModel, arpro.Repairer):
    """DDPM with a diffusers UNet2DModel noise predictor for [3, S, S] images in [-1, 1].

    Trained with ``arpro.train_denoiser`` (the standard epsilon objective, AdamW,
    ``lr`` 1e-4 by default as in the paper; 2e-4 trains faster on a small CPU budget).
    DDPM or DDIM sampling comes from the core's ``make_scheduler``. The default network
    (block channels 32/64/64/128, one ResNet layer per block, no attention) has 3.0 M
    parameters; ``block_out_channels`` and ``layers_per_block`` size it.
    """

    name = "ddpm"
    domain = "image"
    is_default = True

    def __init__(self, input_shape: list[int], block_out_channels: list[int] = (32, 64, 64, 128),
                 layers_per_block: int = 1, norm_num_groups: int = 8, attention: bool = False,
                 train_steps: int = 3000, batch_size: int = 16, lr: float = 1e-4, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear") -> None:
        super().__init__()
        from diffusers.models.unets.unet_2d import UNet2DModel

        channels, height, width = input_shape
        if height != width:
            raise arpro.ArproError(f"ddpm needs square images, got {height}x{width}")
        levels = len(block_out_channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if attention and levels > 1:  # self-attention at the lowest resolution only
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=height,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=norm_num_groups,
        )

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.unet(x_t, t).sample

    def fit(self, train: Tensor, *, seed: int = 0, progress: bool = True, **options) -> list[float]:
        """``options``: ``steps``, ``lr``, ``batch_size`` override the config for this call."""
        return arpro.train_denoiser(self, train, seed=seed, progress=progress, **arpro.fit_options(self, options))
