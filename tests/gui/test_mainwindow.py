"""The main window end to end: open, zoom, pan, map, cancel, inspect, cache, errors."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtWidgets import QMessageBox
from viewer_support import (
    MAP_TIMEOUT,
    FailingSlide,
    gated_classifier,
    gated_mapping,
    on_cpu,
    run_mapping,
    tiny_classifier,
    write_strip_tiff,
)

from histoviewer.classes import class_label
from histoviewer.gui import settings as config
from histoviewer.gui.mainwindow import MainWindow
from histoviewer.mapping.quantities import quantities
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.model import save_model
from histoviewer.slide.synthetic_he import synthetic_he


@pytest.fixture
def slide_path(tmp_path):
    return write_strip_tiff(tmp_path / "slide.tif", 600, 600)


def shown_messages(window: MainWindow) -> list[tuple[str, str]]:
    return [(b.windowTitle(), b.text()) for b in window.findChildren(QMessageBox) if b.isVisible()]


def overlay_cells(window: MainWindow) -> int:
    return int(np.count_nonzero(window.overlay.rgba()[..., 3]))


def test_open_zoom_pan_and_status_bar(make_window, slide_path, settings):
    window = make_window()
    assert window.open_slide(slide_path)
    assert window.slide.dimensions == (600, 600)
    assert "slide.tif" in window.windowTitle()
    assert config.recent_files(settings)[0] == str(slide_path.resolve())

    before = window.view.zoom()
    window.zoom_in_action.trigger()
    assert window.view.zoom() > before
    assert window.zoom_label.text().endswith(f"Zoom {window.view.zoom() * 100:.3g} %")
    window.view.set_zoom(2.0)
    window.view.center_on(450, 150)
    center = window.view.visible_rect().center()
    assert abs(center.x() - 450) < 2 and abs(center.y() - 150) < 2

    window.view.cursorMoved.emit(100.0, 200.0)
    assert window.cursor_label.text() == "x 100, y 200 px  (49.5, 99.0 µm)"
    window.view.cursorMoved.emit(-1.0, -1.0)
    assert window.cursor_label.text() == ""

    window.close_slide()
    assert window.slide is None
    assert window.windowTitle() == "HistoViewer"
    assert not window.close_action.isEnabled()


def test_mapping_fills_overlay_batch_by_batch_and_matches_the_map(
    qtbot, make_window, slide_path, cache
):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=3))
    window.open_slide(slide_path)
    classifier, gate = gated_classifier(free_batches=1)
    window.set_classifier(classifier)
    job = window.map_tissue()
    assert job is not None and window.is_mapping()
    assert window.progress.isVisible() and window.cancel_action.isEnabled()

    # The first batch is on screen while the second one is still held back.
    # Cells and progress text come by separate queued signals: wait for both.
    qtbot.waitUntil(
        lambda: overlay_cells(window) == 3 and "3 / " in window.progress_label.text(),
        timeout=MAP_TIMEOUT,
    )
    assert overlay_cells(window) == 3 and "patches/s" in window.progress_label.text()
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        gate.set()
    tmap = blocker.args[0]

    assert tmap.complete and tmap.classified_count > 3
    assert window.tissue_map is tmap and not window.is_mapping()
    assert not window.progress.isVisible()
    rgba = window.overlay.rgba()
    labels = tmap.labels
    colors = np.asarray(tmap.class_colors, dtype=np.uint8)
    done = labels >= 0
    assert np.array_equal(rgba[done, :3], colors[labels[done]])
    assert (rgba[done, 3] == 255).all() and (rgba[~done, 3] == 0).all()
    # One texture for the whole map, placed over the grid in level-0 pixels.
    rect = window.overlay.boundingRect()
    assert (rect.width(), rect.height()) == (tmap.cols * tmap.stride, tmap.rows * tmap.stride)

    counts = tmap.counts()
    shares = {c.name: c.share for c in quantities(tmap).classes}  # of the tissue area
    for (label, patches, share, _area), name in zip(
        window.legend.row_texts(), tmap.class_names, strict=True
    ):
        assert label == class_label(name)
        assert patches == f"{counts[name]:,}"
        assert share == ("–" if shares[name] is None else f"{shares[name] * 100:.1f} %")
    assert len(list(cache.root.rglob("*.npz"))) == 1


def test_cancel_keeps_the_partial_map_and_caches_it(qtbot, make_window, slide_path, cache):
    window, _, gate, _ = gated_mapping(qtbot, make_window, slide_path)

    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        window.cancel_action.trigger()
        gate.set()  # the batch in flight finishes, then the job stops
    tmap = blocker.args[0]
    total = tmap.rows * tmap.cols - tmap.background_count
    assert not tmap.complete
    assert 2 <= tmap.classified_count < total
    assert window.tissue_map is tmap and overlay_cells(window) == tmap.classified_count
    assert not window.is_mapping() and window.map_action.isEnabled()
    message = window.statusBar().currentMessage()
    assert "cancelled" in message and "Map Tissue continues it" in message
    assert window.legend.status.text().startswith("Partial map:")
    (saved,) = cache.root.rglob("*.npz")  # saved as partial, never as if finished
    back = TissueMap.load(saved)
    assert not back.complete and np.array_equal(back.state, tmap.state)


def test_clicking_a_patch_shows_its_probabilities(qtbot, make_window, slide_path):
    window = make_window()
    window.open_slide(slide_path)
    window.set_classifier(tiny_classifier())
    tmap = run_mapping(qtbot, window)

    row, col = (int(v) for v in np.argwhere(tmap.state == CLASSIFIED)[-1])
    x, y, w, h = tmap.patch_box(row, col)
    pos = window.view.map_from_slide(QPointF(x + w / 2, y + h / 2)).toPoint()
    qtbot.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, pos=pos)

    panel = window.patch_panel
    assert panel.row_col == (row, col)
    probs = tmap.probs[row, col]
    expected = sorted(
        ((class_label(n), float(p)) for n, p in zip(tmap.class_names, probs, strict=True)),
        key=lambda e: -e[1],
    )
    shown = panel.chart.entries()
    assert [label for label, _ in shown] == [label for label, _ in expected]
    assert np.allclose([p for _, p in shown], [p for _, p in expected])
    best = tmap.class_names[int(np.argmax(probs))]
    assert panel.predicted() == class_label(best)
    assert class_label(best) in panel.title.text()
    assert f"Row {row + 1} of {tmap.rows}, column {col + 1} of {tmap.cols}" in panel.position.text()
    assert f"x {x:,}–{x + w:,} px" in panel.position.text()
    assert not panel.image.pixmap().isNull()
    assert window.outline.isVisible()
    assert window.outline.rect().getRect() == (x, y, w, h)

    background = np.argwhere(tmap.state == BACKGROUND)
    if len(background):
        r, c = (int(v) for v in background[0])
        window.select_patch(r, c)
        assert "No prediction" in panel.title.text() and panel.chart.entries() == []


def test_reopening_shows_the_cached_map_only_when_current(
    qtbot, make_window, slide_path, cache, settings
):
    classifier = tiny_classifier()
    first = make_window()
    first.open_slide(slide_path)
    first.set_classifier(classifier)
    mapped = run_mapping(qtbot, first)
    first.close()

    second = make_window()
    second.set_classifier(classifier)
    second.open_slide(slide_path)
    cached = second.tissue_map
    assert cached is not None and not second.is_mapping()
    assert np.array_equal(cached.probs, mapped.probs, equal_nan=True)
    assert overlay_cells(second) == mapped.classified_count
    assert second.remap_action.isEnabled()

    # Another model: the map is not shown as if it were current.
    second.set_classifier(tiny_classifier(seed=1))
    assert second.tissue_map is None and overlay_cells(second) == 0
    second.set_classifier(classifier)
    assert second.tissue_map is not None

    # Re-map replaces the saved map.
    saved = next(cache.root.rglob("*.npz"))
    before = saved.stat().st_mtime_ns
    with qtbot.waitSignal(second.mapping_finished, timeout=MAP_TIMEOUT):
        assert second.remap_tissue() is not None
    assert saved.stat().st_mtime_ns != before
    second.close_slide()

    # A changed slide file is a different slide: its old map is not shown.
    write_strip_tiff(slide_path, 600, 600, seed=5)
    os.utime(slide_path, (time.time() + 10, time.time() + 10))
    second.open_slide(slide_path)
    assert second.tissue_map is None


def test_map_without_model_says_what_to_do(make_window, slide_path, monkeypatch):
    window = make_window()
    told = []
    monkeypatch.setattr(window, "show_info", lambda title, text: told.append((title, text)))
    window.map_tissue()
    assert told[-1][0] == "No slide"
    window.open_slide(slide_path)
    assert window.map_tissue() is None
    title, text = told[-1]
    assert title == "No model loaded"
    assert "Model > Load Model" in text and "histoviewer train" in text
    assert not window.is_mapping()


def test_unreadable_slide_shows_a_dialog(make_window, tmp_path):
    window = make_window()
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    assert not window.open_slide(bad)
    assert window.slide is None
    ((title, text),) = shown_messages(window)
    assert title == "Cannot open slide" and "broken.tif" in text


def test_bad_model_file_shows_a_dialog(qtbot, make_window, tmp_path, settings):
    window = make_window()
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a model")
    window.load_model(bad)
    qtbot.waitUntil(lambda: not window.is_loading_model(), timeout=MAP_TIMEOUT)
    qtbot.waitUntil(lambda: shown_messages(window) != [], timeout=MAP_TIMEOUT)
    ((title, text),) = shown_messages(window)
    assert title.startswith("Cannot load the model") and "model.safetensors" in text
    assert window.classifier is None and window.model_label.text() == "No model"
    assert config.last_model_path(settings) is None


def test_model_loads_in_background_and_is_remembered(qtbot, make_window, tmp_path, settings):
    classifier = tiny_classifier()
    path = save_model(tmp_path / "tiny.safetensors", classifier.network, classifier.info)
    window = make_window()
    with qtbot.waitSignal(window.model_changed, timeout=MAP_TIMEOUT) as blocker:
        window.load_model(path)
    assert blocker.args[0].fingerprint == classifier.fingerprint
    assert window.model_label.text() == "Model: tiny"  # named by its file
    assert config.last_model_path(settings) == str(path)
    window.close()

    again = make_window()  # restores the last model by itself
    qtbot.waitUntil(lambda: again.classifier is not None, timeout=MAP_TIMEOUT)
    assert again.classifier.fingerprint == classifier.fingerprint


def test_a_shipped_model_loads_when_none_was_used_before(qtbot, make_window, tmp_path, monkeypatch):
    classifier = tiny_classifier(seed=2)
    folder = tmp_path / "models" / "kather-resnet"
    info = dataclasses.replace(classifier.info, metrics={"test_accuracy": 0.96375})
    save_model(folder / "model.safetensors", classifier.network, info)
    monkeypatch.setattr("histoviewer.gui.mainwindow.find_shipped_models", lambda: [folder])
    window = make_window()
    qtbot.waitUntil(lambda: window.classifier is not None, timeout=MAP_TIMEOUT)
    assert window.classifier.fingerprint == classifier.fingerprint
    # The status bar names it with its recorded test accuracy.
    assert window.model_label.text() == "Model: kather-resnet · 96.3 % on its test tiles"


@pytest.mark.parametrize(
    ("error", "title", "words"),
    [
        (MemoryError(), "Out of memory", "batch size"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "Out of memory", "memory"),
        (ZeroDivisionError("boom"), "Unexpected error", "This is a bug"),
    ],
)
def test_errors_in_the_mapping_worker_become_dialogs(
    qtbot, make_window, slide_path, error, title, words
):
    window = make_window()
    window.open_slide(slide_path)
    classifier, _ = gated_classifier(free_batches=0, fail_with=error)
    window.set_classifier(classifier)
    window.map_tissue()
    qtbot.waitUntil(lambda: not window.is_mapping(), timeout=MAP_TIMEOUT)
    ((shown_title, text),) = shown_messages(window)
    assert shown_title == title and words in text
    assert window.tissue_map is None and overlay_cells(window) == 0
    assert window.map_action.isEnabled() and not window.progress.isVisible()


def test_slide_read_failure_while_mapping_becomes_a_dialog(qtbot, make_window):
    window = make_window()
    pixels = synthetic_he(600, 600, seed=2)
    window.set_slide(FailingSlide(pixels, fail_height=150, error=OSError("I/O error")))
    window.set_classifier(tiny_classifier())
    window.map_tissue()
    qtbot.waitUntil(lambda: not window.is_mapping(), timeout=MAP_TIMEOUT)
    ((title, text),) = shown_messages(window)
    assert title.startswith("Cannot map") and "I/O error" in text


def test_closing_the_window_stops_a_running_job(qtbot, make_window, slide_path, cache):
    window, _, gate, _ = gated_mapping(qtbot, make_window, slide_path)
    window.ask_proceed = lambda title, text, proceed: proceed == "Keep Partial Map and Quit"
    reader = window.slide
    finished = []
    window.mapping_finished.connect(finished.append)
    # The held-back batch completes a moment after close() starts waiting for it.
    threading.Timer(0.3, gate.set).start()
    window.close()
    assert window.mapping.runner.running_jobs() == []
    assert reader._closed
    qtbot.wait(50)
    assert finished == []
    (saved,) = cache.root.rglob("*.npz")  # the job saved its partial map as it stopped
    back = TissueMap.load(saved)
    assert not back.complete and back.classified_count >= 2


def test_a_new_slide_drops_the_old_jobs_results(qtbot, make_window, slide_path, tmp_path):
    window, _, gate, job = gated_mapping(qtbot, make_window, slide_path)
    old_reader = window.slide
    finished = []
    window.mapping_finished.connect(finished.append)
    window.ask_proceed = lambda title, text, proceed: True

    other = write_strip_tiff(tmp_path / "other.tif", 450, 450, seed=3)
    assert window.open_slide(other)
    assert not old_reader._closed  # the old job still reads it
    with qtbot.waitSignal(window.mapping.runner.finished, timeout=MAP_TIMEOUT) as blocker:
        gate.set()
    assert blocker.args == [job]
    assert old_reader._closed
    assert finished == [] and window.tissue_map is None and overlay_cells(window) == 0
    assert shown_messages(window) == []


def test_drop_a_slide_onto_the_window(qtbot, make_window, slide_path):
    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(slide_path))])
    event = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    assert event.isAccepted()
    qtbot.waitUntil(lambda: window.slide is not None, timeout=5000)
    assert window.slide.path == slide_path


def test_settings_and_recent_files_persist(qtbot, make_window, slide_path, settings):
    first = make_window()
    first.open_slide(slide_path)
    first.legend.opacity.setValue(70)
    first.overlay_action.trigger()  # hide
    first.legend.shading.setChecked(True)
    first.set_mapping_settings(on_cpu(stride=100, batch_size=16, skip_background=False))
    first.resize(900, 640)
    first.close()

    second = make_window()
    assert second.legend.opacity.value() == 70 and second.overlay.opacity() == pytest.approx(0.7)
    assert not second.overlay.isVisible() and not second.overlay_action.isChecked()
    assert second.overlay.confidence_shading() and second.shading_action.isChecked()
    assert second.mapping_settings == on_cpu(stride=100, batch_size=16, skip_background=False)
    assert settings.value("window/geometry") is not None
    second.recent_menu.aboutToShow.emit()
    entries = [a for a in second.recent_menu.actions() if a.toolTip() == str(slide_path)]
    entries[0].trigger()
    assert second.slide is not None and second.slide.path == slide_path


def test_exports_write_every_format_and_the_view_image(qtbot, make_window, slide_path, tmp_path):
    window = make_window()
    window.open_slide(slide_path)
    window.set_classifier(tiny_classifier())
    run_mapping(qtbot, window)
    out = tmp_path / "out"
    for fmt in ("geojson", "csv", "png", "npz"):
        assert window.export_map(fmt, out / f"map.{fmt}")
        assert (out / f"map.{fmt}").stat().st_size > 0
    assert window.export_all(out / "all", "slide")
    assert {p.suffix for p in (out / "all").iterdir()} >= {".geojson", ".csv", ".png", ".npz"}
    assert window.export_view_image(out / "view.png")
    image = QImage(str(out / "view.png"))
    assert image.size() == window.view.viewport().size()
    # The legend is drawn in the top-left corner: its white box is there.
    assert QImage(image).pixelColor(QPoint(14, 14)).lightness() > 200


def test_export_failure_shows_a_dialog(qtbot, make_window, slide_path, tmp_path):
    window = make_window()
    window.open_slide(slide_path)
    window.set_classifier(tiny_classifier())
    run_mapping(qtbot, window)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert not window.export_map("csv", blocker / "map.csv")
    ((title, text),) = shown_messages(window)
    assert title == "Cannot export map.csv" and "a-file" in text
