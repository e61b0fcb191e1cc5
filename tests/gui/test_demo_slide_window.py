"""The demo slide in the window: Help > Open Demo Slide, the empty window's button, the
Map panel's agreement with the true classes, and the data's credit in the About box."""

from __future__ import annotations

import re

import numpy as np
import pytest
from viewer_support import write_strip_tiff

from histoviewer.classes import class_colors, class_names
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.model.info import ModelInfo
from histoviewer.slide.demo_slide import demo_slide_path, truth_for_slide


@pytest.fixture(autouse=True)
def no_shipped_model(monkeypatch):
    monkeypatch.setattr("histoviewer.gui.mainwindow.find_shipped_models", lambda: [])


@pytest.fixture
def demo():
    path = demo_slide_path()
    assert path is not None, "resources/demo holds no demo slide: python tools/make_demo_slide.py"
    return path


def truth_map(window, stride: int | None = None) -> TissueMap:
    """A map of the open slide at the recipe's scale, every patch classified as its true
    class (a recipe grid on the demo slide is the truth's grid)."""
    grid = make_grid(window.slide, ModelInfo.recipe(), stride=stride)
    tmap = TissueMap.empty(grid, class_names(), class_colors(), mpp=window.slide.mpp)
    truth = truth_for_slide(window.slide.path)
    labels = truth.grid if stride is None else np.zeros((grid.rows, grid.cols), int)
    for (r, c), label in np.ndenumerate(labels):
        probs = np.full(len(class_names()), 0.01, np.float32)
        probs[label] = 0.93
        tmap.probs[r, c] = probs
        tmap.state[r, c] = CLASSIFIED
    return tmap


def test_open_demo_slide_is_in_the_help_menu_and_the_empty_window(qtbot, make_window, demo):
    window = make_window()
    help_menu = window.menuBar().actions()[-1].menu()
    assert window.open_demo_action in help_menu.actions()
    buttons = window.view.empty_hint.buttons()
    assert window.open_demo_action in [b.defaultAction() for b in buttons]
    assert window.open_demo_action.isEnabled()
    assert "true classes" in window.open_demo_action.toolTip()
    window.open_demo_action.trigger()
    assert window.slide is not None and window.slide.path == demo
    assert window.windowTitle().startswith(demo.name)
    assert not window.view.empty_hint.isVisible()
    assert "Map Tissue" in window.statusBar().currentMessage()


def test_without_the_demo_slide_the_action_is_disabled_and_says_why(
    qtbot, make_window, monkeypatch
):
    monkeypatch.setattr("histoviewer.gui.actions.demo_slide_path", lambda: None)
    monkeypatch.setattr("histoviewer.gui.mainwindow.demo_slide_path", lambda: None)
    window = make_window()
    assert not window.open_demo_action.isEnabled()
    assert "not installed" in window.open_demo_action.toolTip()
    errors = []
    window.show_error = lambda title, text: errors.append(text)
    assert window.open_demo_slide() is False
    assert window.slide is None
    assert "not installed" in errors[0] and "demo-crc-kather2016.tif" in errors[0]


def test_the_map_panel_gives_the_agreement_with_the_true_classes(qtbot, make_window, demo):
    window = make_window()
    assert window.open_demo_slide()
    legend = window.legend
    assert legend.agreement_text() == ""  # no map yet
    tmap = truth_map(window)
    truth = truth_for_slide(demo)
    # One tumour patch called stroma; one empty-glass patch skipped as background.
    r, c = np.argwhere(truth.grid == class_names().index("tumor"))[0]
    tmap.probs[r, c] = tmap.probs[r, c][::-1].copy()
    tmap.probs[r, c, class_names().index("stroma")] = 0.99
    glass = np.argwhere(truth.grid == class_names().index("empty"))[0]
    tmap.state[tuple(glass)] = BACKGROUND
    tmap.probs[tuple(glass)] = np.nan
    tmap.complete = True
    window.state.set_map(tmap)
    total = truth.grid.size
    expected = f"{100 * (total - 1) / total:.1f} %"
    assert legend.agreement_text() == (
        f"Agreement with the true classes: {expected} ({total - 1} of {total} patches)"
    )
    assert legend.agreement_label.isVisibleTo(legend)
    tumours = truth.counts()["tumor"]
    # The tooltip's table, one cell per field: the recall of each true class.
    cells = [t for t in re.split(r"<[^>]+>", legend.agreement_label.toolTip()) if t.strip()]
    cells = [t.replace("&nbsp;", " ") for t in cells]
    row = cells.index("Tumour epithelium")
    assert cells[row : row + 3] == [
        "Tumour epithelium",
        f"{100 * (tumours - 1) / tumours:.1f} %",
        f"{tumours - 1} of {tumours}",
    ]
    assert cells[cells.index("Simple stroma") + 1] == "100.0 %"
    window.close_slide()
    assert legend.agreement_text() == ""


def test_the_agreement_follows_a_map_being_made(qtbot, make_window, demo):
    window = make_window()
    window.open_demo_slide()
    full = truth_map(window)
    tmap = TissueMap.empty(
        make_grid(window.slide, ModelInfo.recipe()), class_names(), class_colors(), mpp=0.495
    )
    window.state.set_map(tmap, live=True)
    assert "no patch classified yet" in window.legend.agreement_text()
    tmap.probs[:2], tmap.state[:2] = full.probs[:2], full.state[:2]
    window.state.map_grew()
    cols = tmap.cols
    assert window.legend.agreement_text() == (
        f"Agreement with the true classes: 100.0 % ({2 * cols} of {2 * cols} patches)"
    )
    assert "not classified yet" in window.legend.agreement_label.toolTip()


def test_a_map_on_another_grid_is_not_compared_and_says_why(qtbot, make_window, demo):
    window = make_window()
    window.open_demo_slide()
    window.state.set_map(truth_map(window, stride=75))
    text = window.legend.agreement_text()
    assert text.startswith("Agreement with the true classes: – (The map cannot be compared")
    assert "stride of 150 px" in text
    assert window.legend.agreement() is None


def test_a_slide_without_true_classes_shows_no_agreement(qtbot, make_window, tmp_path):
    window = make_window()
    window.open_slide(write_strip_tiff(tmp_path / "plain.tif", 600, 450))
    window.state.set_map(truth_map_plain(window))
    assert window.legend.summary_text()
    assert window.legend.agreement_text() == ""
    assert window.legend.agreement_label.isHidden()


def truth_map_plain(window) -> TissueMap:
    grid = make_grid(window.slide, ModelInfo.recipe())
    tmap = TissueMap.empty(grid, class_names(), class_colors(), mpp=window.slide.mpp)
    tmap.state[:] = BACKGROUND
    return tmap


def test_a_damaged_truth_file_is_said_in_the_map_panel(qtbot, make_window, tmp_path):
    slide = write_strip_tiff(tmp_path / "case.tif", 600, 450)
    (tmp_path / "case.truth.json").write_text("{ not json")
    window = make_window()
    assert window.open_slide(slide)  # the slide itself is fine
    window.state.set_map(truth_map_plain(window))
    assert "case.truth.json is damaged" in window.legend.agreement_text()


def test_the_about_box_credits_the_kather_data(qtbot, make_window):
    window = make_window()
    shown = []
    window.show_info = lambda title, text: shown.append(text)
    window.show_about()
    assert "Kather" in shown[0] and "2016" in shown[0]
    assert "CC BY 4.0" in shown[0] and "10.5281/zenodo.53169" in shown[0]
    assert "demo slide" in shown[0]
