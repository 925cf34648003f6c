"""Published anomaly-detection image datasets, read from ``--data-root`` in their own layouts.

The sample lists come from anomalib's own layout parsers (``make_mvtec_ad_dataset``,
``make_mpdd_dataset``, ``make_btech_dataset``, ``make_kolektor_dataset``,
``make_folder_dataset``); anomalib's data *modules* are not used, because they download a
missing dataset and need lightning's trainer. Nothing is downloaded: a missing or empty
folder is an ArproError that names the expected layout.

Images keep their aspect ratio: the longer side is resized to ``image_size`` (bicubic,
antialiased) and the shorter one mirror-padded to it (``images.Letterbox``); masks are placed
the same way, area-averaged (a pixel is anomalous when at least half of it was) and mirrored
into the padding like the image's edge, giving ``Split.masks`` ``[N, H, W]``; ``Split.valid``
``[N, H, W]`` marks each picture's own pixels, so that omega never lies on the padding.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import arpro
from arpro import ArproError
from arpro_vision.base import ImageDataset
from arpro_vision.images import letterbox_mask, letterbox_rgb, open_image, to_tensor


def load_mask(path: str | None, size: int, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask letterboxed like its image (of ``image_hw`` pixels, which the mask must have);
    no mask file means no anomalous pixel."""
    if not path or (isinstance(path, float) and np.isnan(path)):
        return np.zeros((size, size), np.float32)
    try:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except Exception as error:
        raise ArproError(f"cannot read mask {path}: {str(error).splitlines()[0]}") from None
    if image_hw is not None and mask.shape != tuple(image_hw):
        raise ArproError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels, but its image is "
                         f"{image_hw[1]}x{image_hw[0]}: a mask must cover its image pixel for pixel")
    return letterbox_mask(mask > 0.5, size)


