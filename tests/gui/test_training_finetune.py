"""Model > Train New Model, "Fine-tune the current model with my labels": the mode is
offered only with a model file in the viewer; the labelled slides are listed; unknown
classes and moved slides are refused in words; the labels are cut and the model is
fine-tuned (tiles mixed in, if asked); the results compare the held-out labels (and
tiles) before and after; cancel works while cutting and while training, and Resume
continues; "Use this model" loads the fine-tuned model and maps the open slide again.

A tiny real model (ResNet-18 at 32 px input, 20 px patches at 1 µm/px) and a tiny
synthetic slide (at 0.5 µm/px: a patch is 40 slide pixels) keep each run to seconds.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from histoviewer.classes import class_label
from histoviewer.gui import training_dialog
from histoviewer.gui.finetune_form import CutEvent
from histoviewer.gui.training_form import ERROR_STYLE
from histoviewer.gui.training_results import ResultsPanel
from histoviewer.labels import LabelSet, LabelStore
from histoviewer.model import ModelInfo, build_network, load_model, save_model
from histoviewer.slide import open_slide

TIMEOUT = 60_000
SIDE = 40  # a model patch in slide pixels (20 px at 1 µm/px on a 0.5 µm/px slide)
PURPLE, PINK, WHITE = (150, 40, 110), (235, 150, 190), (245, 240, 245)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "start_questions")


@pytest.fixture(autouse=True)
def own_labels(tmp_path, monkeypatch):
    """This test's labels only (the session's labels folder is shared by all tests)."""
    monkeypatch.setenv("HISTOVIEWER_LABELS_DIR", str(tmp_path / "labels"))


def write_slide(path: Path, rows: int = 4, cols: int = 6, seed: int = 0) -> Path:
    """A strip TIFF at 0.5 µm/px: the left half purple (tumour-like), the right pink."""
    rng = np.random.default_rng(seed)
    img = np.empty((rows * SIDE, cols * SIDE, 3), np.uint8)
    half = cols // 2 * SIDE
    for x0, x1, colour in ((0, half, PURPLE), (half, cols * SIDE, PINK)):
        noise = rng.normal(0, 12, (rows * SIDE, x1 - x0, 3))
        img[:, x0:x1] = np.clip(np.array(colour) + noise, 0, 255)
    tifffile.imwrite(path, img, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    return path


def write_model(path: Path, seed: int = 0, tiles: Path | None = None) -> Path:
    """A random ResNet-18 of the eight Kather classes: 32 px input, 20 px at 1 µm/px
    (``tiles``: what it says it was trained on)."""
    torch.manual_seed(seed)
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=20, mpp=1.0, name="tiny")
    if tiles is not None:
        info.training = {"config": {"data": str(tiles)}}
    save_model(path, build_network("resnet18", info.num_classes), info)
    return path


def label_slide(path: Path, right: str = "stroma", left: str = "tumor") -> LabelSet:
    """Label every patch of the slide: the left half ``left``, the right half ``right``."""
    reader = open_slide(path)
    try:
        labels = LabelSet(reader.identity())
        cols, rows = (d // SIDE for d in reader.dimensions)
    finally:
        reader.close()
    for r in range(rows):
        for c in range(cols):
            labels.set([(c * SIDE, r * SIDE, SIDE)], left if c < cols // 2 else right)
    LabelStore().save(labels)
    return labels


def write_tiles(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """Kather-style class folders of noisy one-colour tiles."""
    rng = np.random.default_rng(seed)
    for folder, colour in (("01_TUMOR", PURPLE), ("02_STROMA", PINK), ("07_ADIPOSE", WHITE)):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (30, 30, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / folder / f"tile_{i:02d}.png")
    return root


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "tiny.safetensors")


@pytest.fixture
def slide(tmp_path):
    return write_slide(tmp_path / "slide.tif")


@pytest.fixture
def window(make_window, model):
    """A main window with the tiny model (from its file) in use. A run a failed test
    left going is stopped first: closing the window would ask whether to stop it."""
    window = make_window(restore_model=False)
    window.set_classifier(load_model(model), str(model))
    yield window
    if window.training_dialog is not None:
        window.training_dialog.shutdown()


def finetune_dialog(qtbot, window, out: Path, epochs: int = 2):
    """The training dialog in fine-tuning mode, its labelled slides read, output ``out``."""
    dialog = window.open_training_dialog()
    form = dialog.form
    assert form.set_finetuning(True)
    form.finetune.epochs_spin.setValue(epochs)
    form.finetune.batch_spin.setValue(8)
    form.out_edit.setText(str(out))
    wait_ready(qtbot, dialog)
    return dialog


def wait_ready(qtbot, dialog) -> None:
    qtbot.waitUntil(lambda: not dialog.form.checking(), timeout=TIMEOUT)


def expected_rows(compared: dict) -> list[tuple[str, str, str]]:
    names = {"labels": "Held-out labels", "tiles": "Held-out tiles"}
    return [
        (
            f"{names[key]} ({c['n']})",
            f"{c['before_accuracy'] * 100:.1f} % → {c['after_accuracy'] * 100:.1f} %",
            f"{c['before_macro_f1']:.3f} → {c['after_macro_f1']:.3f}",
        )
        for key, c in compared.items()
    ]


def test_finetuning_is_offered_only_with_a_model_file(qtbot, make_window, model, slide):
    window = make_window(restore_model=False)
    dialog = window.open_training_dialog()
    form = dialog.form
    assert not form.finetune_radio.isEnabled() and "Load a model" in form.finetune_radio.toolTip()
    assert not form.set_finetuning(True) and not form.finetuning
    assert form.data_edit.isVisible() and not form.finetune.sources_box.isVisible()

    # A model that did not come from a file (just trained, say) cannot be fine-tuned.
    window.set_classifier(load_model(model), None)
    assert not form.finetune_radio.isEnabled()

    label_slide(slide)
    window.set_classifier(load_model(model), str(model))
    assert form.finetune_radio.isEnabled() and form.finetune.model_path == str(model)
    assert form.set_finetuning(True)
    assert form.finetune.sources_box.isVisible() and not form.data_edit.isVisible()
    assert Path(form.out_folder).name.startswith("finetune-")
    wait_ready(qtbot, dialog)
    assert "Fine-tunes <b>tiny</b> (resnet18, 8 classes; 20 px patches at 1 µm/px)" in (
        form.finetune.model_label.text()
    )
    table = form.finetune.slides_table
    assert table.rowCount() == 1
    assert [table.item(0, c).text() for c in range(3)] == ["slide.tif", "24", "12 stroma, 12 tumor"]
    assert table.item(0, 0).checkState() == Qt.CheckState.Checked
    # The classes no label covers are named, with the advice to mix tiles in.
    coverage = form.finetune.coverage_label.text()
    missing = [class_label(n) for n in ("complex", "lympho", "debris", "mucosa", "adipose")]
    assert f"No labels of {', '.join(missing)}, {class_label('empty')}" in coverage
    assert "mixing in tiles" in coverage
    estimate = form.finetune.estimate_label.text()
    assert estimate.startswith("About ") and "First 24 labelled patches are cut" in estimate
    assert dialog.start_button.isEnabled()

    # Unticking the only slide leaves nothing to train on.
    table.item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    assert not dialog.start_button.isEnabled()
    assert form.finetune.problem == "Tick at least one slide with labels."

    # Without a model the mode goes back to training from tiles.
    window.set_classifier(None)
    assert not form.finetune_radio.isEnabled() and not form.finetuning
    assert form.data_edit.isVisible()


def test_finetune_shows_before_and_after_then_maps_the_slide_with_the_new_model(
    qtbot, window, model, slide, tmp_path, start_questions
):
    label_slide(slide)
    window.open_slide(slide)
    out = tmp_path / "ft"
    dialog = finetune_dialog(qtbot, window, out)
    assert dialog.start_button.isEnabled()
    events = []
    dialog.runner.progress.connect(lambda job, e: events.append(e))
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        assert dialog.start() is not None
    result = blocker.args[0]
    assert not result.cancelled and result.config.init_from == str(model)
    assert start_questions[-1].startswith("Fine-tune tiny with 24 labelled patches of 1 slide, ")
    cuts = [e for e in events if isinstance(e, CutEvent) and e.kind == "cut"]
    assert cuts[0].done == 0 and (cuts[-1].done, cuts[-1].total) == (24, 24)
    assert "Cut 24 labelled patches from 1 slide(s) (12 tumor, 12 stroma)." in dialog.log_text()
    with (out / "data" / "labels.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 24

    # The before / after figures are report.json's.
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    fine_tune = report["fine_tune"]
    compared = fine_tune["compared"]
    assert list(compared) == ["labels"]
    results = dialog.results
    assert dialog.tabs.currentWidget() is results and results.finetune_box.isVisible()
    assert results.finetune_rows() == expected_rows(compared)
    assert "Fine-tuned from tiny" in results.finetune_title.text()
    untrained = fine_tune["untrained_classes"]
    assert "tumor" not in untrained and "complex" in untrained
    assert results.untrained_label.text().startswith(
        f"Not trained on {', '.join(class_label(n) for n in untrained)} (no labels or tiles"
    )
    assert results.confusion_values() == report["test"]["confusion_matrix"]
    labels = compared["labels"]
    assert dialog.status_label.text().endswith(
        f"held-out labels {labels['before_accuracy'] * 100:.1f} % before fine-tuning, "
        f"{labels['after_accuracy'] * 100:.1f} % after."
    )

    # Use this model: the viewer takes it and maps the open slide with it.
    best = out / "best.safetensors"
    with qtbot.waitSignal(window.mapping_finished, timeout=TIMEOUT) as mapped:
        dialog.use_button.click()
    assert window.model_path == str(best)
    assert window.classifier.fingerprint == load_model(best).fingerprint
    assert mapped.args[0].model["fingerprint"] == window.classifier.fingerprint
    # ... and it is the model the dialog would fine-tune next.
    assert dialog.form.finetune.model_path == str(best)


def test_tiles_mixed_in_are_scored_too_and_a_cancelled_run_resumes(
    qtbot, window, slide, tmp_path, monkeypatch
):
    label_slide(slide)
    tiles = write_tiles(tmp_path / "tiles")
    # The tiles a model was trained on are offered to mix in.
    trained = write_model(tmp_path / "trained.safetensors", tiles=tiles)
    window.set_classifier(load_model(trained), str(trained))
    out = tmp_path / "ft"
    dialog = finetune_dialog(qtbot, window, out)
    panel = dialog.form.finetune
    assert panel.tiles_edit.text() == str(tiles) and not panel.mixing
    panel.mix_check.setChecked(True)
    panel.per_class_spin.setValue(5)
    wait_ready(qtbot, dialog)
    assert panel.mix_label.text() == (
        f"3 classes, 18 tiles in {tiles}: 15 of them are mixed in (at most 5 of each class)."
    )
    assert "the tiles mixed in below keep the model from forgetting them" in (
        panel.coverage_label.text()
    )
    assert dialog.start_button.isEnabled()

    # Held after epoch 1 and cancelled: the patches stay for Resume.
    reached, release = threading.Event(), threading.Event()
    real_fit = training_dialog.fit

    def gated_fit(cfg, progress, cancel, **kwargs):
        def report(event):
            progress(event)
            if event.kind == "epoch" and not reached.is_set():
                reached.set()
                while not release.wait(0.02) and not cancel.cancelled:
                    pass

        return real_fit(cfg, report, cancel, **kwargs)

    monkeypatch.setattr(training_dialog, "fit", gated_fit)
    assert dialog.start() is not None
    qtbot.waitUntil(reached.is_set, timeout=TIMEOUT)
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.cancel_button.click()
    assert blocker.args[0].cancelled and blocker.args[0].epochs_done == 1
    assert (out / "data" / "labels.csv").is_file()
    qtbot.waitUntil(dialog.resume_button.isEnabled, timeout=TIMEOUT)
    assert dialog.form.finetuning and not dialog.start_button.isEnabled()
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    result = blocker.args[0]
    assert not result.cancelled and result.epochs_done == 2

    with (out / "data" / "labels.csv").open(encoding="utf-8") as fh:
        mixed = [row for row in csv.DictReader(fh) if row["slide"] == str(tiles)]
    assert len(mixed) == 15
    compared = json.loads((out / "report.json").read_text(encoding="utf-8"))["fine_tune"][
        "compared"
    ]
    assert list(compared) == ["labels", "tiles"]
    rows = dialog.results.finetune_rows()
    assert rows == expected_rows(compared) and rows[1][0].startswith("Held-out tiles (")
    # Adipose came with the tiles: only the classes neither covers are left untrained.
    untrained = dialog.results.untrained_label.text()
    assert class_label("adipose") not in untrained and class_label("debris") in untrained


def test_label_or_tile_classes_the_model_does_not_know_are_refused(qtbot, window, slide, tmp_path):
    label_slide(slide)
    other = write_slide(tmp_path / "other.tif", seed=1)
    label_slide(other, right="necrosis")
    dialog = finetune_dialog(qtbot, window, tmp_path / "ft")
    panel = dialog.form.finetune
    assert panel.slides_table.rowCount() == 2
    coverage = panel.coverage_label
    assert coverage.styleSheet() == ERROR_STYLE
    assert coverage.text().startswith("The labels name a class the model does not know: necrosis.")
    assert not dialog.start_button.isEnabled()
    panel.set_ticked(str(other), False)
    assert coverage.styleSheet() != ERROR_STYLE and dialog.start_button.isEnabled()

    tiles = write_tiles(tmp_path / "tiles")
    (tiles / "09_NECROSIS").mkdir()
    Image.new("RGB", (30, 30)).save(tiles / "09_NECROSIS" / "a.png")
    Image.new("RGB", (30, 30)).save(tiles / "09_NECROSIS" / "b.png")
    panel.mix_check.setChecked(True)
    panel.tiles_edit.setText(str(tiles))
    wait_ready(qtbot, dialog)
    assert panel.mix_label.styleSheet() == ERROR_STYLE
    assert "hold classes the model does not know: necrosis" in panel.mix_label.text()
    assert not dialog.start_button.isEnabled()
    panel.mix_check.setChecked(False)
    assert dialog.start_button.isEnabled()


def test_a_slide_moved_since_it_was_labelled_is_a_readable_error(qtbot, window, slide, tmp_path):
    label_slide(slide)
    out = tmp_path / "ft"
    dialog = finetune_dialog(qtbot, window, out)
    assert dialog.start_button.isEnabled()
    slide.rename(tmp_path / "moved.tif")
    with qtbot.waitSignal(dialog.run_failed, timeout=TIMEOUT) as blocker:
        assert dialog.start() is not None
    message = blocker.args[0]
    assert message.startswith(f"cannot open {slide}: it does not exist. Its labels belong")
    assert dialog.error_label.isVisible() and "Traceback" not in dialog.error_label.text()
    assert dialog.status_label.text() == "Stopped by an error."
    assert not (out / "data").exists()  # nothing half-cut is left behind
    # Listed again, the slide is shown as missing and cannot be ticked.
    dialog.form.finetune.refresh()
    wait_ready(qtbot, dialog)
    item = dialog.form.finetune.slides_table.item(0, 0)
    assert (
        item.text() == "slide.tif (not found)"
        and not item.flags() & Qt.ItemFlag.ItemIsUserCheckable
    )
    assert not dialog.start_button.isEnabled()


def test_cancel_while_cutting_leaves_nothing_behind(qtbot, window, slide, tmp_path, monkeypatch):
    from histoviewer.labels import extract

    label_slide(slide)
    out = tmp_path / "ft"
    dialog = finetune_dialog(qtbot, window, out)
    reached = threading.Event()
    real_extract = extract.extract_tiles

    def held_extract(jobs, info, data, *, progress, cancel, **kwargs):
        def report(done, total):
            progress(done, total)
            reached.set()
            while done == 3 and not cancel.cancelled:
                threading.Event().wait(0.02)

        return real_extract(jobs, info, data, progress=report, cancel=cancel, **kwargs)

    monkeypatch.setattr(extract, "extract_tiles", held_extract)
    assert dialog.start() is not None
    qtbot.waitUntil(
        lambda: dialog.status_label.text() == "Cutting labelled patches 3 / 24", timeout=TIMEOUT
    )
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.cancel_button.click()
    assert blocker.args[0].cancelled
    assert dialog.status_label.text() == (
        "Cancelled while cutting the labelled patches: nothing was trained or saved. Start "
        "begins afresh."
    )
    assert not (out / "data").exists()
    qtbot.waitUntil(dialog.start_button.isEnabled, timeout=TIMEOUT)


def test_results_show_before_and_after_in_colour(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    names = ["tumor", "stroma"]
    metrics = {
        "accuracy": 0.75,
        "macro_f1": 0.7,
        "n": 4,
        "class_names": names,
        "per_class": [
            {"name": n, "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2} for n in names
        ],
        "confusion_matrix": [[1, 1], [0, 2]],
    }
    compared = {
        "labels": {
            "n": 3,
            "before_accuracy": 1 / 3,
            "after_accuracy": 1.0,
            "before_macro_f1": 0.25,
            "after_macro_f1": 1.0,
        },
        "tiles": {
            "n": 1,
            "before_accuracy": 1.0,
            "after_accuracy": 0.0,
            "before_macro_f1": 1.0,
            "after_macro_f1": 0.0,
        },
    }
    fine_tune = {"start_model": {"name": "run18"}, "compared": compared, "untrained_classes": []}
    panel.set_results(metrics, fine_tune=fine_tune)
    assert panel.finetune_rows() == [
        ("Held-out labels (3)", "33.3 % → 100.0 %", "0.250 → 1.000"),
        ("Held-out tiles (1)", "100.0 % → 0.0 %", "1.000 → 0.000"),
    ]
    better = panel.finetune_table.item(0, 1).foreground().color()
    worse = panel.finetune_table.item(1, 1).foreground().color()
    assert better.green() > better.red() and worse.red() > worse.green()
    assert better != QColor(worse)
    assert panel.untrained_label.text() == "Every class of the model was trained on."
    assert "Held-out accuracy after fine-tuning 75.0 %" in panel.summary.text()
    assert panel.per_class_title.text() == "Per class, all held-out patches, after fine-tuning"
    panel.clear()
    assert not panel.finetune_box.isVisibleTo(panel) and panel.finetune_rows() == []
