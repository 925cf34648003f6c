"""Checkpoints shipped with this plugin: textures:brick at 64x64, trained by the commands in docs/vision.md."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
BUNDLED_CATEGORY = "brick"
BUNDLED_SIZE = 64


def bundled(model_name: str, dataset) -> Path | None:
    """The shipped checkpoint of ``model_name`` for ``dataset``, if it is the embedded brick default at 64x64."""
    if getattr(dataset, "name", None) != "textures":
        return None
    if (dataset.category or BUNDLED_CATEGORY) != BUNDLED_CATEGORY:
        return None
    if tuple(dataset.sample_shape()) != (3, BUNDLED_SIZE, BUNDLED_SIZE):
        return None
    path = CHECKPOINTS / f"{model_name}-textures-brick-64.safetensors"
    return path if path.is_file() else None
