"""Checkpoints shipped with this plugin, trained by the commands in docs/reference/plugins.md."""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def bundled(model_name: str, dataset) -> Path | None:
    """The shipped checkpoint of ``model_name`` for ``dataset``, if it is the embedded default."""
    if dataset.name != "breast-cancer":
        return None
    path = CHECKPOINTS / f"{model_name}-breast-cancer.safetensors"
    return path if path.is_file() else None
