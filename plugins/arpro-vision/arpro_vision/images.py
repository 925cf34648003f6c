"""Image files <-> model space: ``[3, S, S]`` float tensors in [-1, 1] (the DDPM's range).

Reading (any PNG or JPEG): grayscale is repeated over the three channels (the detectors'
backbones take three), palette images are converted to RGB(A), 16-bit grayscale is scaled
to 8 bits by its own min..max. The picture keeps its aspect ratio: its longer side is
resized to S (antialiased bicubic) and the shorter one is padded to S by mirroring the
picture's edge (:class:`Letterbox`), so nothing is squashed and the detector sees no
artificial border.

Writing (:func:`composite`): the repair is not a resized copy of the model's square. The
original pixels are kept (:class:`ImageInfo`), and only the pixels of omega, mapped to
full size by nearest neighbour, take the upsampled repair, with a feather one model pixel
wide that lies *inside* the mapped omega. Every pixel outside it is the input's own, byte
for byte, in the input's own size and mode; the padding is cropped away first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from arpro import ArproError, Decomposition

DEFAULT_MAX_PIXELS = 40_000_000  # images above this are refused unless max_pixels is raised
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of PIL's RGB -> L conversion
MIRRORED_SHARE = 0.5  # of a square's padding that must still mirror its picture for it to be read as a letterbox


@dataclass(frozen=True)
class Letterbox:
    """Where a picture sits in the model's ``side`` x ``side`` square: resized to
    ``width`` x ``height`` at (``left``, ``top``); the rest is its mirrored edge."""

    side: int
    left: int
    top: int
    width: int
    height: int

    @classmethod
    def fit(cls, size: tuple[int, int], side: int) -> Letterbox:
        """The aspect-preserving box of a (width, height) picture in the square."""
        scale = side / max(size)
        width, height = (min(side, max(1, round(n * scale))) for n in size)
        return cls(side, (side - width) // 2, (side - height) // 2, width, height)

    def pad(self, array: np.ndarray) -> np.ndarray:
        """Mirror-pad a ``[height, width, ...]`` array to ``[side, side, ...]``."""
        widths = [(self.top, self.side - self.height - self.top), (self.left, self.side - self.width - self.left)]
        return np.pad(array, widths + [(0, 0)] * (array.ndim - 2), mode="symmetric")

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The picture's part of a ``[side, side, ...]`` array."""
        return array[self.top : self.top + self.height, self.left : self.left + self.width]

    def valid(self) -> torch.Tensor:
        """``[side, side]`` float, 1 on the picture and 0 on the padding: ``Split.valid`` and
        ``InputBatch.valid``, which keep omega off the mirrored edge."""
        mask = torch.zeros(self.side, self.side)
        mask[self.top : self.top + self.height, self.left : self.left + self.width] = 1.0
        return mask

    def sources(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row and each column of the square, the row (column) of the picture whose mirrored
        copy it is (its own on the picture): :meth:`pad`'s index maps."""
        rows = np.pad(np.arange(self.height), (self.top, self.side - self.height - self.top), mode="symmetric")
        columns = np.pad(np.arange(self.width), (self.left, self.side - self.width - self.left), mode="symmetric")
        return torch.from_numpy(rows + self.top), torch.from_numpy(columns + self.left)

    def fold(self, values: torch.Tensor) -> torch.Tensor:
        """``[..., side, side]`` per-pixel values with each padding pixel's value added to the picture
        pixel it mirrors (0 left on the padding): the sum is kept, and what the padding's copy of the
        picture contributes is put on the picture's own pixels (differentiable)."""
        rows, columns = (i.to(values.device) for i in self.sources())
        folded = values.new_zeros(values.shape).index_add_(-1, columns, values)
        return values.new_zeros(values.shape).index_add_(-2, rows, folded)

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., side, side]`` with the padding made again from the picture (the picture's own pixels
        kept): what :meth:`pad` makes of the picture that ``x`` now holds (differentiable)."""
        rows, columns = (i.to(x.device) for i in self.sources())
        return x[..., rows, :][..., columns]

    @classmethod
    def of_mirrored(cls, x: torch.Tensor) -> Letterbox | None:
        """The box whose mirrored padding the ``[C, side, side]`` square ``x`` is (as
        :func:`letterbox_rgb` pads a picture that is not square), else None: a square picture, or a
        square that is not a letterbox (noise). A repair that changed the picture next to its edge
        leaves the padding a stale copy there: a box is still found where at least half of the
        padding's pixels equal the picture pixel they mirror (MIRRORED_SHARE). Of several, the
        narrowest: padding wider than the picture mirrors it again and again, so wider boxes fit
        too (and a picture whose columns are all alike fits a box one column wide)."""
        side = x.shape[-1]
        if x.dim() != 3 or x.shape[-2] != side:
            return None
        repeats = {"tall": (x[..., :, :-1] == x[..., :, 1:]).float().mean((0, 1)).tolist(),  # column j as column j + 1
                   "wide": (x[..., :-1, :] == x[..., 1:, :]).float().mean((0, 2)).tolist()}
        for shape, repeat in repeats.items():
            for extent in range(1, side):  # symmetric padding repeats the picture's edge column (row)
                start, end = (side - extent) // 2, (side - extent) // 2 + extent
                if (start and repeat[start - 1] < MIRRORED_SHARE) or (end < side and repeat[end - 1] < MIRRORED_SHARE):
                    continue
                box = cls(side, start, 0, extent, side) if shape == "tall" else cls(side, 0, start, side, extent)
                padding = box.valid() == 0
                if (box.mirror(x) == x).all(0)[padding].float().mean() >= MIRRORED_SHARE:
                    return box
        return None


def on_the_picture(decompose: Callable[[torch.Tensor], Decomposition], x: torch.Tensor) -> Decomposition:
    """``decompose(x)`` scored on each letterboxed square's picture alone: the padding made again from
    the picture (:meth:`Letterbox.mirror`) before it is scored, and alpha on the padding folded onto the
    picture pixels it copies (:meth:`Letterbox.fold`, the sum kept). A defect at the picture's edge is
    mirrored into the padding, so without the fold omega (which stays on the picture) misses the
    defect's copy, and without the fresh padding a repair, which changes the picture only, goes on
    scoring the stale copy. Squares that are not letterboxes are decomposed as they are."""
    boxes = [Letterbox.of_mirrored(picture) for picture in x.detach()]
    if all(box is None for box in boxes):
        return decompose(x)
    x = torch.stack([picture if box is None else box.mirror(picture) for picture, box in zip(x, boxes, strict=True)])
    found = decompose(x)
    alpha = torch.stack([a if box is None else box.fold(a) for a, box in zip(found.alpha, boxes, strict=True)])
    return Decomposition(alpha=alpha, beta=found.beta)


@dataclass
class ImageInfo:
    """What is needed to write a repair back in the user's space: the original pixels."""

    size: tuple[int, int]  # (width, height) of the original file
    mode: str  # PIL mode of the written repair: L, LA, RGB, RGBA or I;16
    pixels: np.ndarray  # the original's pixels in that mode, [h, w] or [h, w, C]
    box: Letterbox  # where the picture sits in the repaired tensor (the whole of it at full resolution)
    source: str
    value_range: tuple[float, float] = (0.0, 255.0)  # original values that model values 0 and 255 stand for

    @property
    def grayscale(self) -> bool:
        return self.mode in ("L", "LA", "I;16")


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read ``path`` as an RGB uint8 array ``[h, w, 3]`` and its original pixels; any failure is
    one ArproError line. The size is read from the header first: a small file can decode to a
    huge image, and one above ``max_pixels`` is refused before it is decoded."""
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
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    elif image.mode == "1":
        image = image.convert("L")
    value_range = (0.0, 255.0)
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit (or float) grayscale
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        whole = image.mode != "F" and low >= 0 and high <= 65535
        mode, pixels = ("I;16", values.astype(np.uint16)) if whole else ("L", None)
        value_range = (low, high if high > low else low + 1.0) if whole else value_range
        image = Image.fromarray(((values - low) / max(high - low, 1e-12) * 255.0).round().astype(np.uint8), mode="L")
        pixels = np.asarray(image).copy() if pixels is None else pixels
    else:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        mode, pixels = image.mode, np.asarray(image).copy()
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    size = (image.width, image.height)
    return rgb, ImageInfo(size, mode, pixels, Letterbox(max(size), 0, 0, *size), str(path), value_range)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``[h, w, 3]`` uint8 array to ``size`` = (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.Resampling.BICUBIC, reducing_gap=None))


def letterbox_rgb(rgb: np.ndarray, side: int) -> tuple[np.ndarray, Letterbox]:
    """An ``[h, w, 3]`` picture in a ``side`` square, aspect kept, the rest mirrored."""
    box = Letterbox.fit((rgb.shape[1], rgb.shape[0]), side)
    return box.pad(resize_rgb(rgb, (box.width, box.height))), box


def letterbox_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """A 0/1 ``[h, w]`` mask placed like its image by :func:`letterbox_rgb`: area-resized
    (a pixel is anomalous when at least half of it was) and mirrored into the padding,
    where the image's edge, defects included, is mirrored too."""
    box = Letterbox.fit((mask.shape[1], mask.shape[0]), side)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    shrinking = box.height < mask.shape[0] or box.width < mask.shape[1]
    t = torch.nn.functional.interpolate(t, size=(box.height, box.width), mode="area" if shrinking else "nearest")
    return box.pad((t[0, 0].numpy() >= 0.5).astype(np.float32))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[h, w, 3]`` uint8 -> ``[3, h, w]`` float in [-1, 1]."""
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3, h, w]`` float in [-1, 1] -> ``[h, w, 3]`` uint8 (clipped)."""
    values = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return values.permute(1, 2, 0).to(torch.uint8).numpy()


