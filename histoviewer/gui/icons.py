"""Icons for actions and windows, drawn as SVG files under resources/icons/.

An icon is asked for by name (``icon("zoom-in")``); a name without a file is a
programming error and raises at once, so a typo never ships as a blank button.
"""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon

from histoviewer.resources import icon_path

APP_ICON = "histoviewer"


@cache
def icon(name: str) -> QIcon:
    """The icon ``resources/icons/<name>.svg``.

    Raises FileNotFoundError for an unknown name and ValueError when the file
    exists but Qt cannot render it (a broken SVG or a missing SVG plug-in).
    """
    path = icon_path(name)
    result = QIcon(str(path))
    if result.isNull() or result.pixmap(16, 16).isNull():
        raise ValueError(f"icon {path} could not be rendered (broken SVG or no Qt SVG plug-in)")
    return result


def app_icon() -> QIcon:
    """The application's window icon."""
    return icon(APP_ICON)
