"""The window as a pathologist lives in it: a laptop screen, magnifications, tooltips,
what the status bar says, models replacing maps, exports, Help."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QRect, Qt
from PySide6.QtGui import QImage
from viewer_support import gated_mapping, run_mapping, tiny_classifier, write_strip_tiff

from histoviewer.classes import class_label
from histoviewer.gui.mainwindow import MainWindow
from histoviewer.gui.shortcuts import ShortcutsDialog
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED
from histoviewer.model import save_model
from histoviewer.slide.magnification import PRESETS, magnification


@pytest.fixture
def slide_path(tmp_path):
    return write_strip_tiff(tmp_path / "slide.tif", 600, 600)


def mapped_window(qtbot, make_window, slide_path):
    window = make_window()
    window.open_slide(slide_path)
    window.set_classifier(tiny_classifier())
    tmap = run_mapping(qtbot, window)
    return window, tmap


def a_classified_patch(tmap) -> tuple[int, int]:
    row, col = (int(v) for v in np.argwhere(tmap.state == CLASSIFIED)[-1])
    return row, col


def patch_centre(tmap, row: int, col: int) -> tuple[float, float]:
    x, y, w, h = tmap.patch_box(row, col)
    return x + w / 2, y + h / 2


def test_the_window_fits_a_laptop_screen_with_every_panel_open(qtbot, make_window, slide_path):
    window, tmap = mapped_window(qtbot, make_window, slide_path)
    window.select_patch(*a_classified_patch(tmap))
    for dock in (window.overview_dock, window.map_dock, window.patch_dock):
        assert dock.isVisible()
    # A filled Patch panel used to force ~943 px: the panels now scroll instead.
    assert window.minimumSizeHint().height() < 700
    assert window.minimumSize().height() < 700
    window.resize(1366, 700)
    qtbot.waitUntil(lambda: window.height() <= 700)
    status = window.statusBar()
    assert status.geometry().bottom() < window.height()  # the status bar stays on screen
    assert window.patch_panel.row_col is not None


def test_a_window_saved_on_a_larger_screen_fits_this_one(qtbot, make_window, settings, cache):
    window = make_window()
    window.resize(5000, 4000)  # larger than any screen the tests run on
    window.close()  # saves the geometry
    again = MainWindow(settings, cache)  # as the app makes it, not resized by the fixture
    qtbot.addWidget(again)
    available = again.screen().availableGeometry()
    assert again.height() <= available.height() and again.width() <= available.width()


def test_magnification_presets_and_status(qtbot, make_window, slide_path):
    window = make_window()
    assert not window.zoom_label.text()  # nothing to say without a slide
    window.open_slide(slide_path)
    labels = [action.text() for action in window.magnification_actions]
    assert [label.split(" ")[0] for label in labels] == [f"{m}x" for m in PRESETS]
    mpp = window.slide.mpp
    for action, mag in zip(window.magnification_actions, PRESETS, strict=True):
        assert action.isEnabled()
        action.trigger()
        assert magnification(mpp, window.view.zoom()) == pytest.approx(mag, rel=0.02)
        assert window.zoom_label.text().startswith(f"{mag}x · ")
    window.close_slide()
    assert not any(action.isEnabled() for action in window.magnification_actions)


def test_closing_the_slide_clears_position_and_zoom(qtbot, make_window, slide_path):
    window = make_window()
    window.open_slide(slide_path)
    window.view.cursorMoved.emit(120.0, 80.0)
    assert window.cursor_label.text().startswith("x 120, y 80 px")
    assert "Zoom" in window.zoom_label.text()
    window.close_slide()
    assert window.cursor_label.text() == "" and window.zoom_label.text() == ""
    assert window.statusBar().currentMessage() == ""


def test_hovering_a_mapped_patch_names_its_class(qtbot, make_window, slide_path):
    window, tmap = mapped_window(qtbot, make_window, slide_path)
    row, col = a_classified_patch(tmap)
    probs = tmap.probs[row, col]
    best = int(np.argmax(probs))
    window.view.cursorMoved.emit(*patch_centre(tmap, row, col))
    tip = window.view.viewport().toolTip()
    assert class_label(tmap.class_names[best]) in tip and f"{probs[best] * 100:.0f} %" in tip
    window.set_overlay_visible(False)  # no map drawn, no tooltip about it
    window.view.cursorMoved.emit(*patch_centre(tmap, row, col))
    assert window.view.viewport().toolTip() == ""
    window.set_overlay_visible(True)
    window.view.cursorMoved.emit(-1.0, -1.0)  # off the slide
    assert window.view.viewport().toolTip() == ""


def test_a_new_model_says_what_became_of_the_map(qtbot, make_window, slide_path, tmp_path):
    window, _ = mapped_window(qtbot, make_window, slide_path)
    other = tiny_classifier(seed=1)
    path = save_model(tmp_path / "second-model.safetensors", other.network, other.info)
    with qtbot.waitSignal(window.model_changed, timeout=20_000):
        window.load_model(path)
    assert window.tissue_map is None
    message = window.statusBar().currentMessage()
    assert "second-model" in message and "no longer shown" in message
    assert window.model_label.text() == "Model: second-model"


def test_a_weak_model_warns(qtbot, make_window, tmp_path):
    window = make_window()
    warnings = []
    window.show_warning = lambda title, text: warnings.append(text)
    weak = tiny_classifier()
    weak.info.metrics["test_accuracy"] = 0.62
    window.set_classifier(weak, None)
    assert len(warnings) == 1 and "62.0 %" in warnings[0] and "80 %" in warnings[0]
    strong = tiny_classifier(seed=2)
    strong.info.metrics["test_accuracy"] = 0.93
    window.set_classifier(strong, None)
    assert len(warnings) == 1


def test_the_view_picture_leaves_out_the_selection_box(qtbot, make_window, slide_path, tmp_path):
    window, tmap = mapped_window(qtbot, make_window, slide_path)
    window.set_overlay_visible(False)  # the legend would cover a corner
    row, col = a_classified_patch(tmap)
    x, y = patch_centre(tmap, row, col)
    window.view.set_zoom(1.0)
    window.view.center_on(x, y)
    qtbot.wait(50)
    before = window.view_image()
    window.select_patch(row, col)
    assert window.outline.isVisible()
    after = window.view_image()
    assert window.outline.isVisible()  # still shown on screen
    assert after == before

    path = tmp_path / "view.png"
    assert window.export_view_image(path)
    assert QImage(str(path)) == before.convertToFormat(QImage(str(path)).format())


def test_help_lists_the_shortcuts_and_says_research_use_only(qtbot, make_window):
    window = make_window()
    texts = [action.text() for action in window.menuBar().actions()[-1].menu().actions()]
    assert "&Keyboard Shortcuts" in texts
    dialog = window.show_shortcuts()
    assert isinstance(dialog, ShortcutsDialog) and dialog.isVisible()
    rows = dict((what, keys) for keys, what in dialog.rows())
    assert rows["Map Tissue"] == window.map_action.shortcut().toString(
        window.map_action.shortcut().SequenceFormat.NativeText
    )
    assert "Map Region" in rows and "20x (like a 20x objective)" in rows
    assert any("Drag" in keys for keys, _ in dialog.rows())
    assert "research use only" in dialog.findChild(type(window.cursor_label)).text().lower()
    assert window.show_shortcuts() is dialog  # one dialog, raised again
    shown = []
    window.show_info = lambda title, text: shown.append(text)
    window.show_about()
    assert "research use only" in shown[0].lower()


def test_the_empty_window_says_what_to_do(qtbot, make_window, slide_path):
    window = make_window()
    hint = window.view.empty_hint
    assert hint.isVisible() and "Open Slide" in hint.text()
    buttons = hint.buttons()
    assert next(b.text().replace("&", "") for b in buttons).startswith("Open Slide")
    window.open_slide(slide_path)
    assert not hint.isVisible()
    window.close_slide()
    assert hint.isVisible()
    assert QRect(hint.geometry()).intersects(window.view.viewport().geometry())


def test_controllers_talk_through_the_state(qtbot, make_window, slide_path):
    window, tmap = mapped_window(qtbot, make_window, slide_path)
    state = window.state
    assert state.tissue_map is tmap and not state.map_is_live
    row, col = a_classified_patch(tmap)
    x, y = patch_centre(tmap, row, col)
    pos = window.view.map_from_slide(QPointF(x, y)).toPoint()
    qtbot.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert state.selection == (row, col)
    # Whoever changes the state, the window follows: a model set on the state itself
    # drops the map, the selection and the Patch panel, and names the model.
    state.set_model(tiny_classifier(seed=3), None)
    assert window.tissue_map is None and window.patch_panel.row_col is None
    assert not window.outline.isVisible()
    assert window.model_label.text() == "Model: tiny-3"
    assert not window.remap_action.isEnabled()


def test_progress_and_legend_count_the_same_tissue_patches(qtbot, make_window, slide_path):
    window, _classifier, gate, _job = gated_mapping(qtbot, make_window, slide_path)
    qtbot.waitUntil(lambda: "tissue patches" in window.progress_label.text(), timeout=20_000)
    live = window.tissue_map
    glass = int(np.count_nonzero(live.state == BACKGROUND))
    assert glass > 0  # told before the first batch, not only when the job ends
    tissue = live.rows * live.cols - glass
    progress = window.progress_label.text()
    assert re.match(rf"\d+ / {tissue} tissue patches", progress)
    summary = window.legend.summary_text()
    assert f"of {tissue} tissue patches classified" in summary
    assert f"{glass} background patches skipped" in summary
    # A glass patch says so while the job runs (not 'not classified yet').
    row, col = (int(v) for v in np.argwhere(live.state == BACKGROUND)[0])
    window.select_patch(row, col)
    assert "No prediction</b> (background" in window.patch_panel.title.text()
    with qtbot.waitSignal(window.mapping_finished, timeout=20_000) as blocker:
        gate.set()
    tmap = blocker.args[0]
    assert tmap.background_count == glass and tmap.classified_count == tissue
    assert window.legend.summary_text().startswith(f"{tissue} tissue patches classified")


def test_the_view_picture_keys_what_is_drawn_solo_or_heatmap(
    qtbot, make_window, slide_path, monkeypatch
):
    from histoviewer.gui import exporting
    from histoviewer.gui.legend import heatmap_lut

    window, tmap = mapped_window(qtbot, make_window, slide_path)
    drawn = []
    real_legend, real_key = exporting.draw_legend, exporting.draw_heatmap_key

    def legend(painter, x, y, entries):
        drawn.append([e.name for e in entries])
        return real_legend(painter, x, y, entries)

    def key(painter, x, y, label):
        drawn.append(label)
        return real_key(painter, x, y, label)

    monkeypatch.setattr(exporting, "draw_legend", legend)
    monkeypatch.setattr(exporting, "draw_heatmap_key", key)
    name = tmap.class_names[int(tmap.labels[a_classified_patch(tmap)])]
    plain = window.view_image()
    window.show_only_class(name)
    window.view_image()
    window.show_heatmap(name)
    heat = window.view_image()
    assert drawn == [list(tmap.class_names), [name], class_label(name)]
    # The colour bar's top colour is in the picture's corner, not in the class legend's.
    top = tuple(int(v) for v in heatmap_lut()[255])

    def corner_has(image, color):
        return any(
            image.pixelColor(x, y).getRgb()[:3] == color
            for x in range(10, 260)
            for y in range(10, 70)
        )

    assert corner_has(heat, top) and not corner_has(plain, top)
