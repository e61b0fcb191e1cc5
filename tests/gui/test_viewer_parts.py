"""The main window's parts on their own: overlay, legend, patch panel, workers, settings, icons."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from histoviewer.errors import ModelError
from histoviewer.gui import settings as config
from histoviewer.gui import workers
from histoviewer.gui.icons import icon
from histoviewer.gui.legend import LegendPanel
from histoviewer.gui.overlay import MIN_SHADED_ALPHA, MapOverlay, colorize
from histoviewer.gui.probabilities import PatchPanel
from histoviewer.gui.workers import JobRunner, describe_error
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

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
    assert "4 patches classified" in legend.summary.text()
    assert "1 background patches skipped" in legend.summary.text()
    assert "1 patches not mapped yet" in legend.summary.text()
    seen = []
    legend.classVisibilityChanged.connect(lambda i, on: seen.append((i, on)))
    legend._rows[1][0].setChecked(False)
    assert seen == [(1, False)] and legend.class_visibility() == [True, False, True]
    legend.set_map(None)
    assert legend.row_texts()[0][1] == "–"


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
