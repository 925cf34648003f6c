"""Checkpoints shipped with this plugin (textures:brick and surface at 64x64, trained by the
commands in docs/reference/plugins.md), and how the plugin's models are sized from a dataset."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"  # where scripts/train_bundled.py writes; Model.shipped reads here
BUNDLED_CATEGORY = "brick"
BUNDLED_SIZE = 64


def bundled(cls, dataset) -> Path | None:
    """The shipped checkpoint of model class ``cls`` for ``dataset``: textures:brick, or surface with its
    default 200 training pictures (whatever the test ``seed``), at 64x64."""
    if tuple(dataset.sample_shape()) != (3, BUNDLED_SIZE, BUNDLED_SIZE):
        return None
    name = getattr(dataset, "name", None)
    if name == "textures" and (dataset.category or BUNDLED_CATEGORY) == BUNDLED_CATEGORY:
        return cls.shipped(f"{cls.name}-textures-brick-64.safetensors", dataset)
    if name == "surface" and dataset.options.get("n_train", 200) == 200:
        return cls.shipped(f"{cls.name}-surface-64.safetensors", dataset)
    return None


GENERIC_MODEL_OPTIONS = ("train_steps", "batch_size", "lr")


def model_options(dataset, prefix: str) -> dict:
    """Constructor overrides from dataset options: ``train_steps``, ``batch_size`` and ``lr``
    apply to every model; ``<prefix>NAME`` (e.g. ``fastflow_flow_steps``) to one model."""
    options = getattr(dataset, "options", {}) or {}
    out = {k: options[k] for k in GENERIC_MODEL_OPTIONS if k in options}
    out.update({k[len(prefix) :]: v for k, v in options.items() if k.startswith(prefix)})
    return out


class ShippedModel:
    """Mixin for this plugin's models: sized for a dataset's images, with ``<name>_*`` dataset
    options (e.g. ``fastflow_flow_steps``, ``ddpm_block_out_channels``) overriding the defaults,
    and the bundled-checkpoint lookup."""

    @classmethod
    def for_dataset(cls, dataset, **overrides):
        options = {**model_options(dataset, f"{cls.name}_"), **overrides}
        return cls(input_shape=list(dataset.sample_shape()), **options)

    @classmethod
    def bundled_checkpoint(cls, dataset) -> Path | None:
        """None where the dataset's options set this model's own (``<name>_*``, ``train_steps``, ...): the
        shipped model was not built with them, so it is trained with them instead of silently kept."""
        return None if model_options(dataset, f"{cls.name}_") else bundled(cls, dataset)