def read_image(path: Path, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, ImageInfo]:
    """A user's image as a ``[3, S, S]`` tensor in [-1, 1] (letterboxed), and how to write it back."""
    rgb, info = open_image(path, max_pixels)
    square, info.box = letterbox_rgb(rgb, image_size)
    return to_tensor(square), info


def full_size_mask(mask: torch.Tensor, info: ImageInfo) -> np.ndarray:
    """A ``[S, S]`` model-space 0/1 mask as a bool ``[h, w]`` mask of the original: padding
    cropped, each model pixel mapped by nearest neighbour to the original pixels it covers."""
    inside = info.box.crop(mask.detach().float().numpy() > 0.5).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(inside)[None, None], size=info.size[::-1], mode="nearest-exact")
    return t[0, 0].numpy() > 0.5


def feather(region: np.ndarray, width: float) -> np.ndarray:
    """Blend weights ``[h, w]`` in [0, 1]: 0 outside ``region``, rising linearly over ``width``
    pixels inward from its boundary (the image's border is not a boundary), 1 beyond."""
    from scipy.ndimage import distance_transform_edt

    if region.all() or width <= 1:
        return region.astype(np.float32)
    distance = distance_transform_edt(np.pad(region, 1, mode="edge"))[1:-1, 1:-1]
    return np.clip(distance / width, 0.0, 1.0).astype(np.float32) * region


