"""The main window's parts on their own: overlay, legend, patch panel, workers, settings, icons."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QScrollArea

from histoviewer.errors import ModelError
from histoviewer.gui import settings as config
from histoviewer.gui import workers
from histoviewer.gui.icons import icon
from histoviewer.gui.legend import LegendPanel
from histoviewer.gui.overlay import MIN_SHADED_ALPHA, MapOverlay, colorize
from histoviewer.gui.overview import OverviewPanel
from histoviewer.gui.probabilities import (
    CHART_MIN_ROWS,
    IMAGE_MIN_SIZE,
    IMAGE_SIZE,
    PatchPanel,
    ProbabilityChart,
)
from histoviewer.gui.workers import JobRunner, describe_error
from histoviewer.mapping.engine import MapProgress
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.summary_text import (
    map_totals,
    map_totals_text,
    partial_map_text,
    progress_count_text,
)
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING, TissueMap

NAMES = ["a", "b", "c"]
COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]


def small_map(stride: int = 100, patch: int = 100) -> TissueMap:
    """2 x 3 patches: confident a, unsure b, c, background, pending, confident c."""
    grid = PatchGrid(rows=2, cols=3, patch_size=patch, stride=stride)
    tmap = TissueMap.empty(grid, NAMES, COLORS, mpp=0.5)
    probs = {
        (0, 0): [1.0, 0.0, 0.0],
        (0, 1): [0.3, 0.4, 0.3],
        (0, 2): [0.1, 0.1, 0.8],
        (1, 2): [0.0, 0.0, 1.0],
    }
    for (r, c), p in probs.items():
        tmap.probs[r, c] = p
        tmap.state[r, c] = CLASSIFIED
    tmap.state[1, 0] = BACKGROUND
    return tmap


def test_colorize_paints_the_predicted_class_and_leaves_the_rest_clear():
    tmap = small_map()
    rgba = colorize(tmap)
    assert rgba.shape == (2, 3, 4)
    assert tuple(rgba[0, 0]) == (200, 0, 0, 255)
    assert tuple(rgba[0, 1]) == (0, 200, 0, 255)
    assert tuple(rgba[0, 2]) == (0, 0, 200, 255)
    assert rgba[1, 0, 3] == 0 and rgba[1, 1, 3] == 0  # background, pending

    hidden = colorize(tmap, visible=[True, True, False])
    assert hidden[0, 2, 3] == 0 and hidden[1, 2, 3] == 0 and hidden[0, 0, 3] == 255


def test_confidence_shading_fades_unsure_patches():
    alpha = colorize(small_map(), confidence_shading=True)[..., 3]
    assert alpha[0, 0] == 255 and alpha[1, 2] == 255
    assert alpha[0, 1] < alpha[0, 2] < 255  # 0.4 is less sure than 0.8
    assert alpha[0, 1] >= int(255 * MIN_SHADED_ALPHA)


def test_overlay_item_covers_the_grid_in_slide_pixels():
    overlay = MapOverlay()
    overlay.set_map(small_map(stride=80, patch=100))
    rect = overlay.boundingRect()
    # Cells are stride-sized and centred on their (overlapping) patches; the outer ones
    # reach the edges of the grid (3 x 80 + 20 = 260 by 2 x 80 + 20 = 180).
    assert rect.getRect() == (0, 0, 260, 180)
    assert overlay.image().width() == 3 and overlay.image().height() == 2
    overlay.set_class_visible(0, False)
    assert overlay.rgba()[0, 0, 3] == 0 and overlay.class_visibility() == [False, True, True]
    overlay.set_map(None)
    assert overlay.boundingRect().isEmpty() and overlay.image().isNull()


def test_overlay_describes_the_patch_under_a_point():
    overlay = MapOverlay()
    assert overlay.describe_at(50, 50) is None  # no map
    tmap = small_map()  # cells of 100 px: (row, col) covers x 100*col.., y 100*row..
    tmap.class_names = ["tumor", "b", "c"]
    overlay.set_map(tmap)
    assert overlay.describe_at(50, 50) == "Tumour epithelium 100 %"  # the class's label
    assert overlay.describe_at(150, 99) == "B 40 %"
    assert overlay.describe_at(250, 20) == "C 80 %"
    assert overlay.describe_at(50, 150) == "Background"
    assert overlay.describe_at(150, 150) is None  # pending: nothing to say yet
    assert overlay.describe_at(-1, 50) is None and overlay.describe_at(300, 50) is None
    assert overlay.describe_at(float("nan"), 50) is None
    overlay.set_class_visible(0, False)  # hidden in the overlay, still described
    assert overlay.describe_at(50, 50) == "Tumour epithelium 100 %"
    overlay.set_map(None)
    assert overlay.describe_at(50, 50) is None


def test_legend_counts_shares_and_areas(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    legend.set_map(small_map())
    rows = legend.row_texts()
    assert [r[0] for r in rows] == ["A", "B", "C"]
    assert [r[1] for r in rows] == ["1", "1", "2"]
    assert [r[2] for r in rows] == ["25.0 %", "25.0 %", "50.0 %"]
    # 100 px at 0.5 um/px = 50 um = 0.05 mm; 2 patches = 0.005 mm2
    assert rows[2][3] == "0.01 mm²" and rows[0][3] == "0.00 mm²"
    # One total for what is to be classified (tissue: classified or pending), and
    # the background apart from it.
    assert legend.summary.text() == (
        "4 of 5 tissue patches classified (0.01 mm²) · 1 background patch skipped"
    )
    seen = []
    legend.classVisibilityChanged.connect(lambda i, on: seen.append((i, on)))
    legend._rows[1][0].setChecked(False)
    assert seen == [(1, False)] and legend.class_visibility() == [True, False, True]
    legend.set_map(None)
    assert legend.row_texts()[0][1] == "–"


# -- totals: legend and progress agree ------------------------------------------------


def grid_map(rows: int, cols: int) -> TissueMap:
    grid = PatchGrid(rows=rows, cols=cols, patch_size=100, stride=100)
    return TissueMap.empty(grid, NAMES, COLORS, mpp=0.5)


def classify(tmap: TissueMap, count: int) -> None:
    """Classify the first ``count`` pending patches (row-major) as class a."""
    todo = np.flatnonzero(tmap.state.ravel() == PENDING)[:count]
    rows, cols = np.unravel_index(todo, tmap.state.shape)
    tmap.probs[rows, cols] = [0.9, 0.05, 0.05]
    tmap.state[rows, cols] = CLASSIFIED


def test_totals_of_finished_partial_and_unsorted_maps():
    tmap = grid_map(4, 5)  # 20 patches
    tmap.state[3, :] = BACKGROUND  # 5 glass
    classify(tmap, 6)
    totals = map_totals(tmap)
    assert (totals.classified, totals.tissue, totals.background) == (6, 15, 5)
    assert totals.tissue_left == 9 and not totals.complete
    text = map_totals_text(tmap, area=False)
    assert text == "6 of 15 tissue patches classified · 5 background patches skipped"
    assert partial_map_text(tmap) == (
        "Partial map: 6 of 15 tissue patches classified; Map Tissue continues it."
    )
    classify(tmap, 100)
    assert map_totals_text(tmap, area=False) == (
        "15 tissue patches classified · 5 background patches skipped"
    )
    assert "(0.04 mm²)" in map_totals_text(tmap)  # 15 cells of 50 x 50 um

    # Saved before the background was known (a job that failed): no tissue total.
    unsorted = grid_map(4, 5)
    classify(unsorted, 4)
    totals = map_totals(unsorted)
    assert totals.tissue is None and totals.background is None
    assert map_totals_text(unsorted, area=False) == (
        "4 of 20 patches classified · background not detected yet"
    )
    # Being mapped, before the first progress report: no total at all.
    assert map_totals_text(unsorted, live=True, area=False) == "4 patches classified so far"


def test_live_totals_take_the_background_from_the_progress_report():
    """The GUI's live map gets only classified batches: its background patches stay
    pending, and the job's progress report says how many there are."""
    live = grid_map(4, 5)
    classify(live, 3)
    report = MapProgress(done=3, total=15, skipped=5, rate=1.0, eta=1.0, elapsed=1.0)
    totals = map_totals(live, report)
    assert (totals.classified, totals.tissue, totals.background) == (3, 15, 5)
    assert map_totals_text(live, report, area=False) == (
        "3 of 15 tissue patches classified · 5 background patches skipped"
    )
    assert progress_count_text(report.done, report.total) == "3 / 15 tissue patches"
    # A batch lands before its report: the total does not jump.
    classify(live, 2)
    assert map_totals(live, report).tissue == 15
    # Continuing a map whose background was marked: those are not counted twice.
    resumed = grid_map(4, 5)
    resumed.state[3, :2] = BACKGROUND
    classify(resumed, 3)
    report = MapProgress(done=3, total=15, skipped=5, rate=0.0, eta=None, elapsed=0.5)
    assert map_totals(resumed, report).tissue == 15
    # Mapping a region: the tissue outside it (still pending) is tissue too.
    region = MapProgress(done=3, total=6, skipped=5, rate=1.0, eta=1.0, elapsed=1.0)
    assert map_totals(live, region).tissue == 15


