"""Choosing solo and the probability heatmap: a click on a class's name, a row's
right-click menu, the Map panel's Show box, View menu submenus and Esc; what they set
in the ViewSettings and what the overlay and panel show."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QMenu
from viewer_support import write_strip_tiff

from histoviewer.classes import class_colors, class_names
from histoviewer.gui import settings as config
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap


def eight_class_map() -> TissueMap:
    """4 x 4 patches, each class twice (class i at cells 2i and 2i + 1)."""
    grid = PatchGrid(rows=4, cols=4, patch_size=100, stride=100)
    names = class_names()
    tmap = TissueMap.empty(grid, names, class_colors(), mpp=0.5)
    for i in range(16):
        probs = np.full(8, 0.02, np.float32)
        probs[i // 2] = 0.86
        tmap.probs[divmod(i, 4)] = probs
        tmap.state[divmod(i, 4)] = CLASSIFIED
    return tmap


def other_model_map() -> TissueMap:
    grid = PatchGrid(rows=1, cols=2, patch_size=100, stride=100)
    tmap = TissueMap.empty(grid, ["a", "b"], [(200, 0, 0), (0, 200, 0)], mpp=0.5)
    tmap.probs[0, 0] = [0.9, 0.1]
    tmap.state[0, 0] = CLASSIFIED
    return tmap


@pytest.fixture
def window(make_window):
    window = make_window(restore_model=False)
    window.state.set_map(eight_class_map())
    return window


def view(window):
    v = window.state.view_settings
    return v.solo_class, v.heatmap_class


def drawn_classes(window) -> set[int]:
    """The classes whose patches the class texture draws."""
    alpha = window.overlay.rgba()[..., 3].ravel()
    return {i // 2 for i in range(16) if alpha[i] > 0}


def menu_action(menu: QMenu, text: str):
    menu.aboutToShow.emit()  # menus are filled when shown
    found = [a for a in menu.actions() if a.text().replace("&", "").split("\t")[0] == text]
    assert found, [a.text() for a in menu.actions()]
    return found[0]


def test_a_click_on_a_class_name_toggles_solo(qtbot, window):
    legend = window.legend
    legend.name_label(3).setFocus()  # lymphocytes
    qtbot.mouseClick(legend.name_label(3), Qt.MouseButton.LeftButton)
    assert view(window) == ("lympho", None)
    assert drawn_classes(window) == {3}
    assert window.overlay.isVisible()
    assert legend.name_label(3).font().bold() and not legend.name_label(0).font().bold()
    assert "Showing only Lymphocytes" in window.statusBar().currentMessage()
    assert window.show_all_classes_action.isEnabled()
    qtbot.mouseClick(legend.name_label(0), Qt.MouseButton.LeftButton)  # another class
    assert view(window) == ("tumor", None)
    qtbot.mouseClick(legend.name_label(0), Qt.MouseButton.LeftButton)  # the same: all again
    assert view(window) == (None, None)
    assert drawn_classes(window) == set(range(8))
    assert not window.show_all_classes_action.isEnabled()


def test_solo_overrides_the_ticks_without_changing_them(window):
    legend = window.legend
    legend.set_view_mode(None, None)
    row_box = legend.findChildren(type(legend.show_overlay))
    boxes = [b for b in row_box if b not in (legend.show_overlay, legend.shading)]
    boxes[1].setChecked(False)  # hide simple stroma, and adipose
    boxes[6].setChecked(False)
    assert drawn_classes(window) == {0, 2, 3, 4, 5, 7}
    window.show_only_class("stroma")  # solo a hidden class: it is drawn
    assert drawn_classes(window) == {1}
    assert legend.class_visibility() == [True, False, True, True, True, True, False, True]
    window.show_only_class(None)
    assert drawn_classes(window) == {0, 2, 3, 4, 5, 7}  # the ticks rule again


def test_a_rows_menu_offers_solo_heatmap_and_all(window):
    legend = window.legend
    menu = legend.row_menu(5)  # normal mucosa
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert texts == [
        "Show Only This Class",
        "Show All Classes",
        "Probability Heatmap of This Class",
    ]
    actions = {a.text(): a for a in menu.actions()}
    assert not actions["Show All Classes"].isEnabled()  # all are shown
    actions["Probability Heatmap of This Class"].trigger()
    assert view(window) == (None, "mucosa")
    assert window.overlay.heatmap_class() == "mucosa" and not window.overlay.heatmap().isNull()
    assert not legend.heatmap_key.isHidden()
    assert legend.color_bar_title.text() == "Probability of Normal mucosa"
    assert legend.show_box.currentData() == "mucosa"
    menu.deleteLater()
    menu = legend.row_menu(5)
    actions = {a.text(): a for a in menu.actions()}
    assert actions["Probability Heatmap of This Class"].isChecked()
    actions["Show Only This Class"].trigger()  # solo leaves the heatmap
    assert view(window) == ("mucosa", None)
    assert window.overlay.heatmap().isNull() and legend.heatmap_key.isHidden()
    menu.deleteLater()
    menu = legend.row_menu(2)
    {a.text(): a for a in menu.actions()}["Show All Classes"].trigger()
    assert view(window) == (None, None)
    menu.deleteLater()


def test_the_show_box_chooses_the_heatmap(qtbot, window):
    box = window.legend.show_box
    assert box.currentText() == "Classes"
    assert box.itemText(1) == "Probability: Tumour epithelium" and box.count() == 9
    window.show_only_class("adipose")
    box.activated.emit(1)  # the user picks a class
    assert view(window) == (None, "tumor")
    assert "probability of Tumour epithelium" in window.statusBar().currentMessage()
    # The table is dimmed but for the heatmap's class.
    assert window.legend.name_label(1).styleSheet() and not window.legend.name_label(0).styleSheet()
    box.activated.emit(0)
    assert view(window) == (None, None)
    assert not window.legend.name_label(1).styleSheet()


def test_the_view_menu_lists_the_classes(window):
    assert window.solo_menu.isEnabled() and window.heatmap_menu.isEnabled()
    menu_action(window.solo_menu, "Complex stroma").trigger()
    assert view(window) == ("complex", None)
    assert menu_action(window.solo_menu, "Complex stroma").isChecked()
    assert not menu_action(window.solo_menu, "All Classes").isChecked()
    menu_action(window.heatmap_menu, "Lymphocytes").trigger()
    assert view(window) == (None, "lympho")
    assert menu_action(window.heatmap_menu, "Lymphocytes").isChecked()
    menu_action(window.heatmap_menu, "Off: Class Colours").trigger()
    assert view(window) == (None, None)
    menu_action(window.solo_menu, "Debris / mucus").trigger()
    menu_action(window.solo_menu, "All Classes").trigger()
    assert view(window) == (None, None)
    window.state.set_map(None)
    assert not window.solo_menu.isEnabled() and not window.heatmap_menu.isEnabled()


def test_esc_shows_all_classes_once_nothing_else_wants_it(qtbot, make_window, tmp_path):
    window = make_window(restore_model=False)
    assert window.open_slide(write_strip_tiff(tmp_path / "slide.tif", 400, 400))
    window.state.set_map(eight_class_map())  # 4 x 4 patches of 100 px
    window.activateWindow()
    window.view.setFocus()
    qtbot.waitUntil(window.view.hasFocus)
    qtbot.keyClick(window.view, Qt.Key.Key_Escape)  # nothing to leave: nothing happens
    assert view(window) == (None, None)
    window.show_only_class("tumor")
    window.labelling.select_cells([(0, 0), (0, 1)])
    qtbot.keyClick(window.view, Qt.Key.Key_Escape)  # first: the selection goes
    assert window.labelling.selected_cells() == [] and view(window) == ("tumor", None)
    window.view.start_region_selection()  # Map Region: Esc cancels choosing the region
    qtbot.keyClick(window.view, Qt.Key.Key_Escape)
    assert not window.view.is_selecting_region() and view(window) == ("tumor", None)
    qtbot.keyClick(window.view, Qt.Key.Key_Escape)  # then: solo ends
    assert view(window) == (None, None)
    window.show_heatmap("stroma")
    window.show_all_classes_action.trigger()
    assert view(window) == (None, None)
    assert window.show_all_classes_action.shortcut().toString() == "Esc"


def test_a_map_without_the_class_ends_solo_and_heatmap(window):
    window.show_only_class("lympho")
    window.state.set_map(eight_class_map())  # the same model again: solo stays
    assert view(window) == ("lympho", None) and drawn_classes(window) == {3}
    window.state.set_map(None)  # no map: nothing to decide
    assert view(window) == ("lympho", None)
    window.state.set_map(other_model_map())
    assert view(window) == (None, None)
    assert window.legend.solo_class() is None
    window.state.set_map(eight_class_map())
    window.show_heatmap("tumor")
    window.state.set_map(other_model_map())
    assert view(window) == (None, None) and window.overlay.heatmap().isNull()


def test_the_window_never_saves_solo_or_heatmap(window, settings):
    window.state.update_view_settings(opacity=0.6)
    window.show_only_class("tumor")
    window.shutdown()
    loaded = config.load_view_settings(settings)
    assert loaded.opacity == pytest.approx(0.6) and loaded.solo_class is None
    window.show_heatmap("tumor")
    window.shutdown()
    assert config.load_view_settings(settings).heatmap_class is None
    assert isinstance(settings, QSettings)


def test_without_a_map_there_is_nothing_to_choose(qtbot, make_window):
    window = make_window(restore_model=False)
    legend = window.legend
    legend.show_box.setCurrentIndex(2)  # the user picks a heatmap
    legend.show_box.activated.emit(2)
    assert view(window) == (None, None)
    assert legend.show_box.currentIndex() == 0 and legend.heatmap_key.isHidden()
    assert window.statusBar().currentMessage().startswith("No map to show yet")
    qtbot.mouseClick(legend.name_label(0), Qt.MouseButton.LeftButton)
    assert view(window) == (None, None) and not legend.name_label(0).font().bold()
