"""The models that ship with HistoViewer, under resources/models/<name>/ (no torch needed)."""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = "model.safetensors"


def find_shipped_models() -> list[Path]:
    """Folders under resources/models that hold a ``model.safetensors``, sorted by name."""
    from histoviewer.resources import resources_dir

    try:
        root = resources_dir() / "models"
    except FileNotFoundError:
        return []
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MODEL_FILE).is_file())


def default_model() -> Path:
    """The model used when none is named: the first one shipped with the app.

    Raises :class:`~histoviewer.errors.ModelError` with what to do when none ships.
    """
    from histoviewer.errors import ModelError

    shipped = find_shipped_models()
    if not shipped:
        raise ModelError(
            "no model given and none is shipped with this installation: "
            "pass --model FILE (a model trained with 'histoviewer train')"
        )
    return shipped[0]
