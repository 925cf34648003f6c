"""What every image dataset shares: the model's image size, reading users' files, writing repairs."""

from __future__ import annotations

from pathlib import Path

import torch

import arpro
from arpro import ArproError
from arpro_vision.images import (DEFAULT_MAX_PIXELS, ImageInfo, Letterbox, open_image, read_image, safe_name, save_image, save_mask,
                                 to_tensor)

DEFAULT_IMAGE_SIZE = 64  # CPU default; 256 and 512 are options (--image-size / image_size=)


def image_size_option(options: dict, default: int = DEFAULT_IMAGE_SIZE) -> int:
    """The ``image_size`` dataset option, checked: a multiple of 16 between 16 and 1024."""
    try:
        size = int(options.get("image_size", default))
    except (TypeError, ValueError):
        raise ArproError(f"image_size must be an integer, not {options.get('image_size')!r}") from None
    if size < 16 or size > 1024 or size % 16:
        raise ArproError(f"image_size must be a multiple of 16 between 16 and 1024, not {size}")
    return size


class ImageDataset(arpro.Dataset):
    """Base class of the image datasets: samples are ``[3, S, S]`` in [-1, 1], S = ``image_size``."""

    domain = "image"
    value_range = (-1.0, 1.0)
    # training options of every model, and any one model's own as ``<model>_<key>``
    accepted_options: tuple[str, ...] = ("image_size", "max_pixels", "tiled", "train_steps", "batch_size", "lr",
                                         "fastflow_*", "efficientad_*", "patchnn_*", "patchcore_*", "ddpm_*")

    @property
    def image_size(self) -> int:
        return image_size_option(self.options)

    @property
    def max_pixels(self) -> int:
        """Images above this many pixels are refused before decoding (option ``max_pixels``)."""
        value = self.options.get("max_pixels", DEFAULT_MAX_PIXELS)
        if not isinstance(value, int) or value < 1:
            raise ArproError(f"max_pixels must be a positive integer, not {value!r}")
        return value

    @property
    def tiled(self) -> bool:
        """Option ``tiled``: repair a user's file at full resolution, the DDPM crop by crop (``arpro_vision.tiles``)."""
        value = self.options.get("tiled", False)
        if not isinstance(value, bool):
            raise ArproError(f"tiled must be true or false, not {value!r}")
        return value

    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def grayscale(self) -> bool:
        """Whether every normal training picture is gray (its three channels equal): a repairer of
        such a set needs one channel, and then no colour can appear in a repair."""
        x = self.train().x
        return bool(len(x) > 0 and (x[:, 1:] == x[:, :1]).all())

    def detail_map(self, x: torch.Tensor) -> torch.Tensor:
        """High-frequency energy: the squared Laplacian of the gray level (edges replicated), per pixel,
        repeated over the channels. A blurred in-fill has little of it; a crack, much more than normal."""
        gray = x.float().mean(1, keepdim=True)
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        laplacian = torch.nn.functional.conv2d(torch.nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate"), kernel)
        return laplacian.pow(2).expand_as(x)

    def read_input(self, path: Path) -> arpro.InputBatch:
        """One PNG/JPEG of any size and mode, letterboxed into the model's square (with ``tiled``:
        kept at full resolution); its original pixels ride along in ``meta["images"]`` for
        :meth:`write_repairs`; ``valid`` marks the picture in the square (omega stays off the padding)."""
        if self.tiled:  # the full-resolution picture; the models are wrapped by models_for
            rgb, info = open_image(Path(path), self.max_pixels)
            if min(info.size) < self.image_size:
                raise ArproError(f"tiled repair needs an image at least {self.image_size} px on each side (the DDPM's "
                                 f"crops), not {info.size[0]}x{info.size[1]}; leave tiled off for it")
            x = to_tensor(rgb)  # valid: where the picture lies in the tiled detector's letterboxed square
            valid = Letterbox.fit(info.size, self.image_size).valid().unsqueeze(0)
        else:
            x, info = read_image(Path(path), self.image_size, self.max_pixels)
            valid = info.box.valid().unsqueeze(0)
        return arpro.InputBatch(x.unsqueeze(0), [Path(path).stem], {"images": [info]}, valid)

    def models_for(self, batch: arpro.InputBatch, detector: arpro.Detector,
                   repairer: arpro.Repairer) -> tuple[arpro.Detector, arpro.Repairer]:
        """With ``tiled``, a user's full-resolution file is scored and repaired through the
        wrappers of ``arpro_vision.tiles``; otherwise the models work on the letterboxed square."""
        infos = (batch.meta or {}).get("images")
        if not self.tiled or not infos:
            return detector, repairer
        from arpro_vision.tiles import TiledDetector, TiledRepairer

        size = infos[0].size
        return TiledDetector(detector, size), TiledRepairer(repairer, size)

    def write_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        """Per input: ``<id>_repair.png`` (guided), each other arm's repair and ``<id>_omega.png``,
        at the input's size and mode.

        A user's file is composited by omega: an in-filling arm's repair enters the original
        only inside the written omega mask, so every other pixel is the input's own, byte for
        byte (the core returns omega_bar as x_bad, so P1–P4 judge what is written). The
        baseline regenerates everything, and is written whole."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        infos: list[ImageInfo | None] = list((batch.meta or {}).get("images", []))
        infos += [None] * (len(result) - len(infos))
        ids = result.ids or [str(i) for i in range(len(result))]
        last = list(result.arms)[-1] if result.arms else None
        written: list[Path] = []
        for i, identifier in enumerate(ids):
            stem = safe_name(identifier)
            info = infos[i]
            omega = result.omega_input[i].amax(0)
            for arm_name, arm in result.arms.items():
                suffix = "repair" if arm_name == last else f"repair_{arm_name}"
                region = torch.ones_like(omega) if arm_name == "baseline" else omega
                written.append(save_image(arm.x_fix[i], out_dir / f"{stem}_{suffix}.png", info, region))
            written.append(save_mask(omega, out_dir / f"{stem}_omega.png", info))
        return written

    def draw_repairs(self, result: arpro.RepairResult, out_dir: Path, batch: arpro.InputBatch) -> list[Path]:
        """``repair.png`` for the batch (``arpro_vision.figure``), with the ground truth in ``meta["truth"]``."""
        from arpro_vision.figure import repair_figure

        meta = batch.meta or {}
        return [repair_figure(result, Path(out_dir) / "repair.png", meta.get("images", []), meta.get("truth"))]

