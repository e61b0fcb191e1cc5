"""What the screenshot tools share: a window to photograph, and running the event loop
for a while (Xvfb)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QApplication


def wait(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Run the event loop until ``condition()`` holds (True) or ``timeout_s`` passed."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.005)
    return False


def open_window(window_size: str, prefix: str):
    """A MainWindow with its own settings and map cache in a new temporary folder,
    ``window_size`` ("1366x768") at the screen's top left, shown; the application
    must exist. Returns (window, the size as "WxH", the folder)."""
    from PySide6.QtCore import QSettings

    from histoviewer.gui.mainwindow import MainWindow
    from histoviewer.mapping.cache import MapCache

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, MapCache(folder / "cache"), restore_model=False)
    width, height = (int(v) for v in window_size.lower().split("x"))
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    return window, f"{width}x{height}", folder
