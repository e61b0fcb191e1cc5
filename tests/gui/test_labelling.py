"""Labelling patches on the slide: select, label with keys, menus and the Patch panel,
undo, outlines, saving per slide, QuPath GeoJSON in and out."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QContextMenuEvent, QMouseEvent
from PySide6.QtWidgets import QApplication, QMenu
from viewer_support import tiny_classifier, write_strip_tiff

from histoviewer.classes import class_label
from histoviewer.errors import StorageError
from histoviewer.gui.labelling import cells_in
from histoviewer.labels.geojson import read_geojson
from histoviewer.labels.store import LabelSet, LabelStore, PatchLabel, cell_box
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap, slide_identity

SIDE = 750  # 5 x 5 patches of 150 px


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    """One slide for the module (each test has its own label store)."""
    return write_strip_tiff(tmp_path_factory.mktemp("slides") / "slide.tif", SIDE, SIDE)


@pytest.fixture(scope="module")
def classifier():
    """The model whose classes the labels name (never run here: the maps are made up)."""
    return tiny_classifier()


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "labels")


@pytest.fixture
def dialogs():
    """What the windows told the user: (kind, title, text) each."""
    return []


@pytest.fixture
def open_window(qtbot, make_window, store, dialogs):
    """A window with the test label store whose messages are recorded in ``dialogs``."""

    def make():
        window = make_window(labels=store, restore_model=False)
        for kind in ("error", "warning", "info"):
            setattr(
                window,
                f"show_{kind}",
                lambda title, text, kind=kind: dialogs.append((kind, title, text)),
            )
        window.activateWindow()
        window.view.setFocus()
        return window

    return make


def show_map(window) -> TissueMap:
    """Show a map of the open slide made by the window's model (random probabilities:
    labelling does not care how the map was made), as the mapping job would."""
    slide, info = window.slide, window.classifier.info
    tmap = TissueMap.empty(
        make_grid(slide, info), info.class_names, info.class_colors, mpp=slide.mpp,
        slide=slide_identity(slide),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    probs = rng.random((tmap.rows, tmap.cols, len(info.class_names))).astype(np.float32)
    tmap.probs[:] = probs / probs.sum(axis=-1, keepdims=True)
    tmap.state[:] = CLASSIFIED
    tmap.complete = True
    window.state.set_map(tmap)
    return tmap


@pytest.fixture
def mapped(qtbot, open_window, slide_path, classifier):
    window = open_window()
    assert window.open_slide(slide_path)
    window.set_classifier(classifier)
    tmap = show_map(window)
    qtbot.waitUntil(window.view.hasFocus)
    return window, tmap


def press(qtbot, window, key) -> None:
    qtbot.keyClick(window.view, key)


def centre(tmap, row: int, col: int) -> QPointF:
    x, y, w, h = tmap.patch_box(row, col)
    return QPointF(x + w / 2, y + h / 2)


def shift_drag(window, start: QPointF, end: QPointF, *, ctrl: bool = False) -> None:
    """A real Shift+left-drag (``ctrl``: Ctrl+Shift) on the view between two level-0
    points."""
    view = window.view
    left, shift = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier
    if ctrl:
        shift |= Qt.KeyboardModifier.ControlModifier
    steps = [
        (QEvent.Type.MouseButtonPress, start, left, left),
        (QEvent.Type.MouseMove, (start + end) / 2, Qt.MouseButton.NoButton, left),
        (QEvent.Type.MouseMove, end, Qt.MouseButton.NoButton, left),
        (QEvent.Type.MouseButtonRelease, end, left, Qt.MouseButton.NoButton),
    ]
    for kind, point, button, buttons in steps:
        pos = view.map_from_slide(point)
        global_pos = QPointF(view.viewport().mapToGlobal(pos.toPoint()))
        view.viewportEvent(QMouseEvent(kind, pos, global_pos, button, buttons, shift))


def stored(store, window) -> dict:
    path = store.path_for(slide_identity(window.slide))
    return {(d["x"], d["y"], d["size"]): d["class"] for d in json.loads(path.read_text())["labels"]}


# --- keys, saving, reloading ---------------------------------------------------------


def test_number_keys_label_the_selected_patch_and_it_is_saved_and_reloaded(
    qtbot, mapped, store, slide_path, dialogs, tmp_path
):
    window, tmap = mapped
    window.select_patch(1, 2)
    press(qtbot, window, Qt.Key.Key_2)  # the model's second class
    box = cell_box(tmap, 1, 2)
    assert window.state.labels.get(box) == tmap.class_names[1]
    assert stored(store, window) == {box: tmap.class_names[1]}
    assert "1 labelled patch" in window.statusBar().currentMessage()
    assert window.labelling.count_label.text() == "1 labelled"
    assert window.patch_panel.label_shown() == f"Label: {class_label(tmap.class_names[1])}"

    press(qtbot, window, Qt.Key.Key_8)  # relabel: the last of eight
    assert stored(store, window) == {box: tmap.class_names[7]}

    # Another slide has none; the first has its label back when it is reopened.
    other = write_strip_tiff(tmp_path / "other.tif", SIDE, SIDE, seed=3)
    window.open_slide(other)
    assert len(window.state.labels) == 0 and window.labelling.layer.count() == 0
    window.open_slide(slide_path)
    assert window.state.labels.get(box) == tmap.class_names[7]
    assert window.labelling.layer.count() == 1
    assert dialogs == []


def test_without_a_selection_the_number_keys_still_choose_a_magnification(qtbot, mapped):
    window, _ = mapped
    window.view.fit()
    fit = window.view.zoom()
    press(qtbot, window, Qt.Key.Key_4)  # 40x
    assert window.view.zoom() > fit
    assert len(window.state.labels) == 0


def test_delete_backspace_and_zero_remove_labels(qtbot, mapped, store):
    window, tmap = mapped
    window.select_patch(4, 4)
    press(qtbot, window, Qt.Key.Key_6)
    kept = {cell_box(tmap, 4, 4): tmap.class_names[5]}
    for key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace, Qt.Key.Key_0):
        window.select_patch(0, 0)
        press(qtbot, window, Qt.Key.Key_1)
        assert len(window.state.labels) == 2
        press(qtbot, window, key)
        assert stored(store, window) == kept  # only the selected patch's label went
    window.select_patch(4, 4)
    press(qtbot, window, Qt.Key.Key_Delete)
    assert not store.path_for(slide_identity(window.slide)).exists()  # nothing left


def test_a_damaged_labels_file_warns_and_starts_empty(
    qtbot, open_window, store, slide_path, dialogs
):
    window = open_window()
    window.open_slide(slide_path)
    path = store.path_for(slide_identity(window.slide))
    window.close_slide()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    window.open_slide(slide_path)
    assert [(kind, title) for kind, title, _ in dialogs] == [("warning", "Labels not read")]
    assert "damaged" in dialogs[0][2] or "could not be read" in dialogs[0][2]
    assert window.state.labels is not None and len(window.state.labels) == 0


def test_a_label_that_cannot_be_saved_stays_in_memory(qtbot, mapped, store, dialogs, monkeypatch):
    window, tmap = mapped

    def refuse(labels):
        raise StorageError("cannot write the labels: disk full")

    monkeypatch.setattr(store, "save", refuse)
    window.select_patch(0, 0)
    press(qtbot, window, Qt.Key.Key_3)
    press(qtbot, window, Qt.Key.Key_4)
    assert window.state.labels.get(cell_box(tmap, 0, 0)) == tmap.class_names[3]
    # One dialog, not one per key press.
    assert [(kind, title) for kind, title, _ in dialogs] == [("error", "Labels not saved")]
    assert "disk full" in dialogs[0][2]


# --- several patches -----------------------------------------------------------------


def test_shift_drag_selects_the_cells_it_touches_and_a_key_labels_them_all(qtbot, mapped, store):
    window, tmap = mapped
    window.view.fit()
    shift_drag(window, centre(tmap, 1, 1), centre(tmap, 2, 3))
    cells = [(r, c) for r in (1, 2) for c in (1, 2, 3)]
    assert window.labelling.selected_cells() == cells
    assert window.labelling.selection_layer.count() == 6
    assert window.state.selection in cells  # the Patch panel describes one of them
    assert window.patch_panel.label_shown().startswith("6 patches selected")
    press(qtbot, window, Qt.Key.Key_5)
    assert stored(store, window) == {cell_box(tmap, r, c): tmap.class_names[4] for r, c in cells}
    # One undo step takes all six back.
    window.undo_labels_action.trigger()
    assert len(window.state.labels) == 0

    # Another Shift+drag selects anew; with Ctrl too it adds.
    shift_drag(window, centre(tmap, 4, 4), centre(tmap, 4, 3))  # along a row
    assert window.labelling.selected_cells() == [(4, 3), (4, 4)]
    shift_drag(window, centre(tmap, 1, 1), centre(tmap, 2, 3), ctrl=True)
    assert window.labelling.selected_cells() == [*cells, (4, 3), (4, 4)]
    shift_drag(window, centre(tmap, 1, 1), centre(tmap, 2, 3))

    # Shift+click drops a cell; a plain click selects one patch again.
    window.undo_labels_action.trigger()  # nothing left to undo: no harm
    point = window.view.map_from_slide(centre(tmap, 1, 1)).toPoint()
    qtbot.mouseClick(
        window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, point
    )
    assert (1, 1) not in window.labelling.selected_cells()
    assert len(window.labelling.selected_cells()) == 5
    qtbot.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert window.labelling.selected_cells() == [(1, 1)]
    assert window.labelling.selection_layer.count() == 0
    # Esc selects nothing.
    press(qtbot, window, Qt.Key.Key_Escape)
    assert window.labelling.selected_cells() == [] and window.state.selection is None


def test_shift_drag_keeps_map_region_working(qtbot, mapped):
    window, tmap = mapped
    regions = []
    window.map_tissue_region = lambda *area: regions.append(area)  # no mapping job
    window.view.start_region_selection()
    shift_drag(window, centre(tmap, 0, 0), centre(tmap, 1, 1))
    assert len(regions) == 1  # Map Region took the drag, not the label selection
    assert window.labelling.selected_cells() == []


def test_cells_in_a_rectangle(mapped):
    _, tmap = mapped
    assert cells_in(tmap, QRectF(0, 0, 10, 10)) == [(0, 0)]
    assert cells_in(tmap, QRectF(140, 10, 20, 10)) == [(0, 0), (0, 1)]
    assert cells_in(tmap, QRectF(0, 0, SIDE, SIDE)) == [(r, c) for r in range(5) for c in range(5)]
    assert cells_in(tmap, QRectF(SIDE + 5, 0, 10, 10)) == []
    # A drag along a row or a column is a rectangle without height or width.
    assert cells_in(tmap, QRectF(10, 150, 200, 0)) == [(1, 0), (1, 1)]
    assert cells_in(tmap, QRectF(300, 10, 0, 200)) == [(0, 2), (1, 2)]


# --- menus, panel, undo --------------------------------------------------------------


def test_the_context_menu_labels_the_patch_under_the_pointer(qtbot, mapped, store):
    window, tmap = mapped
    point = centre(tmap, 3, 4)
    menu = window.labelling.context_menu(point.x(), point.y())
    try:
        assert window.state.selection == (3, 4)  # right-click selects the patch
        titles = [a.text() for a in menu.actions()]
        assert titles[0] == "Label as"
        assert any(t.startswith("Remove Label") for t in titles)
        assert window.map_action in menu.actions()  # the mapping commands stay
        classes = menu.actions()[0].menu().actions()
        names = [class_label(n) for n in tmap.class_names]
        assert [a.text().split("\t")[0] for a in classes] == names
        assert all(not a.icon().isNull() for a in classes)
        classes[5].trigger()
    finally:
        menu.deleteLater()
    assert stored(store, window) == {cell_box(tmap, 3, 4): tmap.class_names[5]}


def test_a_real_right_click_opens_the_label_menu(qtbot, mapped):
    window, tmap = mapped
    viewport = window.view.viewport()
    pos = window.view.map_from_slide(centre(tmap, 2, 2)).toPoint()
    chosen = []

    def pick() -> None:
        popup = QApplication.activePopupWidget()
        if isinstance(popup, QMenu):
            chosen.append([a.text() for a in popup.actions()])
            popup.actions()[0].menu().actions()[0].trigger()
            popup.close()

    QTimer.singleShot(100, pick)
    event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, viewport.mapToGlobal(pos))
    QApplication.sendEvent(viewport, event)
    assert chosen and chosen[0][0] == "Label as"
    assert window.state.labels.get(cell_box(tmap, 2, 2)) == tmap.class_names[0]


def test_the_patch_panel_labels_and_shows_the_label(qtbot, mapped, store):
    window, tmap = mapped
    panel = window.patch_panel
    window.select_patch(4, 0)
    assert panel.label_shown() == "Label: none"
    choices = panel.label_choices()
    assert choices[0] == f"1  {class_label(tmap.class_names[0])}"
    assert choices[-1] == "Remove label"
    combo = panel.label_combo
    combo.setCurrentIndex(3)
    combo.activated.emit(3)  # as a user's choice of the third class
    assert stored(store, window) == {cell_box(tmap, 4, 0): tmap.class_names[2]}
    assert panel.label_shown().startswith("Label: ")
    assert tmap.class_names[2] not in panel.label_shown()  # the class's label, not its id
    assert combo.currentIndex() == 0  # back to "Label as..."
    combo.activated.emit(combo.count() - 1)  # Remove label
    assert len(window.state.labels) == 0
    assert panel.label_shown() == "Label: none"


def test_undo_and_redo(qtbot, mapped, store):
    window, tmap = mapped
    undo, redo = window.undo_labels_action, window.redo_labels_action
    assert not undo.isEnabled() and not redo.isEnabled()
    window.select_patch(0, 1)
    press(qtbot, window, Qt.Key.Key_1)
    press(qtbot, window, Qt.Key.Key_2)
    assert undo.isEnabled() and not redo.isEnabled()
    qtbot.keyClick(window.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    box = cell_box(tmap, 0, 1)
    assert stored(store, window) == {box: tmap.class_names[0]}
    assert redo.isEnabled()
    undo.trigger()
    assert len(window.state.labels) == 0 and not undo.isEnabled()
    qtbot.keyClick(
        window.view,
        Qt.Key.Key_Z,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert stored(store, window) == {box: tmap.class_names[0]}
    redo.trigger()
    assert stored(store, window) == {box: tmap.class_names[1]}
    assert not redo.isEnabled()


# --- drawing -------------------------------------------------------------------------


def test_labelled_patches_are_outlined_in_their_class_colour(qtbot, mapped):
    window, tmap = mapped
    layer = window.labelling.layer
    window.labelling.select_cells([(0, 0), (0, 1), (1, 0)])
    press(qtbot, window, Qt.Key.Key_1)
    window.select_patch(4, 4)
    press(qtbot, window, Qt.Key.Key_7)
    colors = tmap.class_colors
    assert layer.color_counts() == {colors[0]: 3, colors[6]: 1}
    assert layer.scene() is window.view.scene() and layer.zValue() > window.overlay.zValue()

    # Drawn on screen in the class colour, also with the map hidden.
    window.set_overlay_visible(False)
    window.view.set_zoom(1.0, (75, 75))
    qtbot.waitUntil(window.view.fully_loaded, timeout=5000)
    image = window.view.viewport().grab().toImage()
    edge = window.view.map_from_slide(QPointF(150, 75)).toPoint()  # (0, 0) | (0, 1)
    assert image.rect().contains(edge)
    near = [image.pixelColor(edge + QPoint(dx, 0)).getRgb()[:3] for dx in range(-6, 6)]
    assert tuple(colors[0]) in near

    # The outlines follow undo, and go with the slide.
    window.labelling.undo()
    assert layer.color_counts() == {colors[0]: 3}
    window.close_slide()
    assert layer.count() == 0


def test_many_labels_draw_quickly(qtbot, mapped):
    window, _ = mapped
    labels = LabelSet(
        {}, [PatchLabel(x * 5, y * 5, 5, "tumor") for x in range(150) for y in range(150)]
    )
    window.labelling.layer.set_labels(labels, {"tumor": (200, 0, 0)})
    window.view.fit()
    start = time.perf_counter()
    window.view.viewport().grab()
    fitted = time.perf_counter() - start
    window.view.set_zoom(4.0, (10, 10))
    start = time.perf_counter()
    window.view.viewport().grab()
    zoomed = time.perf_counter() - start
    assert window.labelling.layer.count() == 22_500
    assert fitted < 0.5 and zoomed < 0.5, (fitted, zoomed)


# --- GeoJSON -------------------------------------------------------------------------


def test_geojson_export_and_import_round_trip(qtbot, mapped, store, tmp_path, dialogs):
    window, tmap = mapped
    window.labelling.select_cells([(0, 0), (1, 1)])
    press(qtbot, window, Qt.Key.Key_1)
    window.select_patch(2, 3)
    press(qtbot, window, Qt.Key.Key_3)
    before = {lab.box: lab.name for lab in window.state.labels}
    assert window.export_labels_action.isEnabled()

    out = tmp_path / "out.geojson"
    window.ask_save_file = lambda title, suggestion, filters: str(tmp_path / "out")
    window.export_labels_action.trigger()  # ".geojson" is added to a bare name
    data = read_geojson(out)
    assert len(data["features"]) == 3
    first = data["features"][0]["properties"]["classification"]
    assert first["color"] == list(tmap.class_colors[0])

    # Cleared (one undo step per change), then imported: the same labels come back.
    window.select_patch(2, 3)
    press(qtbot, window, Qt.Key.Key_Delete)
    window.labelling.select_cells([(0, 0), (1, 1)])
    press(qtbot, window, Qt.Key.Key_Delete)
    assert len(window.state.labels) == 0
    window.ask_open_file = lambda title, directory, filters: str(out)
    window.import_labels_action.trigger()
    assert {lab.box: lab.name for lab in window.state.labels} == before
    assert stored(store, window) == before
    assert "3 labelled patches from 3 annotations" in window.statusBar().currentMessage()
    assert window.labelling.layer.count() == 3
    assert dialogs == []


def test_importing_unknown_classes_is_refused_by_name(qtbot, mapped, tmp_path, dialogs):
    window, _ = mapped
    square = [[[0, 0], [150, 0], [150, 150], [0, 150], [0, 0]]]
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": square},
            "properties": {"classification": {"name": name}},
        }
        for name in ("Tumor", "Necrosis", "Granuloma")
    ]
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert window.labelling.import_geojson(path) is None
    assert len(dialogs) == 1
    kind, _, text = dialogs[0]
    assert kind == "error" and "Necrosis" in text and "Granuloma" in text
    assert len(window.state.labels) == 0


def test_label_file_actions_need_a_slide_and_a_model(qtbot, open_window, slide_path, classifier):
    window = open_window()
    assert not window.import_labels_action.isEnabled()
    assert not window.export_labels_action.isEnabled()
    window.open_slide(slide_path)
    assert not window.import_labels_action.isEnabled()  # no model yet
    window.set_classifier(classifier)
    assert window.import_labels_action.isEnabled()
    assert not window.export_labels_action.isEnabled()  # nothing to export yet
