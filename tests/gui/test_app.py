"""Starting the app: main(argv), the auto-quit variable and the exception hook."""

from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from viewer_support import write_strip_tiff

from histoviewer.gui import app as gui_app
from histoviewer.gui import settings as config


def test_main_opens_the_slide_and_autoquits(tmp_path):
    # A separate process, as a user starts it: main() runs and ends the event loop of
    # its own QApplication, and installs process-wide hooks.
    slide = write_strip_tiff(tmp_path / "first.tif", 300, 300)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # where QSettings writes on Linux
        "HOME": str(tmp_path),
        "HISTOVIEWER_CACHE_DIR": str(tmp_path / "cache"),
        gui_app.AUTOQUIT_ENV: "1500",
    }
    script = (
        "import sys; from histoviewer.gui import app; "
        "code = app.main(['gui', sys.argv[1]]); "
        "from PySide6.QtWidgets import QApplication as A; "
        "print(A.organizationName(), A.applicationName(), A.desktopFileName(), "
        "not A.windowIcon().isNull(), "
        "sys.excepthook is not sys.__excepthook__); "
        "raise SystemExit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(slide)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # The desktop file name ties the window to packaging/linux/histoviewer.desktop.
    assert done.stdout.split() == [
        config.ORGANIZATION,
        config.APPLICATION,
        "histoviewer",
        "True",
        "True",
    ]
    ini = next((tmp_path / "config").rglob("*.conf"))
    stored = QSettings(str(ini), QSettings.Format.IniFormat)
    assert config.recent_files(stored) == [str(slide.resolve())]


def test_uncaught_exceptions_show_one_dialog_at_a_time(qtbot):
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        info = (type(exc), exc, exc.__traceback__)
    box = gui_app.show_exception(*info)
    qtbot.addWidget(box)
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert box.windowTitle() == "Unexpected error"
    assert "ZeroDivisionError: division by zero" in box.text() and "bug" in box.text()
    assert "Traceback" in box.detailedText()
    assert gui_app.show_exception(*info) is None  # no pile of boxes
    box.accept()
    again = gui_app.show_exception(*info)
    assert again is not None
    qtbot.addWidget(again)
    again.accept()


def test_a_bad_autoquit_value_is_ignored(monkeypatch):
    monkeypatch.setenv(gui_app.AUTOQUIT_ENV, "soon")
    assert gui_app._autoquit_ms() is None
    monkeypatch.setenv(gui_app.AUTOQUIT_ENV, "250")
    assert gui_app._autoquit_ms() == 250


def test_no_display_is_one_clear_line_not_a_qt_abort(tmp_path):
    assert gui_app.display_problem({"DISPLAY": ":0"}, "linux") is None
    assert gui_app.display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert gui_app.display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert gui_app.display_problem({}, "darwin") is None
    assert "no display" in gui_app.display_problem({}, "linux")

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    done = subprocess.run(
        [sys.executable, "-m", "histoviewer"],
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "histoviewer: error: " + gui_app.display_problem({}, "linux")
    ]


def test_the_window_opens_before_torch_is_imported():
    # torch and torchvision take seconds to import; the window and the slide come first
    # and the model loads (importing torch) on a worker thread.
    script = (
        "import sys; import histoviewer.gui.mainwindow, histoviewer.gui.app; "
        "print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
