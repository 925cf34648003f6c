"""Checkpoints shipped with this plugin, trained by scripts/train_bundled.py (see docs/reference/plugins.md)."""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"

# The embedded dataset options the bundled checkpoints were trained with: a checkpoint is
# offered only for a dataset with these window settings.
BUNDLED_FOR = {"name": "process", "window": 64}


def bundled(model_name: str, dataset) -> Path | None:
    """The shipped checkpoint of ``model_name`` for ``dataset``, if it is the embedded default."""
    if getattr(dataset, "name", None) != BUNDLED_FOR["name"] or getattr(dataset, "window", None) != BUNDLED_FOR["window"]:
        return None
    options = getattr(dataset, "options", {}) or {}
    if "fit_steps" in options or int(options.get("seed", 0)) != 0:
        return None  # a test or a different simulation asks for its own models
    path = CHECKPOINTS / f"{model_name}-process.safetensors"
    return path if path.is_file() else None


class ShippedModel:
    """Mixin for this plugin's models: sizing for a dataset and the bundled-checkpoint lookup.

    A dataset option ``fit_steps`` (used by the tests) shortens training to that many steps.
    """

    @classmethod
    def for_dataset(cls, dataset, **overrides):
        options = getattr(dataset, "options", {}) or {}
        if "fit_steps" in options:
            overrides.setdefault("train_steps", int(options["fit_steps"]))
        return super().for_dataset(dataset, **overrides)

    @classmethod
    def bundled_checkpoint(cls, dataset) -> Path | None:
        return bundled(cls.name, dataset)
