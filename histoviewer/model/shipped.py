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