def test_live_totals_agree_with_the_engine_progress(tmp_path):
    """Replay a real mapping job as the window sees it (batches on a live map, plus
    progress reports): the legend's tissue total is the progress bar's total, and
    the background the report's, from the first report to the finished map."""
    from viewer_support import tiny_classifier

    from histoviewer.mapping.engine import map_slide
    from histoviewer.slide import ArraySlide
    from histoviewer.slide.synthetic import synthetic_he

    image = np.full((450, 900, 3), 240, np.uint8)  # glass on the right
    image[:, :450] = synthetic_he(450, 450, seed=3)
    image[:, :450] = np.minimum(image[:, :450], 200)  # dense tissue on the left
    slide = ArraySlide(image, mpp=0.495)
    events = []
    result = map_slide(
        slide,
        tiny_classifier(),
        batch_size=2,
        device="cpu",
        backend="torch",
        progress=lambda p: events.append(("progress", p)),
        on_batch=lambda b: events.append(("batch", b)),
    )
    assert result.background_count > 0 and result.classified_count > 0
    live = TissueMap.empty(result, result.class_names, result.class_colors, mpp=result.mpp)
    checked = 0
    for kind, item in events:
        if kind == "batch":
            live.probs[item.rows, item.cols] = item.probs
            live.state[item.rows, item.cols] = CLASSIFIED
            continue
        assert live.background_count == 0  # the window's live map never learns it
        totals = map_totals(live, item)
        assert totals.classified == item.done
        assert totals.tissue == item.total == result.classified_count
        assert totals.background == item.skipped == result.background_count
        text = map_totals_text(live, item, area=False)
        assert text.startswith(f"{item.done} of {item.total} tissue patches classified")
        checked += 1
    assert checked >= 2
    final = map_totals(result)
    assert (final.tissue, final.background) == (result.classified_count, result.background_count)


