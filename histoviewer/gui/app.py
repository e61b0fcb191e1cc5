"""Starting the desktop app: ``histoviewer [SLIDE] [--model MODEL]``, or with ``gui`` first.

:func:`main` checks that a window can be shown (a display, and on X11 the system
libraries Qt's xcb plugin needs: one line naming the packages instead of Qt's abort),
sets up the QApplication (names for QSettings, window icon), installs an exception
hook that shows a dialog instead of crashing, opens the main window
(:func:`open_window`: the model, the slide) and runs the event loop.
``HISTOVIEWER_AUTOQUIT_MS=N`` closes the window after N milliseconds, for smoke tests
of installed and frozen builds.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from PySide6.QtCore import QLibraryInfo, Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from histoviewer.cli import add_gui_arguments
from histoviewer.gui.settings import APPLICATION, ORGANIZATION

if TYPE_CHECKING:
    from histoviewer.gui.mainwindow import MainWindow

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
    add_gui_arguments(parser)
    return parser.parse_args(list(argv))


def display_problem(
    env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> str | None:
    """Why no window can be shown here, or None.

    On Linux without X11 or Wayland, Qt aborts the process with a multi-line message;
    saying it in one line, with what to do instead, is kinder.
    """
    env = os.environ if env is None else env
    if not platform.startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen and not _is_xcb(chosen):
        return None
    if env.get("DISPLAY") or (not chosen and env.get("WAYLAND_DISPLAY")):
        return None
    missing = "DISPLAY is not set" if chosen else "neither DISPLAY nor WAYLAND_DISPLAY is set"
    return (
        f"no display to open the viewer on ({missing}); run it in a desktop session, "
        "use the headless commands (histoviewer info, map, train, evaluate), or set "
        "QT_QPA_PLATFORM=offscreen to run it without showing a window"
    )


#: The libraries Qt's X11 platform plugin (platforms/libqxcb.so and libQt6XcbQpa.so.6)
#: links to that a Linux system may lack, with the Debian/Ubuntu and the Fedora package
#: holding each. Qt 6.5 and later need xcb-cursor; xinerama is no longer used.
XCB_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
}


def xcb_problem(
    env: Mapping[str, str] | None = None,
    platform: str = sys.platform,
    find_library: Callable[[str], bool] | None = None,
) -> str | None:
    """Which system libraries Qt's X11 plugin lacks here, as one line, or None.

    Without them Qt aborts the process with "Could not load the Qt platform plugin
    'xcb'" and a screenful of hints. Checked when Qt will use X11: on Linux, with
    QT_QPA_PLATFORM unset (outside a Wayland session) or set to xcb. ``find_library``
    says whether a library (a soname: "libxcb-cursor.so.0") can be loaded; by default
    the plugin itself is loaded first, and only if that fails are the libraries looked
    for one by one, so a library found where only Qt looks still counts as present.
    """
    env = os.environ if env is None else env
    if not platform.startswith("linux") or not _x11_chosen(env):
        return None
    if find_library is None:
        if _xcb_plugin_loads():
            return None
        find_library = _can_load
    missing = [name for name in XCB_LIBRARIES if not find_library(name)]
    if not missing:
        return None  # something else is wrong: Qt says what
    apt = " ".join(dict.fromkeys(XCB_LIBRARIES[name][0] for name in missing))
    dnf = " ".join(dict.fromkeys(XCB_LIBRARIES[name][1] for name in missing))
    return (
        f"the viewer cannot start: Qt's X11 support needs system libraries missing here "
        f"({', '.join(missing)}); install them with 'sudo apt install {apt}' "
        f"(Fedora: 'sudo dnf install {dnf}')"
    )


def _is_xcb(platform_name: str) -> bool:
    # QT_QPA_PLATFORM may carry options ("xcb:dpi=96") or fallbacks ("wayland;xcb").
    return platform_name.split(";")[0].split(":")[0].strip() == "xcb"


def _x11_chosen(env: Mapping[str, str]) -> bool:
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return _is_xcb(chosen)
    # Unset: in a Wayland session Qt may pick its Wayland plugin, which needs none of them.
    wayland = env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland"
    return bool(env.get("DISPLAY")) and not wayland


def _xcb_plugin_loads() -> bool:
    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
    plugin = plugins / "platforms" / "libqxcb.so"
    return plugin.is_file() and _can_load(str(plugin))


def _can_load(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        # Also where Qt's own libraries are (the plugin's RUNPATH), as a bundle may ship them.
        libs = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.LibrariesPath))
        return "/" not in name and (libs / name).is_file()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; ``argv`` as after the program name (``["slide.svs"]``).

    A leading ``"gui"`` is accepted, so ``histoviewer gui SLIDE`` and
    ``histoviewer SLIDE`` behave alike. Returns the exit code.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["gui"]:
        args_list = args_list[1:]
    args = parse_args(args_list)
    if (problem := display_problem() or xcb_problem()) is not None:
        print(f"histoviewer: error: {problem}", file=sys.stderr)
        return 1
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    app = create_application()
    install_excepthook()
    window = open_window(args)
    if (autoquit := _autoquit_ms()) is not None:
        # Jobs stop cleanly (a map being made saves its partial map) without asking,
        # then closeAllWindows runs the window's closeEvent before quit. With the window
        # as context the timer dies with it (closed by hand: the app quits by itself).
        QTimer.singleShot(
            autoquit, window, lambda: (window.shutdown(), app.closeAllWindows(), app.quit())
        )
    return app.exec()


def open_window(args: argparse.Namespace, window: MainWindow | None = None) -> MainWindow:
    """Show ``window`` (a new MainWindow, deleted when closed) for parsed arguments.

    ``args.model`` starts loading at once (in the background; a file that cannot be
    loaded gets the window's error dialog, as from Model > Load Model), ``args.slide``
    opens once the event loop runs (a slide that cannot be opened: the same dialog as
    from File > Open).
    """
    if window is None:
        from histoviewer.gui.mainwindow import MainWindow

        window = MainWindow()
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    if args.model:
        window.load_model(args.model)
    if args.slide:
        # After the event loop starts, so the window is on screen before a dialog.
        slide = args.slide
        QTimer.singleShot(0, window, lambda: window.open_slide(slide))
    return window


def _autoquit_ms() -> int | None:
    value = os.environ.get(AUTOQUIT_ENV, "").strip()
    if not value:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        log.warning("ignoring %s=%r: not a whole number of milliseconds", AUTOQUIT_ENV, value)
        return None
