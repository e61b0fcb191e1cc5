"""Starting the desktop app: ``histoviewer``, ``histoviewer SLIDE``, ``histoviewer gui SLIDE``.

:func:`main` sets up the QApplication (names for QSettings, window icon), installs
an exception hook that shows a dialog instead of crashing, opens the main window
and runs the event loop. ``HISTOVIEWER_AUTOQUIT_MS=N`` closes the window after N
milliseconds, for smoke tests of installed and frozen builds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from types import TracebackType

from PySide6.QtCore import Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from histoviewer.gui.settings import APPLICATION, ORGANIZATION

log = logging.getLogger(__name__)

AUTOQUIT_ENV = "HISTOVIEWER_AUTOQUIT_MS"
_showing_error = False


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication, created once, with the names QSettings files go under."""
    from histoviewer.gui.icons import app_icon

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "histoviewer", *(argv or [])])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    # Matches packaging/linux/histoviewer.desktop: Wayland shells find the menu entry and
    # icon of a window by this name.
    app.setDesktopFileName("histoviewer")
    app.setWindowIcon(app_icon())
    return app


def show_exception(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
    parent: QWidget | None = None,
) -> QMessageBox | None:
    """Log an uncaught exception and tell the user in a non-blocking dialog.

    Returns the dialog (None off the GUI thread or while another is showing, so
    a burst of errors cannot pile up a stack of boxes).
    """
    global _showing_error
    log.error("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread() or _showing_error:
        return None
    from histoviewer.gui.workers import describe_error

    failure = describe_error(exc, "finish that")
    parent = parent or app.activeWindow()
    box = QMessageBox(
        QMessageBox.Icon.Critical,
        failure.title,
        failure.message,
        QMessageBox.StandardButton.Ok,
        parent,
    )
    box.setDetailedText("".join(traceback.format_exception(exc_type, exc, tb)))
    box.setModal(True)

    def closed() -> None:
        global _showing_error
        _showing_error = False

    box.finished.connect(closed)
    _showing_error = True
    box.open()
    return box


def install_excepthook() -> None:
    """Route uncaught exceptions (GUI thread and other threads) to :func:`show_exception`."""

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        show_exception(exc_type, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        log.error(
            "uncaught exception in thread %s:\n%s",
            args.thread.name if args.thread else "?",
            "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)),
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="histoviewer gui", description="Open the HistoViewer window."
    )
    parser.add_argument("slide", nargs="?", help="a slide to open")
    parser.add_argument("--model", help="a model file or folder to load")
    return parser.parse_args(list(argv))


def display_problem(
    env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> str | None:
    """Why no window can be shown here, or None.

    On Linux without X11 or Wayland, Qt aborts the process with a multi-line message;
    saying it in one line, with what to do instead, is kinder.
    """
    env = os.environ if env is None else env
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display to open the viewer on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
        "run it in a desktop session, or use the headless commands: histoviewer map, "
        "train, evaluate, info"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; ``argv`` as after the program name (``["slide.svs"]``).

    A leading ``"gui"`` is accepted, so ``histoviewer gui SLIDE`` and
    ``histoviewer SLIDE`` behave alike. Returns the exit code.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["gui"]:
        args_list = args_list[1:]
    args = parse_args(args_list)
    if (problem := display_problem()) is not None:
        print(f"histoviewer: error: {problem}", file=sys.stderr)
        return 1
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    app = create_application()
    install_excepthook()
    from histoviewer.gui.mainwindow import MainWindow

    window = MainWindow()
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    if args.model:
        window.load_model(args.model)
    if args.slide:
        # After the event loop starts, so the window is on screen before a dialog.
        QTimer.singleShot(0, lambda: window.open_slide(args.slide))
    if (autoquit := _autoquit_ms()) is not None:
        # Jobs stop cleanly (a map being made saves its partial map) without asking,
        # then closeAllWindows runs the window's closeEvent before quit. With the window
        # as context the timer dies with it (closed by hand: the app quits by itself).
        QTimer.singleShot(
            autoquit, window, lambda: (window.shutdown(), app.closeAllWindows(), app.quit())
        )
    return app.exec()


def _autoquit_ms() -> int | None:
    value = os.environ.get(AUTOQUIT_ENV, "").strip()
    if not value:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        log.warning("ignoring %s=%r: not a whole number of milliseconds", AUTOQUIT_ENV, value)
        return None
