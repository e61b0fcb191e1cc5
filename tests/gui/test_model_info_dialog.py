"""Model > Model Info: name, test accuracy (warned when weak), date and fingerprint on top."""

from __future__ import annotations

import pytest
import torch

from histoviewer.gui.model_info import ModelInfoDialog
from histoviewer.model import Classifier, ModelInfo, build_network


def classifier(accuracy: float | None, name: str = "resnet18 recipe (tiles)") -> Classifier:
    metrics = {"epoch": 4}
    if accuracy is not None:
        metrics.update(test_accuracy=accuracy, test_macro_f1=0.6, test_images=90)
    info = ModelInfo.recipe(
        "resnet18",
        input_size=32,
        name=name,
        training={
            "config": {"epochs": 5, "preset": "recipe"},
            "data": {"source": "/data/tiles", "images": 900},
        },
        metrics=metrics,
    )
    torch.manual_seed(0)
    return Classifier.from_network(build_network("resnet18", info.num_classes), info)


@pytest.fixture
def dialog(qtbot):
    dialog = ModelInfoDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def _top(widget, dialog) -> int:
    return widget.mapTo(dialog, widget.rect().topLeft()).y()


def test_a_weak_model_is_named_by_its_run_and_warned_about_on_top(dialog, tmp_path):
    path = tmp_path / "run18b" / "best.safetensors"
    dialog.set_model(classifier(0.621), str(path))
    assert dialog.title.text().startswith("<b>run18b (best)</b>")
    assert str(path) in dialog.title.text()
    assert dialog.warning.isVisible()
    assert "62.1 %" in dialog.warning.text() and "below 80 %" in dialog.warning.text()
    assert "Train New Model" in dialog.warning.text()
    accuracy = dialog.summary_labels["test_accuracy"]
    assert accuracy.text().startswith("62.1 % on 90 test tiles")
    assert not dialog.accuracy_note.isVisible()
    # On top: the warning and the accuracy come before the classes and the details.
    dialog.layout().activate()
    assert _top(dialog.title, dialog) < _top(dialog.warning, dialog) < _top(accuracy, dialog)
    assert _top(accuracy, dialog) < _top(dialog.classes_box, dialog)
    assert _top(dialog.classes_box, dialog) < _top(dialog.details_button, dialog)
    labels = [label for label, _ in dialog.summary_rows()]
    assert labels.index("Test accuracy") < labels.index("Date") < labels.index("Fingerprint")


def test_a_good_model_shows_accuracy_date_and_fingerprint_without_warning(dialog, tmp_path):
    model = classifier(0.875)
    dialog.set_model(model, tmp_path / "kather-resnet18.safetensors")
    assert dialog.title.text().startswith("<b>kather-resnet18</b>")
    assert not dialog.warning.isVisible()
    assert dialog.summary_labels["test_accuracy"].text() == "87.5 % on 90 test tiles"
    assert dialog.summary_labels["macro_f1"].text() == "0.600"
    fingerprint = dialog.summary_labels["fingerprint"]
    assert fingerprint.text() == model.fingerprint[:16] + "…"
    assert model.fingerprint in fingerprint.toolTip()
    assert "date" in dialog.summary_labels
    assert "µm/px" in dialog.summary_labels["input"].text()
    assert dialog.summary_labels["trained_on"].text() == "/data/tiles, 900 tiles"


def test_the_threshold_is_80_percent(dialog):
    dialog.set_model(classifier(0.80), None)
    assert not dialog.warning.isVisible()
    dialog.set_model(classifier(0.799), None)
    assert dialog.warning.isVisible() and "79.9 %" in dialog.warning.text()


def test_no_recorded_accuracy_gets_a_note_not_a_warning(dialog):
    dialog.set_model(classifier(None, name="fresh"), None)
    assert dialog.title.text().startswith("<b>fresh</b>")
    assert "in memory" in dialog.title.text()
    assert not dialog.warning.isVisible()
    assert dialog.accuracy_note.isVisible() and "no test accuracy" in dialog.accuracy_note.text()
    assert dialog.summary_labels["test_accuracy"].text() == "not recorded"


def test_details_are_folded_away_until_asked_for(dialog):
    dialog.set_model(classifier(0.9), None)
    assert not dialog.details.isVisible()
    assert "Architecture: ResNet-18" in dialog.details.toPlainText()
    dialog.details_button.click()
    assert dialog.details.isVisible()
    dialog.details_button.click()
    assert not dialog.details.isVisible()


def test_no_model_then_models_again(dialog, tmp_path):
    dialog.set_model(classifier(0.5), tmp_path / "a" / "last.pt")
    dialog.set_model(None)
    assert "No model" in dialog.title.text()
    assert not dialog.warning.isVisible() and not dialog.summary_box.isVisible()
    assert dialog.summary_labels == {} and dialog.summary_rows() == []
    assert dialog.class_rows() == [] and not dialog.details_button.isVisible()
    dialog.set_model(classifier(0.95), tmp_path / "b" / "last.pt")
    assert dialog.title.text().startswith("<b>b (last)</b>")
    assert dialog.summary_box.isVisible() and not dialog.warning.isVisible()
    assert len(dialog.class_rows()) == 8
    # Rows are replaced, not added to.
    assert list(dialog.summary_labels).count("test_accuracy") == 1
    assert dialog.summary_grid.count() == 2 * len(dialog.summary_labels)