def composite(x_fix: torch.Tensor, region: torch.Tensor, info: ImageInfo) -> Image.Image:
    """The repair ``x_fix`` ``[3, S, S]`` put into the original inside ``region`` ``[S, S]``
    (the model pixels it may have changed), at the original's size and mode. Pixels outside
    the mapped region keep the original's values exactly; inside, the bicubically upsampled
    repair is blended in with a :func:`feather` one model pixel wide."""
    box = info.box
    inside = full_size_mask(region, info)
    values = torch.from_numpy(box.crop(((x_fix.detach().float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()))
    upsampled = torch.nn.functional.interpolate(values.permute(2, 0, 1)[None].contiguous(), size=info.size[::-1],
                                                mode="bicubic", antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
    repair = upsampled @ np.array(LUMA, np.float32)[:, None] if info.grayscale else upsampled  # [h, w, 1] or [h, w, 3]
    low, high = info.value_range
    repair = low + np.clip(repair, 0, 255) / 255.0 * (high - low)
    pixels = info.pixels.copy()
    colour = pixels[..., None] if pixels.ndim == 2 else pixels[..., : repair.shape[-1]]  # a view: alpha untouched
    weight = feather(inside, width=info.size[0] / box.width)[..., None]
    blended = np.rint(weight * repair + (1 - weight) * colour).astype(pixels.dtype)
    colour[inside] = blended[inside]
    return Image.fromarray(pixels)  # the mode follows from dtype and channels: info.mode


def save_image(x: torch.Tensor, path: Path, info: ImageInfo | None = None, region: torch.Tensor | None = None) -> Path:
    """Write ``x`` ``[3, S, S]`` as PNG: as it is, or, given ``info``, composited into the
    original through ``region`` (default: every model pixel) at the original's size and mode."""
    if info is None:
        image = Image.fromarray(to_uint8(x), mode="RGB")
    else:
        image = composite(x, torch.ones(x.shape[-2:]) if region is None else region, info)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def save_mask(mask: torch.Tensor, path: Path, info: ImageInfo | None = None) -> Path:
    """Write a ``[S, S]`` 0/1 mask as a black-and-white PNG, mapped to the original's size
    (:func:`full_size_mask`) when ``info`` is given."""
    values = full_size_mask(mask, info) if info is not None else mask.detach().float().numpy() > 0.5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8) * 255, mode="L").save(path, format="PNG")
    return path


def safe_name(identifier: str) -> str:
    """A file-name-safe version of a sample id (``brick/test/hole_003`` -> ``brick_test_hole_003``)."""
    keep = [c if c.isalnum() or c in "-_." else "_" for c in identifier]
    return "".join(keep).strip("._") or "input"
