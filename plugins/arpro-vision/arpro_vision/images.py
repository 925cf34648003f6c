"""Image files <-> model space: ``[3, H, W]`` float tensors in [-1, 1] (the DDPM's range).

Any PNG or JPEG is accepted: grayscale is repeated over the three channels, an alpha
channel is set aside (and put back, resized, when the repair is written), palette images
are converted; the picture is resized to the model's size with an antialiased bicubic
filter, and the repair is resized back to the input's own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from arpro import ArproError

DEFAULT_MAX_PIXELS = 40_000_000  # images above this are refused unless max_pixels is raised


@dataclass
class ImageInfo:
    """What is needed to write a repair back in the user's space."""

    size: tuple[int, int]  # (width, height) of the original file
    grayscale: bool
    alpha: np.ndarray | None  # [h, w] uint8 alpha channel of the original, if any
    source: str


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read ``path`` as an RGB uint8 array ``[h, w, 3]``; any failure is one ArproError line.

    The size is read from the header first: a small file can decode to a huge image, and
    one above ``max_pixels`` is refused before it is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ArproError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ArproError(f"image {path} is {image.width}x{image.height} = {image.width * image.height:,} pixels, "
                                 f"above the limit of {max_pixels:,}; raise it with --option max_pixels=N")
            image.load()
            image = image.copy()
    except ArproError:
        raise
    except UnidentifiedImageError:
        raise ArproError(f"{path} is not an image file PIL can read (expected PNG or JPEG)") from None
    except Exception as error:  # truncated or corrupt data
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArproError(f"cannot read image {path}: {message} (truncated or corrupt file?)") from None
    if image.width < 1 or image.height < 1:
        raise ArproError(f"image {path} is empty ({image.width}x{image.height})")
    alpha = None
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.uint8).copy()
    grayscale = image.mode in ("L", "LA", "1", "I", "I;16", "F")
    if image.mode in ("I", "I;16", "F"):
        values = np.asarray(image, dtype=np.float64)
        span = values.max() - values.min()
        values = (values - values.min()) / (span if span > 0 else 1.0) * 255.0
        image = Image.fromarray(values.astype(np.uint8), mode="L")
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return rgb, ImageInfo((image.width, image.height), grayscale, alpha, str(path))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``[h, w, 3]`` uint8 array to ``size`` = (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.Resampling.BICUBIC, reducing_gap=None))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[h, w, 3]`` uint8 -> ``[3, h, w]`` float in [-1, 1]."""
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3, h, w]`` float in [-1, 1] -> ``[h, w, 3]`` uint8 (clipped)."""
    values = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return values.permute(1, 2, 0).to(torch.uint8).numpy()


def read_image(path: Path, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, ImageInfo]:
    """A user's image as a ``[3, S, S]`` tensor in [-1, 1], and how to write it back."""
    rgb, info = open_image(path, max_pixels)
    return to_tensor(resize_rgb(rgb, (image_size, image_size))), info


def save_image(x: torch.Tensor, path: Path, info: ImageInfo | None = None) -> Path:
    """Write ``x`` ``[3, S, S]`` as PNG, at the original size and mode when ``info`` is given."""
    rgb = to_uint8(x)
    if info is not None:
        rgb = resize_rgb(rgb, info.size)
    image = Image.fromarray(rgb, mode="RGB")
    if info is not None and info.grayscale:
        image = image.convert("L")
    if info is not None and info.alpha is not None:
        image = image.convert("RGBA") if not info.grayscale else image.convert("LA")
        image.putalpha(Image.fromarray(info.alpha, mode="L"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def save_mask(mask: torch.Tensor, path: Path, size: tuple[int, int] | None = None) -> Path:
    """Write a ``[H, W]`` 0/1 mask as a black-and-white PNG (nearest-neighbour resize to ``size``)."""
    image = Image.fromarray((mask.detach().float().numpy() > 0.5).astype(np.uint8) * 255, mode="L")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def safe_name(identifier: str) -> str:
    """A file-name-safe version of a sample id (``brick/test/hole_003`` -> ``brick_test_hole_003``)."""
    keep = [c if c.isalnum() or c in "-_." else "_" for c in identifier]
    return "".join(keep).strip("._") or "input"
