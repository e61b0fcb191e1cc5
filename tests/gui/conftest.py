"""Shared fixtures of the Qt tests (pytest-qt, offscreen platform from tests/conftest.py).

Every test here fails if it leaves top-level widgets behind, as napari's and
pymmcore-gui's test suites do: register windows with ``qtbot.addWidget`` (it
closes and deletes them) or close and delete them yourself. A test that must
leave one (none should) can be marked ``@pytest.mark.allow_leaked_widgets``.
"""

from __future__ import annotations

import gc

import pytest
from PySide6.QtCore import QEvent, QSettings
from PySide6.QtWidgets import QApplication
from viewer_support import on_cpu

from histoviewer.gui import settings as config
from histoviewer.gui.mainwindow import MainWindow
from histoviewer.mapping.cache import MapCache

# Qt's own helper windows that appear on demand and live as long as the application.
_QT_INTERNAL = {"QTipLabel"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_leaked_widgets: do not fail a test that leaves top-level widgets"
    )


def _flush_deletions(collect: bool = False) -> None:
    # deleteLater() only runs from an event loop; deliver those events now.
    app = QApplication.instance()
    for _ in range(2):
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        app.processEvents()
        if collect:  # widgets owned by garbage Python objects (slow with torch loaded)
            gc.collect()


def _leaked(before: set) -> list:
    return [
        w
        for w in QApplication.topLevelWidgets()
        if w not in before and type(w).__name__ not in _QT_INTERNAL
    ]


def _describe(widget) -> str:
    title = widget.windowTitle() or widget.objectName()
    return f"{type(widget).__name__}({title!r})" if title else type(widget).__name__


@pytest.fixture(autouse=True)
def no_leaked_widgets(qapp, request: pytest.FixtureRequest):
    """Fail a test that leaves top-level widgets alive (pytest-qt has closed its own by then)."""
    before = set(QApplication.topLevelWidgets())
    yield
    _flush_deletions()
    leaked = _leaked(before)
    if leaked:
        _flush_deletions(collect=True)
        leaked = _leaked(before)
    if not leaked:
        return
    names = ", ".join(_describe(w) for w in leaked)
    for widget in leaked:  # clean up so that later tests start from a clean slate
        widget.close()
        widget.deleteLater()
    _flush_deletions()
    if request.node.get_closest_marker("allow_leaked_widgets") is None:
        pytest.fail(
            f"the test left {len(leaked)} top-level widget(s) behind: {names}; "
            "register them with qtbot.addWidget() or close and delete them",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_unexpected_questions(monkeypatch):
    """A blocking question no test answers would hang the suite: fail instead.

    Tests that expect one replace ``ask_proceed`` or ``ask_yes_no`` on their window.
    """

    def refuse(self, title: str, text: str, proceed: str) -> bool:
        raise AssertionError(f"unexpected question {title!r}: {text}")

    def refuse_yes_no(self, title: str, text: str) -> bool:
        raise AssertionError(f"unexpected question {title!r}: {text}")

    monkeypatch.setattr(MainWindow, "ask_proceed", refuse)
    monkeypatch.setattr(MainWindow, "ask_yes_no", refuse_yes_no)


@pytest.fixture
def settings(tmp_path):
    """Settings in a temporary INI file (never the user's): mapping and training on the
    CPU, training runs under ``tmp_path/runs``."""
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    config.save_mapping_settings(qs, on_cpu())
    config.set_training_value(qs, "runs_root", str(tmp_path / "runs"))
    config.set_training_value(qs, "device", "cpu")
    return qs


@pytest.fixture
def start_questions(monkeypatch):
    """Every "Start training?" question, answered Start (tests that refuse replace
    ask_start on their dialog); the list of questions asked. The speed is not measured
    (one test turns it on), and no speed is known from an earlier test."""
    from histoviewer.gui import training_form
    from histoviewer.gui.training_dialog import TrainingDialog
    from histoviewer.gui.training_form import TrainingForm

    asked: list[str] = []

    def answer(self, text: str) -> bool:
        asked.append(text)
        return True

    monkeypatch.setattr(TrainingDialog, "ask_start", answer)
    monkeypatch.setattr(TrainingForm, "measure_speeds", False)
    monkeypatch.setattr(training_form, "_SPEEDS", {})
    return asked


@pytest.fixture
def cache(tmp_path):
    return MapCache(tmp_path / "cache")


@pytest.fixture
def make_window(qtbot, settings, cache):
    """Make a shown 1000 x 700 MainWindow with the test settings and cache."""

    def make(**kwargs) -> MainWindow:
        window = MainWindow(kwargs.pop("settings", settings), kwargs.pop("cache", cache), **kwargs)
        qtbot.addWidget(window)
        window.resize(1000, 700)
        window.show()
        return window

    return make
