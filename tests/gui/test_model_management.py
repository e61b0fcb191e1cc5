"""Model menu: Load Model (also the recipe's .pth.tar), Model Info, the status bar, memory."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent
from viewer_support import tiny_classifier

from histoviewer.classes import class_label, color_for, default_classes
from histoviewer.gui import settings as config
from histoviewer.gui.mainwindow import MainWindow
from histoviewer.gui.settings import MappingSettings
from histoviewer.mapping.cache import MapCache
from histoviewer.model import ModelInfo, build_network, save_model

TIMEOUT = 20_000


@pytest.fixture
def settings(tmp_path):
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    config.save_mapping_settings(qs, MappingSettings(device="cpu"))
    return qs


@pytest.fixture
def make_window(qtbot, settings, tmp_path, monkeypatch):
    # Only the models these tests load (a model shipped under resources/ would also load).
    monkeypatch.setattr("histoviewer.gui.mainwindow.find_shipped_models", lambda: [])

    def make() -> MainWindow:
        window = MainWindow(settings, MapCache(tmp_path / "cache"))
        qtbot.addWidget(window)
        window.show()
        return window

    return make


@pytest.fixture
def recipe_checkpoint(tmp_path):
    """What the reference recipe saves: {'state_dict': ...} and no metadata at all."""
    torch.manual_seed(0)
    network = build_network("resnet18", 8)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 15, "state_dict": network.state_dict()}, path)
    return path


def test_model_menu_holds_load_info_and_train(make_window):
    window = make_window()
    texts = [a.text() for a in window.model_menu.actions() if not a.isSeparator()]
    assert texts == [
        "&Load Model...",
        "Load Model &Folder...",
        "Model &Info...",
        "&Train New Model...",
    ]
    assert not window.model_info_action.isEnabled()  # no model yet
    assert window.model_label.text() == "No model"


def test_load_the_recipe_checkpoint_and_show_its_assumed_info(
    qtbot, make_window, recipe_checkpoint, settings, monkeypatch
):
    window = make_window()
    monkeypatch.setattr(window, "ask_open_file", lambda *args: str(recipe_checkpoint))
    with qtbot.waitSignal(window.model_changed, timeout=TIMEOUT):
        window.load_model_action.trigger()
    # Named by its folder: the file's name says nothing.
    assert window.model_label.text() == f"Model: {recipe_checkpoint.parent.name} (best)"
    assert str(recipe_checkpoint) in window.model_label.toolTip()
    assert window.model_info_action.isEnabled()

    window.model_info_action.trigger()
    dialog = window.models.info_dialog
    assert dialog.isVisible() and dialog.windowTitle() == "Model Info"
    assert str(recipe_checkpoint) in dialog.title.text()
    assert dialog.note.isVisible() and "assumed" in dialog.note.text()
    assert dialog.class_rows() == [(c.label, c.color) for c in default_classes()]
    details = dialog.details.toPlainText()
    assert "Architecture: ResNet-18" in details
    assert "150 px at 0.495 µm/px" in details and "resized to 224 x 224 px" in details
    # Remembered: the next start of the app loads it again.
    assert config.last_model_path(settings) == str(recipe_checkpoint)
    window.close()
    again = make_window()
    qtbot.waitUntil(lambda: again.classifier is not None, timeout=TIMEOUT)
    assert again.classifier.fingerprint == window.classifier.fingerprint
    assert again.model_label.text() == window.model_label.text()


def test_model_info_shows_training_data_metrics_and_own_colours(qtbot, make_window, tmp_path):
    colors = [(10, 20, 30), (200, 100, 0), (0, 128, 255)]
    info = ModelInfo(
        arch="resnet18",
        class_names=["tumor", "stroma", "gland"],
        class_colors=colors,
        input_size=32,
        name="my slides",
        training={"config": {"epochs": 2}, "data": {"images": 18, "source": "/data/tiles"}},
        metrics={"test_accuracy": 0.875, "test_macro_f1": 0.8},
    )
    torch.manual_seed(1)
    path = save_model(tmp_path / "mine.safetensors", build_network("resnet18", 3), info)
    window = make_window()
    with qtbot.waitSignal(window.model_changed, timeout=TIMEOUT):
        window.load_model(path)
    dialog = window.show_model_info()
    # The Kather classes in today's palette (classes.json), a class of its own in its own.
    assert dialog.class_rows() == [
        (class_label("tumor"), color_for("tumor", 0)),
        (class_label("stroma"), color_for("stroma", 1)),
        ("Gland", colors[2]),
    ]
    assert not dialog.note.isVisible()
    details = dialog.details.toPlainText()
    assert "Model: my slides" in details
    assert "images 18" in details and "/data/tiles" in details
    assert "test_accuracy 0.875" in details and "resized to 32 x 32 px" in details

    # The open dialog follows the model in use.
    window.set_classifier(tiny_classifier(seed=3))
    assert dialog.title.text().startswith("<b>tiny-3</b>")
    assert len(dialog.class_rows()) == 8
    window.set_classifier(None)
    assert "No model" in dialog.title.text() and not window.model_info_action.isEnabled()


def test_dropping_a_checkpoint_loads_it_as_the_model(qtbot, make_window, recipe_checkpoint):
    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(recipe_checkpoint))])
    event = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(window.model_changed, timeout=TIMEOUT) as blocker:
        window.dropEvent(event)
    assert blocker.args[0].info.arch == "resnet18" and window.slide is None
