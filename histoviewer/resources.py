"""Find the files under resources/ in a source checkout, a wheel or a frozen app."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

_MARKER = "classes.json"


@cache
def resources_dir() -> Path:
    """The folder holding classes.json, icons/ and models/.

    Looked for, in order: $HISTOVIEWER_RESOURCES, the PyInstaller bundle,
    ``histoviewer/resources`` inside an installed wheel, and ``resources/``
    beside the package in a source checkout.
    """
    package = Path(__file__).resolve().parent
    candidates = []
    if env := os.environ.get("HISTOVIEWER_RESOURCES"):
        candidates.append(Path(env))
    if bundle := getattr(sys, "_MEIPASS", None):
        candidates.append(Path(bundle) / "resources")
    candidates += [package / "resources", package.parent / "resources"]
    for folder in candidates:
        if (folder / _MARKER).is_file():
            return folder
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"HistoViewer resources not found (looked in {searched})")


def resource_path(*parts: str) -> Path:
    """Path of a file under resources/; raises FileNotFoundError if missing."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"missing resource: {'/'.join(parts)} (in {resources_dir()})")
    return path


def icon_path(name: str) -> Path:
    """An SVG icon by name, e.g. ``icon_path("open")`` -> resources/icons/open.svg."""
    return resource_path("icons", f"{name}.svg")
