"""The Review panel (the patches the model is least sure of), Uncertain Only and
confidence shading by uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from histoviewer.classes import class_colors, class_label, class_names
from histoviewer.gui.overlay import MIN_SHADED_ALPHA, colorize
from histoviewer.gui.review import REVIEW_LIMIT, review_queue
from histoviewer.labels.store import LabelSet, cell_box
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.slide import ArraySlide

ROWS, COLS, PATCH = 4, 6, 150
NAMES, COLORS = class_names(), class_colors()


def mixed(best: int, spread: float, n: int = len(NAMES)) -> np.ndarray:
    """Probabilities: class ``best`` mixed with ``spread`` of the uniform (0: certain)."""
    p = np.full(n, spread / n)
    p[best] += 1.0 - spread
    return p


def review_map(seed: int = 0) -> TissueMap:
    """4 x 6 patches of 150 px: every patch classified with its own uncertainty but
    (3, 4) background and (3, 5) pending."""
    grid = PatchGrid(rows=ROWS, cols=COLS, patch_size=PATCH, stride=PATCH)
    tmap = TissueMap.empty(grid, NAMES, COLORS, mpp=0.495)
    rng = np.random.default_rng(seed)
    spreads = rng.permutation(np.linspace(0.02, 0.98, ROWS * COLS)).reshape(ROWS, COLS)
    for r in range(ROWS):
        for c in range(COLS):
            tmap.probs[r, c] = mixed((r + c) % len(NAMES), spreads[r, c])
            tmap.state[r, c] = CLASSIFIED
    tmap.probs[3, 4:] = np.nan
    tmap.state[3, 4] = BACKGROUND
    tmap.state[3, 5] = 0
    return tmap


@pytest.fixture
def reviewing(make_window):
    """A window showing an in-memory slide, its review_map, empty labels, the Review
    panel in front and zoomed in so that the view can follow a patch."""
    window = make_window(restore_model=False)
    window.set_slide(ArraySlide(np.full((ROWS * PATCH, COLS * PATCH, 3), 220, np.uint8)))
    window.state.set_labels(LabelSet({"path": "in-memory"}))
    tmap = review_map()
    window.state.set_map(tmap)
    window.review_dock.raise_()
    window.view.set_zoom(window.view.fit_zoom() * 4)
    window.review.list.setFocus()
    return window, window.review, tmap


def unlabelled_by_uncertainty(tmap: TissueMap, skip=()) -> list[tuple[int, int]]:
    unsure = tmap.uncertainty()
    cells = [
        (r, c)
        for r in range(tmap.rows)
        for c in range(tmap.cols)
        if np.isfinite(unsure[r, c]) and (r, c) not in skip
    ]
    return sorted(cells, key=lambda rc: -unsure[rc])


def view_centre(window) -> tuple[float, float]:
    centre = window.view.visible_rect().center()
    return centre.x(), centre.y()


def test_the_list_holds_unlabelled_patches_most_uncertain_first(reviewing):
    window, panel, tmap = reviewing
    expected = unlabelled_by_uncertainty(tmap)
    assert [item.cell for item in panel.items()] == expected
    unsure = [item.uncertainty for item in panel.items()]
    assert unsure == sorted(unsure, reverse=True)
    first = panel.items()[0]
    assert first.cls == int(np.argmax(tmap.probs[first.cell]))
    assert first.probability == pytest.approx(tmap.probs[first.cell].max())
    assert panel.list.topLevelItem(0).text(1) == class_label(NAMES[first.cls])

    # Labelled anywhere (here: the two most uncertain, one by its centre) they drop out.
    top, second = expected[:2]
    window.state.label_boxes([cell_box(tmap, *top)], NAMES[0])
    x, y, w, _ = tmap.patch_box(*second)
    window.state.label_boxes([(x + 10, y + 10, w - 20)], NAMES[1])
    assert [item.cell for item in panel.items()] == expected[2:]
    n_uncertain = int(np.sum(tmap.uncertainty()[np.isfinite(tmap.uncertainty())] >= 0.5)) - 2
    assert panel.header.text() == f"{n_uncertain} uncertain patches of 22 · 2 labelled"


def test_the_queue_keeps_the_most_uncertain_when_there_are_more(reviewing):
    _, _, tmap = reviewing
    queue = review_queue(tmap, {(0, 0)}, limit=5)
    assert [item.cell for item in queue.items] == unlabelled_by_uncertainty(tmap, {(0, 0)})[:5]
    assert queue.classified == 22 and queue.labelled == 1
    assert REVIEW_LIMIT == 200


def test_enter_labels_the_patch_with_the_models_class_and_moves_on(reviewing, qtbot):
    window, panel, tmap = reviewing
    first, second = panel.items()[:2]
    panel.step_to(0)
    assert window.state.selection == first.cell
    said = []
    window.state.message.connect(lambda text, ms: said.append(text))
    qtbot.keyClick(panel.list, Qt.Key.Key_Return)
    labels = window.state.labels
    assert labels.get(cell_box(tmap, *first.cell)) == NAMES[first.cls]
    assert said and said[-1].startswith(f"Patch {first.row + 1}, {first.col + 1} labelled ")
    assert labels.colors[NAMES[first.cls]] == COLORS[first.cls]
    assert panel.current() == second
    assert window.state.selection == second.cell
    assert first.cell not in [item.cell for item in panel.items()]
    assert window.state.undo_labels()  # one undo step: the patch is back in the list
    assert panel.items()[0] == first


def test_a_number_key_labels_the_patch_with_that_class(reviewing, qtbot):
    window, panel, tmap = reviewing
    first = next(item for item in panel.items() if item.cls != 2)
    panel.step_to(panel.items().index(first))
    zoom = window.view.zoom()
    qtbot.keyClick(panel.list, Qt.Key.Key_3)
    assert window.state.labels.get(cell_box(tmap, *first.cell)) == NAMES[2]
    assert window.view.zoom() == zoom  # not View > Magnification's "3" (20x)
    assert first.cell not in [item.cell for item in panel.items()]


def test_down_moves_the_selection_and_the_view_with_it(reviewing, qtbot):
    window, panel, tmap = reviewing
    items = panel.items()
    panel.step_to(0)
    qtbot.keyClick(panel.list, Qt.Key.Key_Down)
    assert panel.current() == items[1]
    assert window.state.selection == items[1].cell
    x, y, w, h = tmap.patch_box(*items[1].cell)
    assert view_centre(window) == pytest.approx((x + w / 2, y + h / 2), abs=1.5)
    qtbot.keyClick(panel.list, Qt.Key.Key_Up)
    assert window.state.selection == items[0].cell


def test_the_list_follows_a_patch_clicked_on_the_slide(reviewing):
    window, panel, _ = reviewing
    target = panel.items()[5]
    centre = view_centre(window)
    window.select_patch(*target.cell)
    assert panel.current() == target
    assert view_centre(window) == pytest.approx(centre)  # a click does not move the view


def test_a_map_filling_in_refreshes_the_list_a_few_times_a_second(reviewing, qtbot):
    window, panel, tmap = reviewing
    window.state.set_map(tmap, live=True)
    tmap.probs[3, 5] = np.full(len(NAMES), 1 / len(NAMES))  # as unsure as can be
    tmap.state[3, 5] = CLASSIFIED
    for _ in range(20):
        window.state.map_grew()
    assert (3, 5) not in [item.cell for item in panel.items()]  # not on every batch
    qtbot.waitUntil(lambda: panel.items()[0].cell == (3, 5), timeout=2000)


def test_the_panel_says_when_there_is_nothing_to_review(reviewing):
    window, panel, tmap = reviewing
    cells = [item.cell for item in panel.items()]
    window.state.label_boxes([cell_box(tmap, *cell) for cell in cells], NAMES[0])
    assert panel.items() == []
    assert panel.header.text() == "All 22 classified patches are labelled."
    assert panel.list.isHidden()
    window.state.set_map(None)
    assert panel.header.text() == "Map the slide to review uncertain patches."


def test_uncertain_only_hides_the_patches_the_model_is_sure_of(reviewing):
    window, panel, tmap = reviewing
    unsure = tmap.uncertainty()
    classified = np.isfinite(unsure)
    assert (window.overlay.rgba()[..., 3][classified] > 0).all()

    window.uncertain_action.trigger()
    assert panel.uncertain_only.isChecked()
    alpha = window.overlay.rgba()[..., 3]
    assert (alpha[classified & (unsure < 0.5)] == 0).all()
    assert (alpha[classified & (unsure >= 0.5)] > 0).all()
    assert (classified & (unsure < 0.5)).any() and (classified & (unsure >= 0.5)).any()

    panel.set_threshold(0.8)
    alpha = window.overlay.rgba()[..., 3]
    assert (alpha[classified & (unsure < 0.8)] == 0).all()
    assert (alpha[classified & (unsure >= 0.8)] > 0).all()

    panel.uncertain_only.setChecked(False)
    assert not window.uncertain_action.isChecked()
    assert (window.overlay.rgba()[..., 3][classified] > 0).all()


def test_uncertain_only_and_its_threshold_are_remembered(reviewing, make_window):
    window, panel, _tmap = reviewing
    window.uncertain_action.trigger()
    panel.set_threshold(0.7)
    assert window.state.view_settings.uncertain_only
    assert window.state.view_settings.uncertain_threshold == pytest.approx(0.7)
    again = make_window(restore_model=False)  # the same settings file
    assert again.uncertain_action.isChecked() and again.review.uncertain_only.isChecked()
    assert again.review.threshold_value() == pytest.approx(0.7)
    assert again.overlay.uncertain_only() == pytest.approx(0.7)


def test_confidence_shading_follows_the_uncertainty():
    grid = PatchGrid(rows=1, cols=3, patch_size=PATCH, stride=PATCH)
    tmap = TissueMap.empty(grid, NAMES, COLORS, mpp=0.495)
    tied = np.zeros(len(NAMES))
    tied[:2] = 0.5  # two classes tied: top probability 0.5, but entropy only 1/3
    tmap.probs[0] = [tied, mixed(0, 0.46), mixed(1, 0.0)]  # the second: top 0.6, spread out
    tmap.state[0] = CLASSIFIED
    unsure = tmap.uncertainty()[0]
    assert unsure[0] < unsure[1] and tmap.probs[0, 0].max() < tmap.probs[0, 1].max()
    alpha = colorize(tmap, confidence_shading=True)[0, :, 3].astype(float)
    expected = 255 * (MIN_SHADED_ALPHA + (1 - MIN_SHADED_ALPHA) * (1 - unsure))
    np.testing.assert_allclose(alpha, expected, atol=1)
    assert alpha[0] > alpha[1]  # the tie is less unsure than the spread-out 60 %
    assert alpha[2] == 255


def test_the_shading_and_the_review_panel_use_the_same_number(reviewing):
    window, panel, _ = reviewing
    window.set_confidence_shading(True)
    alpha = window.overlay.rgba()[..., 3]
    in_list_order = [int(alpha[item.cell]) for item in panel.items()]  # most unsure first
    assert in_list_order == sorted(in_list_order)
    assert in_list_order[0] < in_list_order[-1]
