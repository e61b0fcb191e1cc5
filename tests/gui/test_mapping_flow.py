"""Mapping in the viewer: what is in view first, regions, and nothing thrown away.

The patches in view are classified first and the order follows the view; Map Region
and Map Current View map part of the slide into its partial map; a cancelled, closed,
replaced or quit job keeps its partial map in the cache and Map Tissue continues it;
the progress text keeps moving while no batch lands.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from viewer_support import (
    MAP_TIMEOUT,
    gated_classifier,
    gated_mapping,
    on_cpu,
    run_mapping,
    tiny_classifier,
    write_strip_tiff,
)

from histoviewer.gui.mainwindow import MainWindow
from histoviewer.gui.mapping_controller import progress_text
from histoviewer.mapping.engine import BackgroundFound, BatchResult, MapProgress, map_slide
from histoviewer.mapping.summary_text import partial_map_text as partial_text
from histoviewer.mapping.tissue_map import CLASSIFIED, PENDING, TissueMap
from histoviewer.slide import open_slide

KEEP_AND_QUIT = "Keep Partial Map and Quit"
KEEP_AND_OPEN = "Keep Partial Map and Open"


@pytest.fixture
def big_slide(tmp_path):
    """1500 x 1500 px: 10 x 10 patches, glass in the top-left corner and the middle."""
    return write_strip_tiff(tmp_path / "big.tif", 1500, 1500)


@pytest.fixture
def slide_path(tmp_path):
    return write_strip_tiff(tmp_path / "slide.tif", 600, 600)


def record_patches(window: MainWindow) -> list[tuple[int, int]]:
    """The classified patches the window receives from mapping jobs, in the order they
    arrive (not the background found before the first batch)."""
    seen: list[tuple[int, int]] = []

    def record(job: int, batch: BatchResult | BackgroundFound) -> None:
        if isinstance(batch, BatchResult):
            seen.extend(zip(batch.rows.tolist(), batch.cols.tolist(), strict=True))

    window.mapping.runner.partial.connect(record)
    return seen


def centres_inside(tmap: TissueMap, rect: QRectF) -> set[tuple[int, int]]:
    """Classified patches whose centre lies in ``rect`` (level-0 px)."""
    inside = set()
    for r, c in np.argwhere(tmap.state == CLASSIFIED):
        x, y, w, h = tmap.patch_box(int(r), int(c))
        if rect.contains(QPointF(x + w / 2, y + h / 2)):
            inside.add((int(r), int(c)))
    return inside


def boxes_touching(tmap: TissueMap, rect: QRectF) -> set[tuple[int, int]]:
    """Patches (any state) whose box overlaps ``rect`` (level-0 px)."""
    touching = set()
    for r in range(tmap.rows):
        for c in range(tmap.cols):
            if QRectF(*tmap.patch_box(r, c)).intersects(rect):
                touching.add((r, c))
    return touching


def visible_area(window: MainWindow) -> QRectF:
    return window.view.visible_rect().intersected(window.view.slide_rect())


def zoom_to(window: MainWindow, x: float, y: float) -> None:
    """Zoom in 3 x on the level-0 point (x, y)."""
    window.view.set_zoom(window.view.fit_zoom() * 3)
    window.view.center_on(x, y)


def progress_hidden(window: MainWindow) -> bool:
    widgets = (window.progress, window.progress_label, window.cancel_button)
    return all(w.isHidden() for w in widgets) and window.progress_label.text() == ""


def drag(window: MainWindow, start: QPointF, end: QPointF) -> None:
    """A left-button drag on the slide view from ``start`` to ``end`` (viewport px)."""
    viewport = window.view.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    steps = [
        (QEvent.Type.MouseButtonPress, start, left, left),
        (QEvent.Type.MouseMove, (start + end) / 2, none, left),
        (QEvent.Type.MouseMove, end, none, left),
        (QEvent.Type.MouseButtonRelease, end, left, none),
    ]
    for kind, pos, button, buttons in steps:
        global_pos = QPointF(viewport.mapToGlobal(pos.toPoint()))
        event = QMouseEvent(kind, pos, global_pos, button, buttons, Qt.KeyboardModifier.NoModifier)
        window.view.viewportEvent(event)


# --- view first ---------------------------------------------------------------------------


def test_patches_in_view_are_classified_first(qtbot, make_window, big_slide):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=4))
    window.open_slide(big_slide)
    window.set_classifier(tiny_classifier())
    zoom_to(window, 1350, 1350)  # the bottom-right corner: last in row order
    area = visible_area(window)
    seen = record_patches(window)
    tmap = run_mapping(qtbot, window)

    assert tmap.complete and len(seen) == tmap.classified_count
    in_view = centres_inside(tmap, area)
    assert 0 < len(in_view) < len(seen) / 3
    assert set(seen[: len(in_view)]) == in_view
    # Then outward: the ring of patches around the view before those far from it.
    step = tmap.stride
    near = centres_inside(tmap, area.adjusted(-step, -step, step, step)) - in_view
    far = centres_inside(tmap, QRectF(0, 0, 700, 700))
    assert near and far
    assert max(seen.index(rc) for rc in near) < min(seen.index(rc) for rc in far)


def test_panning_moves_the_priority_to_the_new_view(qtbot, make_window, big_slide):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=4))
    window.open_slide(big_slide)
    classifier, gate = gated_classifier(free_batches=1)
    window.set_classifier(classifier)
    zoom_to(window, 1350, 150)  # the top-right corner
    seen = record_patches(window)
    window.map_tissue()
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=MAP_TIMEOUT)  # first batch painted

    window.view.center_on(150, 1350)  # pan to the bottom-left: the farthest corner
    new_area = visible_area(window)
    panned_at = len(seen)
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        gate.set()
    tmap = blocker.args[0]
    after = seen[panned_at:]
    in_new_view = centres_inside(tmap, new_area)
    assert len(in_new_view) >= 4
    # Batches chosen before the pan (the one held back and three read ahead, 4 patches
    # each) may come first; then the new view, although it is the farthest corner
    # from where mapping began and last in row order.
    positions = sorted(after.index(rc) for rc in in_new_view)
    assert positions[-1] < len(in_new_view) + 4 * 4
    assert positions[-1] < len(after) / 2


# --- regions --------------------------------------------------------------------------------


def test_map_region_then_map_tissue_classifies_only_the_rest(qtbot, make_window, big_slide, cache):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=8))
    window.open_slide(big_slide)
    window.set_classifier(tiny_classifier())
    region = QRectF(100, 1100, 500, 300)  # tissue, in the lower left
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        assert window.map_tissue_region(region.x(), region.y(), region.width(), region.height())
    first = blocker.args[0]

    classified = {(int(r), int(c)) for r, c in np.argwhere(first.state == CLASSIFIED)}
    touching = boxes_touching(first, region)
    assert classified and classified <= touching
    assert not any(first.state[r, c] == PENDING for r, c in touching)  # all of it mapped
    assert not first.complete and first.pending_count > 0
    assert "Region mapped" in window.statusBar().currentMessage()
    assert window.legend.status.text() == partial_text(first)
    (saved,) = cache.root.rglob("*.npz")
    assert not TissueMap.load(saved).complete

    # Map Tissue continues the partial map: only the patches still pending.
    seen = record_patches(window)
    second = run_mapping(qtbot, window)
    assert second.complete and window.legend.status.isHidden()
    assert len(seen) == len(set(seen)) == first.pending_count
    assert not set(seen) & classified
    done = first.state == CLASSIFIED
    assert np.array_equal(second.probs[done], first.probs[done])
    assert TissueMap.load(saved).complete  # the finished map replaced the partial one


def test_map_region_by_dragging_a_rectangle_and_esc_cancels(qtbot, make_window, big_slide):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=8))
    window.open_slide(big_slide)
    window.set_classifier(tiny_classifier())

    # Esc leaves the mode without mapping.
    assert window.map_region() and window.view.is_selecting_region()
    assert "drag a rectangle" in window.statusBar().currentMessage()
    QTest.keyClick(window.view, Qt.Key.Key_Escape)
    assert not window.view.is_selecting_region() and not window.is_mapping()
    assert "cancelled" in window.statusBar().currentMessage()

    window.map_region_action.trigger()
    view = window.view
    start = view.map_from_slide(QPointF(1000, 100))  # tissue, in the upper right
    end = view.map_from_slide(QPointF(1400, 400))
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        drag(window, start, end)
        assert window.is_mapping()
    tmap = blocker.args[0]
    band = QRectF(view.map_to_slide(start), view.map_to_slide(end))
    classified = {(int(r), int(c)) for r, c in np.argwhere(tmap.state == CLASSIFIED)}
    assert classified and classified <= boxes_touching(tmap, band)
    assert not view.is_selecting_region()


def test_map_current_view_maps_what_is_visible(qtbot, make_window, big_slide):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=8))
    window.open_slide(big_slide)
    window.set_classifier(tiny_classifier())
    zoom_to(window, 1200, 1200)
    area = visible_area(window)
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        window.map_view_action.trigger()
    tmap = blocker.args[0]
    classified = {(int(r), int(c)) for r, c in np.argwhere(tmap.state == CLASSIFIED)}
    touching = boxes_touching(tmap, area)
    assert classified and classified <= touching and not tmap.complete
    assert not any(tmap.state[r, c] == PENDING for r, c in touching)


# --- nothing thrown away ----------------------------------------------------------------


def test_cancel_then_map_tissue_gives_the_uninterrupted_map(qtbot, make_window, slide_path):
    window, classifier, gate, _job = gated_mapping(qtbot, make_window, slide_path)
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        window.cancel_mapping()
        gate.set()
    partial = blocker.args[0]
    assert not partial.complete and partial.classified_count >= 2

    seen = record_patches(window)
    whole = run_mapping(qtbot, window)
    assert whole.complete and len(seen) == partial.pending_count

    with open_slide(slide_path) as slide:
        reference = map_slide(slide, classifier, batch_size=2, device="cpu")
    assert np.array_equal(whole.state, reference.state)
    assert np.array_equal(whole.probs, reference.probs, equal_nan=True)


def test_closing_the_slide_keeps_the_partial_map_and_reopening_shows_it(
    qtbot, make_window, slide_path, cache
):
    window, _classifier, gate, job = gated_mapping(qtbot, make_window, slide_path)

    with qtbot.waitSignal(window.mapping.runner.finished, timeout=MAP_TIMEOUT) as blocker:
        window.close_slide()  # no question: closing is what the user asked for
        assert progress_hidden(window) and not window.is_mapping()
        gate.set()
    assert blocker.args == [job]
    assert "Mapping stopped" in window.statusBar().currentMessage()
    (saved,) = cache.root.rglob("*.npz")
    assert not TissueMap.load(saved).complete

    window.open_slide(slide_path)
    shown = window.tissue_map
    assert shown is not None and not shown.complete and shown.classified_count >= 2
    assert window.legend.status.text() == partial_text(shown)
    assert "Partial map" in window.statusBar().currentMessage()
    assert "Continue" in window.map_action.statusTip()
    assert window.remap_action.isEnabled()

    seen = record_patches(window)
    whole = run_mapping(qtbot, window)
    assert whole.complete and len(seen) == shown.pending_count


def test_quitting_while_mapping_asks_and_keeps_the_partial_map(
    qtbot, make_window, slide_path, cache
):
    window, classifier, gate, _job = gated_mapping(qtbot, make_window, slide_path)

    asked = []
    window.ask_proceed = lambda title, text, proceed: asked.append(proceed) or False
    assert not window.close()  # "Cancel": the window stays and keeps mapping
    assert asked == [KEEP_AND_QUIT] and window.isVisible() and window.is_mapping()

    window.ask_proceed = lambda title, text, proceed: asked.append(proceed) or True
    threading.Timer(0.3, gate.set).start()  # the batch in flight ends while close() waits
    assert window.close()
    assert asked == [KEEP_AND_QUIT, KEEP_AND_QUIT]
    (saved,) = cache.root.rglob("*.npz")
    kept = TissueMap.load(saved)
    assert not kept.complete and kept.classified_count >= 2

    again = make_window()
    again.set_classifier(classifier)
    again.open_slide(slide_path)
    assert not again.tissue_map.complete
    assert np.array_equal(again.tissue_map.state, kept.state)
    assert again.legend.status.text().startswith("Partial map:")


def test_opening_another_slide_while_mapping_asks_and_leaves_no_stale_progress(
    qtbot, make_window, slide_path, tmp_path, cache
):
    window, _classifier, gate, job = gated_mapping(qtbot, make_window, slide_path)
    other = write_strip_tiff(tmp_path / "other.tif", 450, 450, seed=3)

    asked = []
    window.ask_proceed = lambda title, text, proceed: asked.append(proceed) or False
    assert not window.open_slide(other)  # stays on the slide, still mapping
    assert window.slide.path.name == "slide.tif" and window.is_mapping()
    assert window.progress.isVisible()

    window.ask_proceed = lambda title, text, proceed: asked.append(proceed) or True
    assert window.open_slide(other)
    assert asked == [KEEP_AND_OPEN, KEEP_AND_OPEN]
    assert window.slide.path.name == "other.tif" and not window.is_mapping()
    assert progress_hidden(window)
    with qtbot.waitSignal(window.mapping.runner.finished, timeout=MAP_TIMEOUT) as blocker:
        gate.set()
    assert blocker.args == [job]
    qtbot.wait(50)
    assert progress_hidden(window) and window.tissue_map is None
    (saved,) = cache.root.rglob("*.npz")  # the first slide's partial map
    assert TissueMap.load(saved).slide["path"].endswith("slide.tif")


def test_a_failing_job_keeps_what_it_classified(qtbot, make_window, slide_path, cache):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=2))
    window.open_slide(slide_path)
    classifier, gate = gated_classifier(free_batches=1, fail_with=OSError("the disk went away"))
    window.set_classifier(classifier)
    errors = []
    window.show_error = lambda title, text: errors.append(text)
    window.map_tissue()
    qtbot.waitUntil(lambda: not window.is_mapping() and bool(errors), timeout=MAP_TIMEOUT)
    (text,) = errors
    assert "the disk went away" in text
    assert "The 2 patches classified before the error are saved" in text
    shown = window.tissue_map
    assert shown is not None and not shown.complete and shown.classified_count == 2
    assert window.legend.status.text() == partial_text(shown)
    (saved,) = cache.root.rglob("*.npz")
    kept = TissueMap.load(saved)
    assert kept.classified_count == 2
    assert np.array_equal(kept.probs, shown.probs, equal_nan=True)

    # Once the fault is gone, Map Tissue classifies only the missing patches.
    gate.fail_with = None
    gate.set()
    seen = record_patches(window)
    whole = run_mapping(qtbot, window)
    assert whole.complete and len(seen) == whole.classified_count - 2
    with open_slide(slide_path) as slide:
        reference = map_slide(slide, classifier, batch_size=2, device="cpu")
    assert np.array_equal(whole.probs, reference.probs, equal_nan=True)


# --- progress -------------------------------------------------------------------------------


def test_progress_text_ticks_during_a_slow_first_batch(qtbot, make_window, slide_path):
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=2))
    window.open_slide(slide_path)
    classifier, gate = gated_classifier(free_batches=0)  # the first batch waits
    window.set_classifier(classifier)
    reports = []
    window.mapping.runner.progress.connect(lambda job, p: reports.append(p))
    window.map_tissue()
    label = window.progress_label
    qtbot.waitUntil(lambda: "first patches... 0:00" in label.text(), timeout=MAP_TIMEOUT)
    qtbot.waitUntil(lambda: "first patches... 0:02" in label.text(), timeout=5000)
    assert len(reports) == 1 and reports[0].done == 0  # no batch landed meanwhile
    assert window.mapping.tick.interval() <= 2000
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT):
        window.cancel_mapping()
        assert label.text() == "Cancelling..."
        gate.set()
    assert progress_hidden(window)


def test_progress_text_counts_down_between_reports():
    first = MapProgress(0, 100, 5, 0.0, None, 2.0)
    assert progress_text(first) == "0 / 100 tissue patches · first patches... 0:02"
    assert progress_text(first, 3.0) == "0 / 100 tissue patches · first patches... 0:05"
    later = MapProgress(40, 1100, 5, 12.5, 80.0, 6.0)
    assert progress_text(later) == "40 / 1,100 tissue patches · 12.5 patches/s · 1:20 left"
    assert progress_text(later, 5.0) == "40 / 1,100 tissue patches · 12.5 patches/s · 1:15 left"
    assert progress_text(later, 90.0).endswith("almost done")
    assert progress_text(later, region=True).startswith("40 / 1,100 tissue patches in the region")
