"""File > Export: the report, the CLI's file names, Export All, OME-TIFFs, the export thread."""

from __future__ import annotations

import gzip
import importlib.util
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QMessageBox
from viewer_support import (
    MAP_TIMEOUT,
    gated_mapping,
    run_mapping,
    tiny_classifier,
    write_strip_tiff,
)

from histoviewer.errors import HistoViewerError
from histoviewer.gui.exporting import ALL_FORMATS, EXPORTING, SINGLE_EXPORTS
from histoviewer.mapping import export as exports
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import CLASSIFIED, PENDING, TissueMap, slide_identity
from histoviewer.slide import SlideReader

EXPORT_TIMEOUT = 60_000


def _load_pdf_text():
    """tests/mapping/pdf_text.py (a PDF text reader for tests), without a package."""
    path = Path(__file__).parents[1] / "mapping" / "pdf_text.py"
    spec = importlib.util.spec_from_file_location("pdf_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pdf_text = _load_pdf_text()


@pytest.fixture
def slide_path(tmp_path):
    (tmp_path / "slides").mkdir()
    return write_strip_tiff(tmp_path / "slides" / "CMU-9.tif", 600, 600)


def shown_messages(window) -> list[tuple[str, str]]:
    return [(b.windowTitle(), b.text()) for b in window.findChildren(QMessageBox) if b.isVisible()]


def show_map(window, *, partial: bool = False, seed: int = 0) -> TissueMap:
    """Put a map of the open slide on screen without mapping it (random probabilities;
    ``partial``: the bottom half pending, as after Cancel)."""
    slide, info = window.slide, tiny_classifier().info
    tmap = TissueMap.empty(
        make_grid(slide, info),
        info.class_names,
        info.class_colors,
        mpp=slide.mpp,
        slide=slide_identity(slide),
        model={"name": "tiny", "fingerprint": "0123456789abcdef"},
    )
    rng = np.random.default_rng(seed)
    tmap.probs[:] = rng.dirichlet(np.ones(tmap.num_classes), size=(tmap.rows, tmap.cols))
    tmap.state[:] = CLASSIFIED
    if partial:
        tmap.probs[tmap.rows // 2 :] = np.nan
        tmap.state[tmap.rows // 2 :] = PENDING
    tmap.complete = not partial
    window.state.set_map(tmap)
    return tmap


@pytest.fixture
def mapped(make_window, slide_path):
    """A window showing a (made up) complete map of slide CMU-9.tif."""
    window = make_window()
    assert window.open_slide(slide_path)
    show_map(window)
    return window


def answer_save(window, path: Path | None, asked: list | None = None) -> None:
    """Answer the window's save-file questions with ``path`` (None: Cancel)."""

    def ask(title: str, suggestion: str, filters: str) -> str | None:
        if asked is not None:
            asked.append((title, suggestion, filters))
        return None if path is None else str(path)

    window.ask_save_file = ask


class WriteSpy:
    """Replaces ``write_export``: records each call (format, path, regions, thumbnail,
    thread) and calls the real writer, after ``gate`` is set if given."""

    def __init__(
        self, monkeypatch, *, gate: threading.Event | None = None, error=None, write=True
    ) -> None:
        self.calls: list[dict] = []
        self.gate = gate
        self.error = error
        self.write = write
        self.real = exports.write_export
        monkeypatch.setattr(exports, "write_export", self)

    def __call__(self, tmap, fmt, path, *, thumbnail=None, regions=()):
        self.calls.append(
            {
                "fmt": fmt,
                "path": Path(path),
                "regions": list(regions),
                "thumbnail": thumbnail,
                "thread": threading.get_ident(),
            }
        )
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        if self.error is not None:
            raise self.error
        if not self.write:
            return Path(path)
        return self.real(tmap, fmt, path, thumbnail=thumbnail, regions=regions)


def test_report_from_the_menu_writes_a_pdf_on_another_thread_with_the_selected_region(
    qtbot, make_window, slide_path, monkeypatch
):
    window = make_window()
    window.open_slide(slide_path)
    window.set_classifier(tiny_classifier())
    tmap = run_mapping(qtbot, window)
    # Shift+drag over patches in the middle: the selection becomes the report's region.
    window.labelling.select_area(QRectF(250, 250, 2.5 * tmap.stride, 1.5 * tmap.stride))
    selected = len(window.labelling.selected_cells())
    assert selected >= 2
    spy = WriteSpy(monkeypatch)
    asked = []
    out = slide_path.parent / "CMU-9.report.pdf"
    answer_save(window, out, asked)

    # File > Export Report (PDF), straight under File (also in File > Export).
    file_menu = window.menuBar().actions()[0].menu()
    assert window.file_report_action in file_menu.actions()
    with qtbot.waitSignal(window.exporter.finished, timeout=EXPORT_TIMEOUT) as done:
        window.file_report_action.trigger()
    assert done.args == [True]

    # Suggested as the CLI names it, beside the slide; written off the GUI thread.
    ((title, suggestion, filters),) = asked
    assert Path(suggestion) == out and "*.pdf" in filters and "Report" in title
    (call,) = spy.calls
    assert call["thread"] != threading.get_ident()
    ((name, mask),) = call["regions"]
    assert name == f"Selected region ({selected} patches)"
    assert mask.shape == (tmap.rows, tmap.cols) and int(mask.sum()) == selected
    assert call["thumbnail"].dtype == np.uint8 and max(call["thumbnail"].shape[:2]) == 600

    data = out.read_bytes()
    assert data.startswith(b"%PDF") and pdf_text.page_count(data) >= 1
    text = "\n".join(line for page in pdf_text.page_texts(data) for line in page)
    assert "CMU-9" in text
    # (The report's region table may shorten the name.)
    assert "Selected region" in text
    assert window.statusBar().currentMessage() == "Exported CMU-9.report.pdf"
    assert window.export_report_action.isEnabled() and not window.is_exporting()


def test_a_partial_map_exports_its_report_without_a_question(
    qtbot, make_window, slide_path, tmp_path
):
    window = make_window()
    window.open_slide(slide_path)
    show_map(window, partial=True)  # an unexpected question fails the test (conftest)
    out = tmp_path / "partial.report.pdf"
    assert window.export_map("report", out)
    text = "\n".join(line for page in pdf_text.page_texts(out.read_bytes()) for line in page)
    assert "Partial map" in text
    assert shown_messages(window) == []


def test_every_suggestion_is_the_cli_name(qtbot, mapped, tmp_path, slide_path):
    asked = []
    answer_save(mapped, None, asked)
    for fmt in SINGLE_EXPORTS:
        mapped.export_actions[fmt].trigger()
    suggested = [Path(suggestion) for _, suggestion, _ in asked]
    assert suggested == [
        slide_path.parent / exports.export_name("CMU-9", f) for f in SINGLE_EXPORTS
    ]
    assert [p.name for p in suggested] == [f"CMU-9{exports.FORMATS[f]}" for f in SINGLE_EXPORTS]

    # After an export, the next suggestions are in its folder.
    assert mapped.export_map("csv", tmp_path / "elsewhere" / "mine.csv")
    asked.clear()
    mapped.export_actions["npz"].trigger()
    assert Path(asked[0][1]) == tmp_path / "elsewhere" / "CMU-9.npz"
    asked.clear()
    mapped.export_view_action.trigger()
    assert Path(asked[0][1]) == tmp_path / "elsewhere" / "CMU-9-view.png"


def test_compressed_geojson_and_a_name_without_extension(qtbot, mapped, tmp_path):
    answer_save(mapped, tmp_path / "tiles")  # typed without an extension
    with qtbot.waitSignal(mapped.exporter.finished, timeout=EXPORT_TIMEOUT):
        mapped.export_actions["geojson.gz"].trigger()
    data = json.loads(gzip.decompress((tmp_path / "tiles.geojson.gz").read_bytes()))
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == mapped.tissue_map.classified_count


def test_export_all_writes_the_cli_names_and_asks_before_replacing(
    qtbot, mapped, tmp_path, monkeypatch
):
    folder = tmp_path / "exports"
    mapped.ask_directory = lambda title, start: str(folder)
    with qtbot.waitSignal(mapped.exporter.finished, timeout=EXPORT_TIMEOUT) as done:
        mapped.export_all_action.trigger()
    assert done.args == [True]
    names = [exports.export_name("CMU-9", f) for f in (*exports.DEFAULT_FORMATS, "report")]
    assert (*exports.DEFAULT_FORMATS, "report") == ALL_FORMATS
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    message = mapped.statusBar().currentMessage()
    assert all(name in message for name in names) and str(folder) in message

    # Again: one question first; No writes nothing, Replace writes them all again.
    spy = WriteSpy(monkeypatch, write=False)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    questions = []

    def answer(title, text, proceed):
        questions.append(text)
        return len(questions) > 1

    mapped.ask_proceed = answer
    mapped.export_all_action.trigger()
    assert questions == [
        f"Replace the 6 existing exports of CMU-9 in {folder}?\n\n"
        f"{', '.join(names[:-1])} and {names[-1]} will be overwritten."
    ]
    assert spy.calls == [] and not mapped.is_exporting()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert mapped.export_all(folder)  # answered Replace
    assert [c["path"].name for c in spy.calls] == names


def test_export_refuses_without_a_map_and_while_mapping(qtbot, make_window, slide_path, tmp_path):
    window = make_window()
    window.choose_export("report")
    assert shown_messages(window)[-1][0] == "No map"
    assert not window.export_report_action.isEnabled()

    window, _, gate, _ = gated_mapping(qtbot, make_window, slide_path)
    try:
        assert window.state.map_is_live
        answer_save(window, tmp_path / "x.report.pdf")
        window.export_report_action.trigger()
        assert (
            "Mapping in progress",
            "Mapping is still running; export the report when it has finished (or cancel it).",
        ) in shown_messages(window)
        window.ask_directory = lambda title, start: str(tmp_path / "all")
        window.choose_export_folder()  # Export All too: it writes the report
        assert (
            "Mapping in progress",
            "Mapping is still running; export the maps when it has finished (or cancel it).",
        ) in shown_messages(window)
        assert not (tmp_path / "all").exists()
        assert not (tmp_path / "x.report.pdf").exists()
        # The map's data exports as it stands, and mapping goes on.
        assert window.export_map("csv", tmp_path / "so-far.csv")
        assert "pending" in (tmp_path / "so-far.csv").read_text()
        assert window.is_mapping()
    finally:
        gate.set()
    qtbot.waitUntil(lambda: not window.is_mapping(), timeout=MAP_TIMEOUT)
    assert window.tissue_map.complete


def test_a_failing_writer_shows_a_dialog_and_the_actions_come_back(
    qtbot, mapped, tmp_path, monkeypatch
):
    gate = threading.Event()
    WriteSpy(monkeypatch, gate=gate, error=HistoViewerError("the disk is on fire"))
    answer_save(mapped, tmp_path / "CMU-9.report.pdf")
    mapped.export_report_action.trigger()
    # While it runs: the window answers, the exports wait their turn.
    assert mapped.is_exporting() and mapped.state.is_running(EXPORTING)
    assert not any(a.isEnabled() for a in mapped.export_actions.values())
    assert not mapped.export_all_action.isEnabled()
    assert mapped.statusBar().currentMessage() == "Exporting the report…"
    with qtbot.waitSignal(mapped.exporter.finished, timeout=EXPORT_TIMEOUT) as done:
        gate.set()
    assert done.args == [False]
    assert ("Cannot export CMU-9.report.pdf", "the disk is on fire") in shown_messages(mapped)
    assert all(a.isEnabled() for a in mapped.export_actions.values())
    assert mapped.export_all_action.isEnabled() and mapped.isVisible()
    assert not (tmp_path / "CMU-9.report.pdf").exists()


def test_an_exporter_bug_is_a_dialog_too(qtbot, mapped, tmp_path, monkeypatch):
    WriteSpy(monkeypatch, error=ZeroDivisionError("division by zero"))
    assert not mapped.export_map("npz", tmp_path / "a.npz")
    ((title, text),) = shown_messages(mapped)
    assert title == "Unexpected error" and "a.npz" in text and "ZeroDivisionError" in text
    assert mapped.export_actions["npz"].isEnabled()


def test_ome_tiff_items_write_pyramids_tifffile_opens(qtbot, mapped, tmp_path):
    width, height = mapped.slide.dimensions
    for fmt in ("classes-tiff", "probabilities-tiff"):
        out = tmp_path / exports.export_name("CMU-9", fmt)
        answer_save(mapped, out)
        with qtbot.waitSignal(mapped.exporter.finished, timeout=EXPORT_TIMEOUT) as done:
            mapped.export_actions[fmt].trigger()
        assert done.args == [True]
        with tifffile.TiffFile(out) as tif:
            assert tif.is_ome
            level = tif.series[0].levels[0]
            assert (level.shape[-2], level.shape[-1]) == (height, width) or level.shape[:2] == (
                height,
                width,
            )
    with tifffile.TiffFile(tmp_path / "CMU-9.probabilities.ome.tif") as tif:
        assert mapped.tissue_map.num_classes in tif.series[0].shape


def test_quitting_waits_for_the_export(qtbot, mapped, tmp_path, monkeypatch):
    gate = threading.Event()
    WriteSpy(monkeypatch, gate=gate)
    out = tmp_path / "CMU-9.csv"
    assert mapped.export_map("csv", out, wait=False)
    assert mapped.is_exporting()
    messages = []
    mapped.statusBar().messageChanged.connect(messages.append)
    threading.Timer(0.3, gate.set).start()  # the file is written only after the close began
    mapped.close()
    assert "Finishing the export before quitting…" in messages
    assert out.read_text().startswith("# HistoViewer tissue map of")
    assert not mapped.is_exporting()


def test_closing_the_slide_while_its_thumbnail_is_read(qtbot, mapped, tmp_path, monkeypatch):
    """The report's thumbnail is read on the export thread through a reader of its own:
    the window closing its reader meanwhile takes nothing from under it."""
    gate, reading = threading.Event(), threading.Event()
    real = SlideReader.thumbnail

    def held(self, max_size=512):
        if threading.current_thread() is not threading.main_thread():
            reading.set()
            assert gate.wait(timeout=30)
        return real(self, max_size)

    monkeypatch.setattr(SlideReader, "thumbnail", held)
    spy = WriteSpy(monkeypatch, write=False)
    assert mapped.export_map("report", tmp_path / "r.report.pdf", wait=False)
    assert reading.wait(timeout=30)
    mapped.close_slide()  # closes the window's reader now: no mapping job reads it
    assert mapped.slide is None and mapped.is_exporting()
    with qtbot.waitSignal(mapped.exporter.finished, timeout=EXPORT_TIMEOUT) as done:
        gate.set()
    assert done.args == [True], shown_messages(mapped)
    assert spy.calls[0]["thumbnail"].shape == (600, 600, 3)