def test_legend_shows_live_totals_from_progress_reports(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    live = grid_map(4, 5)
    classify(live, 2)
    legend.set_map(live, live=True)
    assert legend.summary.text().startswith("2 patches classified so far")
    report = MapProgress(done=2, total=15, skipped=5, rate=1.0, eta=3.0, elapsed=1.0)
    legend.set_progress(report)
    assert legend.summary.text().startswith("2 of 15 tissue patches classified")
    assert legend.summary.text().endswith("5 background patches skipped")
    classify(live, 2)
    legend.set_map(live, live=True)  # the next batch: the report still holds
    assert legend.summary.text().startswith("4 of 15 tissue patches classified")
    # The finished map (background marked) replaces the live one: no report kept.
    done = grid_map(4, 5)
    done.state[3, :] = BACKGROUND
    classify(done, 100)
    legend.set_map(done)
    assert legend.summary.text().startswith("15 tissue patches classified")
    legend.set_progress(report)  # not live: ignored
    assert legend.summary.text().startswith("15 tissue patches classified")
    other = grid_map(4, 5)
    legend.set_map(other, live=True)  # a new job: the old report is dropped
    assert legend.summary.text().startswith("0 patches classified so far")
    legend.set_map(live, live=True, progress=report)
    assert legend.summary_text().startswith("4 of 15 tissue patches")


# -- sizes: the docks may be short ------------------------------------------------------


def min_height_bound(widget, lines: int) -> int:
    """About 200 px at the usual 9-10 pt font; more for a larger one."""
    return max(200, lines * widget.fontMetrics().height())


def test_patch_panel_asks_for_little_height_and_shrinks_its_parts(qtbot):
    panel = PatchPanel()
    qtbot.addWidget(panel)
    tmap = small_map()
    tmap.class_names = [f"class {i}" for i in range(8)]
    tmap.class_colors = [(30 * i, 0, 0) for i in range(8)]
    tmap.probs = np.full((2, 3, 8), 0.125, np.float32)
    tmap.probs[0, 1, :] = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]
    panel.show_patch(tmap, 0, 1, np.zeros((150, 150, 3), np.uint8))
    short = panel.minimumSizeHint().height()
    # Every one of the eight probabilities stays readable: the chart's eight rows, the
    # title, three lines of position and the smallest image.
    assert short <= min_height_bound(panel, 22)
    assert panel.sizeHint().height() > short + 100  # with room: the big image

    assert panel.heightForWidth(260) <= short + 2 * panel.fontMetrics().height()

    # In a short dock (the window wraps each panel in a resizing scroll area) the
    # image shrinks before anything scrolls; the chart keeps every class.
    area = QScrollArea()
    area.setWidgetResizable(True)
    qtbot.addWidget(area)
    area.setWidget(panel)
    area.resize(260, short + 40)
    area.show()
    qtbot.waitExposed(area)
    QApplication.processEvents()
    assert area.verticalScrollBar().maximum() == 0
    side = panel.image.image_rect().width()
    assert IMAGE_MIN_SIZE <= side < IMAGE_SIZE  # the image shrank, not off the panel
    assert panel.chart.shown_rows() == CHART_MIN_ROWS == 8
    assert panel.chart.geometry().bottom() <= panel.height()  # nothing past the edge
    # Shorter still: it scrolls rather than squash anything further.
    area.resize(260, short // 2)
    QApplication.processEvents()
    assert area.verticalScrollBar().maximum() > 0
    assert panel.height() >= short
    # With room: the full image and every class.
    area.resize(260, panel.sizeHint().height() + 20)
    QApplication.processEvents()
    assert panel.image.image_rect().width() == IMAGE_SIZE
    assert panel.chart.shown_rows() == 8


def test_legend_and_overview_ask_for_little_height(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    legend.set_map(small_map())
    # Eight class rows with their checkboxes and the Show box are the legend: about
    # 245 px at a 9 pt font, where the old layout asked for about 295. The quantities
    # under it (a title and up to four lines) come on top.
    lines = legend.fontMetrics().height()
    quantities = legend.quantities_block.minimumSizeHint().height()
    assert quantities <= 6 * lines
    assert legend.minimumSizeHint().height() - quantities <= min_height_bound(legend, 16)
    legend.set_classes([f"class {i}" for i in range(8)], [(0, 0, 0)] * 8)
    assert legend.minimumSizeHint().height() - quantities <= max(250, 18 * lines)
    overview = OverviewPanel()
    qtbot.addWidget(overview)
    assert 0 < overview.minimumSizeHint().height() <= 100


def test_patch_panel_sorts_probabilities_and_handles_background(qtbot):
    panel = PatchPanel()
    qtbot.addWidget(panel)
    tmap = small_map()
    pixels = np.zeros((100, 100, 3), np.uint8)
    panel.show_patch(tmap, 0, 1, pixels)
    assert panel.chart.entries() == [
        ("B", pytest.approx(0.4)),
        ("A", pytest.approx(0.3)),
        ("C", pytest.approx(0.3)),
    ]
    assert panel.predicted() == "B" and "40.0 %" in panel.title.text()
    assert "Row 1 of 2, column 2 of 3" in panel.position.text()
    assert not panel.image.pixmap().isNull()
    panel.show_patch(tmap, 1, 0)
    assert panel.predicted() is None and "background" in panel.title.text()
    panel.clear()
    assert panel.row_col is None


def test_job_runner_delivers_results_of_the_current_job_only(qtbot):
    runner = JobRunner()
    release = threading.Event()
    done, finished = [], []
    runner.succeeded.connect(lambda job, value: done.append((job, value)))
    runner.finished.connect(finished.append)

    def slow(ctx):
        release.wait(10)
        return "old"

    first = runner.start(slow, "wait")
    with qtbot.waitSignal(runner.succeeded, timeout=5000):
        second = runner.start(lambda ctx: "new", "answer")
    assert done == [(second, "new")]
    assert first in runner.running_jobs()  # superseded, still winding down
    release.set()
    qtbot.waitUntil(lambda: sorted(finished) == [first, second], timeout=5000)
    assert done == [(second, "new")]  # the superseded job's result was dropped
    assert not runner.is_busy() and runner.running_jobs() == []


def test_job_workers_are_deleted_on_the_gui_thread(qtbot, monkeypatch):
    """Deleted on their own thread as it ended, a worker's destructor could wait for the
    GIL while holding a Qt connection lock the GUI thread needed: a rare deadlock that
    stalled a whole test run. They must be deleted on the GUI thread."""
    deleted_on = []

    class WatchedWorker(workers._Worker):
        def __init__(self, *args):
            super().__init__(*args)
            self.destroyed.connect(
                lambda *_: deleted_on.append(threading.current_thread().name),
                Qt.ConnectionType.DirectConnection,
            )

    monkeypatch.setattr(workers, "_Worker", WatchedWorker)
    runner = JobRunner()
    finished = []
    runner.finished.connect(finished.append)
    for _ in range(3):
        runner.start(lambda ctx: "ok", "answer")
        qtbot.waitUntil(lambda: not runner.running_jobs(), timeout=5000)
    qtbot.waitUntil(lambda: len(deleted_on) == 3, timeout=5000)
    assert len(finished) == 3
    assert set(deleted_on) == {threading.main_thread().name}


def test_job_runner_reports_progress_partials_errors_and_cancel(qtbot):
    runner = JobRunner()
    progress, partial = [], []
    runner.progress.connect(lambda job, v: progress.append(v))
    runner.partial.connect(lambda job, v: partial.append(v))

    def counting(ctx):
        for i in range(3):
            ctx.progress(i)
            ctx.partial(i * 10)
        ctx.cancel.raise_if_cancelled()
        raise ModelError("model.pt is not a checkpoint")

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.start(counting, "load the model")
    failure = blocker.args[1]
    assert failure.title == "Cannot load the model" and failure.message.startswith("model.pt")
    assert progress == [0, 1, 2] and partial == [0, 10, 20]

    started = threading.Event()

    def waits_for_cancel(ctx):
        started.set()
        while not ctx.cancel.cancelled:
            time.sleep(0.001)
        return "stopped early"

    with qtbot.waitSignal(runner.succeeded, timeout=5000) as blocker:
        runner.start(waits_for_cancel, "wait")
        assert started.wait(5)
        runner.request_stop()  # still delivers what the job returns
    assert blocker.args[1] == "stopped early"

    def raises_cancelled(ctx):
        started.set()
        while True:
            ctx.cancel.raise_if_cancelled()
            time.sleep(0.001)

    started.clear()
    failed = []
    runner.failed.connect(failed.append)
    with qtbot.waitSignal(runner.cancelled, timeout=5000):
        runner.start(raises_cancelled, "wait")
        assert started.wait(5)
        runner.request_stop()
    assert failed == []  # stopping on request is not an error
    runner.shutdown()
    assert runner.running_jobs() == []


def test_describe_error_words():
    assert describe_error(ModelError("x is bad"), "load x").message == "x is bad"
    oom = describe_error(MemoryError(), "map s.tif")
    assert oom.title == "Out of memory" and "map s.tif" in oom.message
    bug = describe_error(KeyError("k"), "map s.tif")
    assert bug.title == "Unexpected error" and "bug" in bug.message


def test_settings_round_trip_and_survive_garbage(tmp_path):
    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    assert config.load_mapping_settings(qs) == config.MappingSettings()
    chosen = config.MappingSettings(stride=75, device="cpu", batch_size=8, skip_background=False)
    config.save_mapping_settings(qs, chosen)
    assert config.load_mapping_settings(qs) == chosen
    qs.setValue("mapping/stride", "lots")
    qs.setValue("mapping/batch_size", -3)
    assert config.load_mapping_settings(qs).stride == 0  # the model's patch size
    assert config.load_mapping_settings(qs).batch_size == 64

    for i in range(config.MAX_RECENT + 3):
        config.add_recent_file(qs, f"/slides/{i}.svs")
    config.add_recent_file(qs, "/slides/5.svs")
    recent = config.recent_files(qs)
    assert len(recent) == config.MAX_RECENT and recent[0] == "/slides/5.svs"
    assert recent.count("/slides/5.svs") == 1
    config.clear_recent_files(qs)
    assert config.recent_files(qs) == []


def test_mapping_settings_dialog_edits_and_restores_defaults(qtbot):
    current = config.MappingSettings(stride=75, device="cpu", batch_size=8, skip_background=False)
    dialog = config.MappingSettingsDialog(current)
    qtbot.addWidget(dialog)
    assert dialog.settings() == current
    dialog.batch_size.setValue(32)
    assert dialog.settings().batch_size == 32
    dialog.set_settings(config.MappingSettings())
    assert dialog.settings() == config.MappingSettings()


def test_icons_load_by_name_and_unknown_names_fail(qapp):
    for name in (
        "open",
        "close",
        "zoom-in",
        "zoom-out",
        "fit",
        "actual-size",
        "map",
        "cancel",
        "export",
        "model",
        "settings",
        "overlay",
        "histoviewer",
    ):
        assert not icon(name).pixmap(24, 24).isNull()
    with pytest.raises(FileNotFoundError, match="no-such-icon"):
        icon("no-such-icon")


def test_a_chart_of_many_classes_sums_up_the_least_probable(qtbot):
    chart = ProbabilityChart()
    qtbot.addWidget(chart)
    probs = np.linspace(1, 12, 12) / np.linspace(1, 12, 12).sum()
    chart.set_entries([(f"class {i}", (0, 0, 0), float(p)) for i, p in enumerate(probs)])
    assert chart.minimumSizeHint().height() < chart.sizeHint().height()
    chart.resize(240, chart.minimumSizeHint().height())
    assert chart.shown_rows() == CHART_MIN_ROWS  # the last of them says '+ 5 more'
    chart.resize(240, chart.sizeHint().height())
    assert chart.shown_rows() == 12


def test_legend_for_fewer_classes_leaves_no_old_row_on_screen(qtbot):
    from PySide6.QtWidgets import QCheckBox

    legend = LegendPanel()
    qtbot.addWidget(legend)
    legend.show()
    qtbot.waitExposed(legend)
    toggles = {legend.show_overlay, legend.shading}
    old = [b for b in legend.findChildren(QCheckBox) if b not in toggles]
    assert len(old) == 8 and all(b.isVisible() for b in old)
    legend.set_classes(["tumor", "stroma", "adipose"], [(200, 0, 0), (0, 200, 0), (0, 0, 200)])
    # No event loop runs in between (as when a model is loaded from a menu's handler):
    # the eight default rows must leave the screen at once, not when they are deleted.
    assert not any(b.isVisible() for b in old)
    assert len(legend.class_visibility()) == 3