def inside(path: Path, root: Path) -> Path:
    """``path``, refused when it (or a link on the way) leads outside ``root``: a dataset reads its own files only."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ArproError(f"{path} leads outside --data-root {root} (to {resolved}); arpro reads only files under the "
                         "data root: copy the file in, or point --data-root at a folder that holds it")
    return Path(path)


class FolderLayoutDataset(ImageDataset):
    """Shared logic: a sample table (image_path, mask_path, label_index, split) -> Splits.

    Option ``crops=N``: the training split is instead N ``image_size`` crops at the images' own
    resolution from each normal training image (positions from ``numpy.random.default_rng(i)``
    for image i): the data for a DDPM that repairs with ``tiled=true``. The test split is unchanged.
    """

    accepted_options = (*ImageDataset.accepted_options, "crops")
    reads_files = True  # pictures with a resolution of their own (a detector may ask for a larger image_size)

    layout = ""  # how the files are expected to be arranged, for error messages
    category_names: tuple[str, ...] = ()

    @property
    def _label(self) -> str:
        return f"{self.name}:{self.category}" if self.category else self.name

    def categories(self) -> list[str]:
        if self.root is not None and Path(self.root).is_dir():
            found = sorted(p.name for p in Path(self.root).iterdir() if p.is_dir() and not p.name.startswith("."))
            if self.category_names:
                found = [c for c in found if c in self.category_names] or found
            return found
        return list(self.category_names)

    def root_dir(self) -> Path:
        """``--data-root`` (checked: given, and a directory)."""
        if self.root is None:
            raise ArproError(f"dataset {self.name} needs --data-root DIR (layout: {self.layout})")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise ArproError(f"--data-root {root} is not a directory (dataset {self.name}, layout: {self.layout})")
        return root

    def folder(self) -> Path:
        """``root/category`` (checked)."""
        root = self.root_dir()
        if self.category is None:
            raise ArproError(
                f"dataset {self.name} needs a category: --dataset {self.name}:CATEGORY "
                f"(found: {', '.join(self.categories()) or 'none'})"
            )
        path = root / self.category
        if not path.is_dir():
            raise ArproError(
                f"{path} does not exist; categories under {root}: {', '.join(self.categories()) or 'none'}"
            )
        return path

    def samples(self) -> pd.DataFrame:
        raise NotImplementedError

    def masked_folder(self) -> Path:
        """``root/category`` of an MVTec-style layout, whose defect images must have ``ground_truth/DEFECT`` masks."""
        folder = self.folder()
        for linked in (p for p in folder.rglob("*") if p.is_symlink()):  # before anomalib follows it
            inside(linked, self.root_dir())
        defects = [p.name for p in (folder / "test").glob("*") if p.is_dir() and p.name != "good"]
        missing = [d for d in defects if not (folder / "ground_truth" / d).is_dir()]
        if missing:
            raise ArproError(f"{folder}/ground_truth/{missing[0]} is missing: this layout has a mask per defect image "
                             f"({self.layout}); for images without masks use --dataset folder")
        return folder

    def _samples_checked(self) -> pd.DataFrame:
        try:
            samples = self.samples()
        except ArproError:
            raise
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ArproError(f"cannot read dataset {self.name} from {self.root}: {message} (layout: {self.layout})") from None
        if len(samples) == 0:
            raise ArproError(f"dataset {self.name}: no images found under {self.root} (layout: {self.layout})")
        return samples

    def kind(self, row) -> str:
        """A sample's kind (evaluate's subsets cover every kind): its folder, good, crack, ..."""
        return Path(row.image_path).parent.name

    def _crops(self, rows: pd.DataFrame, count: int) -> arpro.Split:
        """``count`` native-resolution ``image_size`` crops of each image (the ``crops`` option)."""
        size, xs, ids = self.image_size, [], []
        for i, row in enumerate(rows.itertuples()):
            rgb, _ = open_image(inside(row.image_path, self.root_dir()), self.max_pixels)
            if min(rgb.shape[:2]) < size:
                raise ArproError(f"crops: {row.image_path} is {rgb.shape[1]}x{rgb.shape[0]}, smaller than image_size {size}")
            rng = np.random.default_rng(i)
            for k in range(count):
                y, x = (int(rng.integers(0, n - size + 1)) for n in rgb.shape[:2])
                xs.append(to_tensor(rgb[y : y + size, x : x + size]))
                ids.append(f"{Path(row.image_path).stem}/crop{k}")
        return arpro.Split(torch.stack(xs), torch.zeros(len(xs), dtype=torch.long), None, ids)

    def _load(self, rows: pd.DataFrame) -> arpro.Split:
        size = self.image_size
        xs, masks, ids, valid = [], [], [], []
        root = self.root_dir()
        for row in rows.itertuples():
            rgb, _ = open_image(inside(row.image_path, root), self.max_pixels)
            square, box = letterbox_rgb(rgb, size)
            xs.append(to_tensor(square))
            valid.append(box.valid())
            mask_path = getattr(row, "mask_path", None)
            if isinstance(mask_path, str) and mask_path:
                inside(mask_path, root)
            masks.append(load_mask(mask_path, size, rgb.shape[:2]))
            path = Path(row.image_path)
            ids.append(f"{path.parent.name}/{path.stem}")
        labels = torch.tensor([int(v) for v in rows.label_index], dtype=torch.long)
        x = torch.stack(xs) if xs else torch.zeros(0, 3, size, size)
        m = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, size, size)
        v = torch.stack(valid) if valid else torch.zeros(0, size, size)
        return arpro.Split(x, labels, m, ids, [self.kind(row) for row in rows.itertuples()], v)

    @cached_property
    def _splits(self) -> tuple[arpro.Split, arpro.Split]:
        with arpro.progress_phase(f"reading dataset {self._label}"):  # anomalib's parsers import for 15 s on a small CPU
            samples = self._samples_checked()
            train = samples[(samples.split == "train") & (samples.label_index == 0)]
            test = samples[samples.split == "test"]
            if len(train) == 0:
                raise ArproError(f"dataset {self.name}: no normal training images under {self.root} (layout: {self.layout})")
            return self._load(train), self._load(test)

    def train(self) -> arpro.Split:
        count = self.options.get("crops")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ArproError(f"crops must be a positive integer, not {count!r}")
            with arpro.progress_phase(f"reading dataset {self._label}: {count} crops per picture"):
                samples = self._samples_checked()
                return self._crops(samples[(samples.split == "train") & (samples.label_index == 0)], count)
        split = self._splits[0]
        return arpro.Split(split.x, split.labels, None, split.ids)

    def test(self) -> arpro.Split:
        return self._splits[1]


def _split_value(samples: pd.DataFrame) -> pd.DataFrame:
    samples = samples.copy()
    samples["split"] = [getattr(s, "value", s) for s in samples.split]
    samples["label_index"] = samples.label_index.astype(int)
    return samples


class MVTecAD(FolderLayoutDataset):
    """MVTec AD, read from --data-root in its published layout (category/train/good, test/*, ground_truth/*)."""

    name = "mvtec"
    layout = "ROOT/CATEGORY/{train/good,test/DEFECT,ground_truth/DEFECT}/*.png"
    category_names = (
        "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
        "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
    )  # fmt: skip

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

        return _split_value(make_mvtec_ad_dataset(self.masked_folder()))


class MPDD(FolderLayoutDataset):
    """MPDD (metal parts), read from --data-root in its published MVTec-style layout."""

    name = "mpdd"
    layout = "ROOT/CATEGORY/{train/good,test/DEFECT,ground_truth/DEFECT}/*.png"
    category_names = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.mpdd import make_mpdd_dataset

        return _split_value(make_mpdd_dataset(self.masked_folder()))


class BTech(FolderLayoutDataset):
    """BTech AD, read from --data-root in its published layout (01/train/ok, test/{ok,ko}, ground_truth/ko)."""

    name = "btech"
    layout = "ROOT/{01,02,03}/{train/ok,test/ok,test/ko,ground_truth/ko}/*"
    category_names = ("01", "02", "03")

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.btech import make_btech_dataset

        return _split_value(make_btech_dataset(self.folder()))


class VisA(FolderLayoutDataset):
    """VisA, read from --data-root: anomalib's prepared split (visa_pytorch/CATEGORY, MVTec-style) or the
    raw release (CATEGORY/Data/{Images,Masks} with split_csv/1cls.csv)."""

    name = "visa"
    layout = "ROOT/visa_pytorch/CATEGORY/{train/good,test/*,ground_truth/*} or ROOT/CATEGORY/Data + ROOT/split_csv/1cls.csv"
    category_names = (
        "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
        "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
    )  # fmt: skip

    def categories(self) -> list[str]:
        if self.root is not None and (Path(self.root) / "visa_pytorch").is_dir():
            return sorted(p.name for p in (Path(self.root) / "visa_pytorch").iterdir() if p.is_dir())
        return super().categories()

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

        if self.category is None:
            self.folder()  # raises the right message
        root = self.root_dir()
        prepared = root / "visa_pytorch" / self.category
        if prepared.is_dir():
            return _split_value(make_mvtec_ad_dataset(prepared, extensions=(".png", ".PNG", ".JPG", ".jpg")))
        folder = self.folder()
        if (folder / "train").is_dir():
            return _split_value(make_mvtec_ad_dataset(folder, extensions=(".png", ".PNG", ".JPG", ".jpg")))
        table = root / "split_csv" / "1cls.csv"
        if not table.is_file():
            raise ArproError(f"dataset visa: neither {prepared} nor {table} exists (layout: {self.layout})")
        frame = pd.read_csv(table)
        frame = frame[frame["object"] == self.category]
        masks = frame["mask"].fillna("") if "mask" in frame else ""
        return pd.DataFrame(
            {
                "image_path": [str(root / p) for p in frame["image"]],
                "mask_path": [str(root / m) if m else "" for m in masks],
                "label_index": (frame["label"] != "normal").astype(int).to_numpy(),
                "split": frame["split"].to_numpy(),
            }
        )


class Kolektor(FolderLayoutDataset):
    """KolektorSDD, read from --data-root (kosNN/PartN.jpg + PartN_label.bmp); 80 % of good parts train."""

    name = "kolektor"
    layout = "ROOT/kosNN/PartN.jpg with PartN_label.bmp"

    def categories(self) -> list[str]:
        return []

    def kind(self, row) -> str:
        return "defect" if row.label_index else "good"  # folders are parts, not defect kinds

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.kolektor import make_kolektor_dataset

        return _split_value(make_kolektor_dataset(self.root_dir(), train_split_ratio=0.8))


class Folder(FolderLayoutDataset):
    """Any folder of images: --data-root DIR with normal/ (train), abnormal/, masks/ and optional normal_test/.

    Options (sub-folder names under the root): ``normal_dir`` ("normal"), ``abnormal_dir``
    ("abnormal"), ``mask_dir`` ("masks", optional), ``normal_test_dir`` (optional; without
    it every fifth normal image, in name order, is held out for the test split).
    """

    name = "folder"
    accepted_options = (*FolderLayoutDataset.accepted_options, "normal_dir", "abnormal_dir", "mask_dir", "normal_test_dir")
    layout = "ROOT/{normal,abnormal,masks,normal_test}/*.{png,jpg}"

    def categories(self) -> list[str]:
        return []

    def samples(self) -> pd.DataFrame:
        from anomalib.data.datasets.image.folder import make_folder_dataset

        root = self.root_dir()
        opt = self.options

        def sub(key: str, default: str | None) -> str | None:
            name = opt.get(key, default)
            return name if name is not None and (root / name).is_dir() else None

        normal = sub("normal_dir", "normal")
        if normal is None:
            raise ArproError(f"dataset folder: {root / opt.get('normal_dir', 'normal')} does not exist (layout: {self.layout})")
        abnormal, masks, normal_test = sub("abnormal_dir", "abnormal"), sub("mask_dir", "masks"), sub("normal_test_dir", None)
        extensions = (".png", ".PNG", ".jpg", ".JPG", ".jpeg", ".JPEG", ".bmp")
        samples = make_folder_dataset(
            normal, root=root, abnormal_dir=abnormal, normal_test_dir=normal_test,
            mask_dir=masks if abnormal else None, extensions=extensions,
        )  # fmt: skip
        samples = _split_value(samples).reset_index(drop=True)
        if normal_test is None:  # hold out every fifth normal image for testing
            normal_rows = samples.index[samples.label_index == 0]
            samples.loc[normal_rows[4::5], "split"] = "test"
        return samples


IMAGE_DATASETS = (MVTecAD, VisA, MPDD, BTech, Kolektor, Folder)
