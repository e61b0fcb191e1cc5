"""Starting the app: main(argv), the auto-quit variable and the exception hook."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from viewer_support import write_strip_tiff

from histoviewer import cli
from histoviewer.gui import app as gui_app
from histoviewer.gui import settings as config
from histoviewer.model import ModelInfo, build_network, save_model

TIMEOUT = 60_000


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
    assert gui_app.display_problem({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, "linux") is None
    assert gui_app.display_problem({}, "darwin") is None
    problem = gui_app.display_problem({}, "linux")
    assert "no display" in problem and "QT_QPA_PLATFORM=offscreen" in problem
    assert "histoviewer info, map, train, evaluate" in problem
    # X11 asked for by name, but no X server to talk to (a Wayland one does not count).
    xcb = gui_app.display_problem({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "w"}, "linux")
    assert "DISPLAY is not set" in xcb and "\n" not in xcb

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


# --- histoviewer [gui] [SLIDE] --model MODEL ---------------------------------------------


class _NoEventLoop:
    """create_application's stand-in: the test's QApplication delivers the events."""

    def exec(self) -> int:
        return 0


@pytest.fixture
def launch(monkeypatch, make_window):
    """``cli.main(argv)`` through gui/app.py's main, without an event loop or hooks of its
    own; returns the window it opened (one with the test's settings and cache)."""
    opened = []
    real_open_window = gui_app.open_window

    def open_window(args):
        opened.append(real_open_window(args, make_window(restore_model=False)))
        return opened[-1]

    monkeypatch.setattr(gui_app, "create_application", lambda *args: _NoEventLoop())
    monkeypatch.setattr(gui_app, "install_excepthook", lambda: None)
    monkeypatch.setattr(gui_app, "open_window", open_window)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.delenv(gui_app.AUTOQUIT_ENV, raising=False)

    def run(*argv: str):
        assert cli.main(list(argv)) == 0
        (window,) = opened
        return window

    return run


@pytest.fixture
def tiny_model_file(tmp_path):
    torch.manual_seed(0)
    info = ModelInfo.recipe("resnet18", input_size=32, name="from the command line")
    return save_model(tmp_path / "tiny.safetensors", build_network("resnet18", 8), info)


@pytest.mark.parametrize(
    "form",
    [
        ("SLIDE", "--model", "MODEL"),
        ("gui", "SLIDE", "--model", "MODEL"),
        ("--model=MODEL", "SLIDE"),
        ("-q", "gui", "--model", "MODEL", "SLIDE"),
    ],
)
def test_the_command_line_model_is_loaded(qtbot, launch, tiny_model_file, tmp_path, form):
    # Nothing is delivered before the test waits: the model arrives by a queued signal
    # and the slide opens from a timer, both on this thread's event loop.
    slide = write_strip_tiff(tmp_path / "s.tif", 300, 300)
    names = {"SLIDE": str(slide), "MODEL": str(tiny_model_file)}
    argv = [names.get(a, a.replace("MODEL", str(tiny_model_file))) for a in form]
    window = launch(*argv)
    with (
        qtbot.waitSignal(window.slide_changed, timeout=TIMEOUT),
        qtbot.waitSignal(window.model_changed, timeout=TIMEOUT) as loaded,
    ):
        pass
    assert loaded.args[0].info.name == "from the command line"
    assert config.last_model_path(window.settings) == str(tiny_model_file)
    assert config.recent_files(window.settings) == [str(slide.resolve())]


def test_a_missing_model_gets_the_dialog_a_missing_slide_gets(qtbot, launch, tmp_path):
    missing_model = tmp_path / "typo.safetensors"
    missing_slide = tmp_path / "typo.svs"
    window = launch(str(missing_slide), "--model", str(missing_model))

    def dialogs():
        return [b.text() for b in window.findChildren(QMessageBox) if b.isVisible()]

    qtbot.waitUntil(lambda: len(dialogs()) == 2, timeout=TIMEOUT)
    texts = " | ".join(dialogs())
    assert "typo.safetensors" in texts and "typo.svs" in texts
    assert texts.count("does not exist") == 2, texts


def test_the_viewer_parses_what_the_command_passes_on():
    for argv in (["s.tif", "--model", "m.pt"], ["gui", "--model=m.pt", "s.tif"]):
        args = cli.build_parser().parse_args(cli._normalise_argv(argv))
        viewer = gui_app.parse_args(cli.gui_argv(args))
        assert (viewer.slide, viewer.model) == ("s.tif", "m.pt")


# --- Qt's X11 libraries ------------------------------------------------------------------

X11 = {"DISPLAY": ":0"}


def _lacking(*names):
    return lambda name: name not in names


def _never_asked(name):
    raise AssertionError(f"looked for {name} where Qt will not use X11")


def test_missing_x11_libraries_are_one_line_naming_the_packages():
    problem = gui_app.xcb_problem(X11, "linux", _lacking("libxcb-cursor.so.0", "libxcb-shm.so.0"))
    assert "\n" not in problem
    assert "(libxcb-cursor.so.0, libxcb-shm.so.0)" in problem
    assert "sudo apt install libxcb-cursor0 libxcb-shm0'" in problem
    assert "sudo dnf install xcb-util-cursor libxcb'" in problem
    # All the libraries present: nothing to say, and nothing either when only something
    # outside this list is wrong (Qt's own message says what).
    assert gui_app.xcb_problem(X11, "linux", lambda name: True) is None
    # The same packages whatever QT_QPA_PLATFORM carries with xcb.
    for chosen in ("xcb", "xcb:dpi=96"):
        env = {**X11, "QT_QPA_PLATFORM": chosen}
        assert gui_app.xcb_problem(env, "linux", _lacking("libxcb-cursor.so.0")) is not None


@pytest.mark.parametrize(
    ("env", "platform"),
    [
        ({**X11, "QT_QPA_PLATFORM": "offscreen"}, "linux"),
        ({**X11, "QT_QPA_PLATFORM": "wayland;xcb"}, "linux"),
        ({**X11, "WAYLAND_DISPLAY": "wayland-0"}, "linux"),  # Qt may pick Wayland
        ({**X11, "XDG_SESSION_TYPE": "wayland"}, "linux"),
        ({}, "linux"),  # no display: display_problem's case
        (X11, "darwin"),
        (X11, "win32"),
    ],
)
def test_x11_libraries_are_only_checked_where_qt_will_use_x11(env, platform):
    assert gui_app.xcb_problem(env, platform, _never_asked) is None


def test_the_x11_list_covers_the_libraries_qt_6_needs():
    needed = {
        "libxcb-cursor.so.0",
        "libxcb-icccm.so.4",
        "libxcb-image.so.0",
        "libxcb-keysyms.so.1",
        "libxcb-randr.so.0",
        "libxcb-render-util.so.0",
        "libxcb-shape.so.0",
        "libxcb-xkb.so.1",
        "libxkbcommon-x11.so.0",
    }
    assert needed <= set(gui_app.XCB_LIBRARIES)
    everything = gui_app.xcb_problem(X11, "linux", lambda name: False)
    assert "libxcb-cursor0 " in everything and "libxkbcommon-x11-0" in everything


def test_the_default_library_finder_asks_the_dynamic_loader():
    assert gui_app._can_load("libc.so.6" if sys.platform.startswith("linux") else "libc")
    assert not gui_app._can_load("libhistoviewer-no-such-library.so.7")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 is checked on Linux")
def test_the_viewer_stops_with_the_packages_before_qt_aborts(monkeypatch, capsys):
    for name in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(gui_app, "_xcb_plugin_loads", lambda: False)
    monkeypatch.setattr(gui_app, "_can_load", lambda name: name != "libxcb-cursor.so.0")

    def must_not_run(*args):
        raise AssertionError("the QApplication was created")

    monkeypatch.setattr(gui_app, "create_application", must_not_run)
    assert cli.main([]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("histoviewer: error: the viewer cannot start")
    assert "sudo apt install libxcb-cursor0'" in lines[0]
