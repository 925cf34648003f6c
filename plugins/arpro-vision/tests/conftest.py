"""The vision plugin's shared fixtures: folders of noise pictures and anomalib's own checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ["ARPRO_OFFLINE"] = "1"  # the backbone resolver never tries the model hub in tests


def write_folder_dataset(root: Path, size: int = 32) -> Path:
    """A tiny anomalib ``Folder`` layout of noise PNGs: good/ (train), good_test/, bad/ (test)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub, count in (("good", 2), ("good_test", 1), ("bad", 1)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / sub / f"{sub}_{i}.png")
    return root


@pytest.fixture(scope="session")
def anomalib_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``model.ckpt`` of anomalib's Fastflow (64 px, random resnet18) and EfficientAd (256 px, the
    smallest its autoencoder takes), each trained by anomalib's own ``Engine.fit`` for two steps on
    CPU, with nothing downloaded: EfficientAd's teacher file is pre-placed where anomalib looks
    (``$XDG_CACHE_HOME/anomalib/pre_trained/...``, a random teacher here) and its ImageNet folder
    is one noise image."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import EfficientAd, Fastflow
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    root = tmp_path_factory.mktemp("anomalib")
    data = write_folder_dataset(root / "data")
    teachers = root / "cache" / "anomalib" / "pre_trained" / "efficientad_pretrained_weights"
    teachers.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(EfficientAdModel(teacher_out_channels=16).teacher.state_dict(), teachers / "pretrained_teacher_small.pth")
    imagenet = write_folder_dataset(root / "imagenette", size=16)
    fastflow = Fastflow(backbone="resnet18", pre_trained=False, flow_steps=2,
                        pre_processor=Fastflow.configure_pre_processor((64, 64)), evaluator=False, visualizer=False)
    efficientad = EfficientAd(imagenet_dir=imagenet, teacher_out_channels=16, pre_processor=EfficientAd.configure_pre_processor((256, 256)),
                              evaluator=False, visualizer=False)
    paths = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name, model, batch in (("fastflow", fastflow, 2), ("efficientad", efficientad, 1)):
            datamodule = Folder(name="toy", root=data, normal_dir="good", normal_test_dir="good_test", abnormal_dir="bad",
                                val_split_mode="same_as_test", train_batch_size=batch, eval_batch_size=2, num_workers=0, seed=0)
            engine = Engine(max_steps=2, accelerator="cpu", devices=1, default_root_dir=root / name,
                            enable_progress_bar=False, enable_model_summary=False)
            engine.fit(model, datamodule=datamodule)
            paths[name] = Path(engine.trainer.checkpoint_callback.best_model_path)
    return paths
