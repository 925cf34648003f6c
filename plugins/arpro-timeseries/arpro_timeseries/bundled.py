"""Checkpoints shipped with this plugin, trained by scripts/train_bundled.py (see docs/reference/plugins.md)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"  # where the training script writes; Model.shipped reads here
# The embedded dataset options the bundled checkpoints were trained with: a checkpoint is
# offered only for a dataset with these window settings.
BUNDLED_FOR = {"name": "process", "window": 64}


class ShippedModel:
    """Mixin for this plugin's models: the bundled checkpoint of the embedded plant (simulation seed 0, window 64)."""

    @classmethod
    def bundled_checkpoint(cls, dataset) -> Path | None:
        if getattr(dataset, "name", None) != BUNDLED_FOR["name"] or getattr(dataset, "window", None) != BUNDLED_FOR["window"]:
            return None
        if int((getattr(dataset, "options", {}) or {}).get("seed", 0)) != 0:
            return None  # a different simulation asks for its own models
        return cls.shipped(f"{cls.name}-process.safetensors", dataset)
