"""Checkpoints shipped with this plugin, trained by the commands in docs/reference/plugins.md."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"  # where scripts/train_bundled.py writes; Model.shipped reads here


def bundled(cls, dataset) -> Path | None:
    """The shipped checkpoint of model class ``cls`` for ``dataset``, if it is the embedded default."""
    return cls.shipped(f"{cls.name}-breast-cancer.safetensors", dataset) if dataset.name == "breast-cancer" else None
