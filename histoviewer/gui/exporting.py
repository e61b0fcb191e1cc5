"""File > Export: the shown tissue map in every format, its report, a picture of the view.

:class:`MapExporter` exports the map shown in the
:class:`~histoviewer.viewer_state.ViewerState`. It asks for file names through
:class:`~histoviewer.gui.dialogs.UserDialogs` (tests answer) and writes through
:func:`histoviewer.mapping.export.write_export` (atomic writes).

- Names: every suggestion, and Export All, name a slide's files as ``histoviewer map``
  does: ``<slide file's stem><suffix>`` (:func:`~histoviewer.mapping.export.export_name`:
  ``CMU-1.geojson``, ``CMU-1.report.pdf``, ...), in the last export folder or beside
  the slide.
- Off the GUI thread: a report (thumbnail and figures) or an OME-TIFF of a big slide
  takes seconds to a minute, so every map export runs on a :class:`JobRunner` of its
  own (an export never cancels mapping, nor mapping an export). One export runs at a
  time: the state's :data:`EXPORTING` job disables the export actions meanwhile. The
  job gets a map that nothing changes under it (a copy of a map still being filled
  in) and reads the slide's thumbnail through a reader of its own, so closing the
  slide meanwhile pulls nothing from under it. Quitting waits for the file being
  written (Export All stops after it); no file is ever half-written.
- The report and Export All refuse a map still being filled in; a partial map (a
  cancelled mapping) exports, and its report says it is partial. A multi-patch
  selection (Shift+drag) goes into the report and the summary as a region.
- Failures become a dialog; success a status message. The last export folder is
  remembered in the settings. The view picture is grabbed on the GUI thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QEventLoop, QIODevice, QObject, QSettings, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem

from histoviewer.classes import class_label
from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.gui.legend import draw_heatmap_key, draw_legend, legend_entries
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import JobContext, JobFailure, JobRunner, describe_error
from histoviewer.mapping import export as exports
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.slide import SlideReader
from histoviewer.viewer_state import ViewerState

log = logging.getLogger(__name__)

#: The state's job name while an export runs (:meth:`ViewerState.is_running`).
EXPORTING = "exporting"

#: format -> (menu label, file dialog filter), in menu order.
SINGLE_EXPORTS: dict[str, tuple[str, str]] = {
    "geojson": ("&GeoJSON for QuPath", "GeoJSON (*.geojson)"),
    "geojson.gz": ("GeoJSON for QuPath, Compressed (.g&z)", "Compressed GeoJSON (*.geojson.gz)"),
    "csv": ("&CSV Table", "CSV (*.csv)"),
    "npz": ("&NumPy Arrays (NPZ)", "NumPy archive (*.npz)"),
    "classes-tiff": ("Class &Map (OME-TIFF)", "OME-TIFF (*.ome.tif *.ome.tiff)"),
    "probabilities-tiff": ("Class &Probabilities (OME-TIFF)", "OME-TIFF (*.ome.tif *.ome.tiff)"),
    "png": ("Map &Image (PNG)", "PNG image (*.png)"),
    "report": ("&Report (PDF)", "PDF document (*.pdf)"),
}
#: The File > Export menu's groups: the map's data, then pictures and the report.
DATA_EXPORTS = ("geojson", "geojson.gz", "csv", "npz", "classes-tiff", "probabilities-tiff")
PICTURE_EXPORTS = ("png", "report")
#: What Export All writes: what ``histoviewer map`` writes by default, and the report.
ALL_FORMATS: tuple[str, ...] = (*exports.DEFAULT_FORMATS, "report")

_LAST_DIR = "export/last_dir"
_LIVE_TEXT = "Mapping is still running; export the {what} when it has finished (or cancel it)."
_NO_MAP_TEXT = "There is no tissue map to export yet. Map the slide first (Analysis > Map Tissue)."
# Readers of the descriptions in tooltips see one format at a time.
_TIPS = {"geojson.gz": "QuPath tiles, one per tissue patch, gzip-compressed (QuPath reads it)"}


def export_tip(fmt: str) -> str:
    """What format ``fmt`` is, for its menu item: "QuPath tiles, one per ... (.geojson)"."""
    text = _TIPS.get(fmt, exports.FORMAT_DESCRIPTIONS[fmt])
    return f"{text[:1].upper()}{text[1:]} ({exports.FORMATS[fmt]})"


def all_formats_tip() -> str:
    """What Export All writes, for its menu item."""
    names = {"geojson": "GeoJSON", "csv": "CSV", "png": "map image", "npz": "NPZ"}
    parts = [names.get(f, f) for f in ALL_FORMATS]
    return (
        f"{', '.join(parts[:-1])} and {parts[-1]} (PDF) into one folder, named as "
        "'histoviewer map' names them"
    )


def read_thumbnail(slide: SlideReader, size: int = exports.REPORT_THUMBNAIL) -> np.ndarray:
    """The whole slide within ``size`` px, for a report; runs on an export's thread.

    Read through a reader of its own where the slide has a file: the window may close
    or replace ``slide`` meanwhile (SlideReader reads are thread-safe, but a closed
    reader refuses the next band of the thumbnail).
    """
    if slide.path is not None:
        from histoviewer.slide import open_slide

        try:
            own = open_slide(slide.path)
        except HistoViewerError as exc:  # moved or gone since: the open reader still reads
            log.info("thumbnail read through the open reader: %s", exc)
        else:
            try:
                return own.thumbnail(size)
            finally:
                own.close()
    return slide.thumbnail(size)


def selection_region(tmap: TissueMap, cells: Sequence[tuple[int, int]]) -> exports.Region | None:
    """The patches ``cells`` of ``tmap`` as a report region ("Selected region (12
    patches)", a bool mask over the grid); None for fewer than two patches."""
    mask = np.zeros((tmap.rows, tmap.cols), dtype=bool)
    for r, c in cells:
        if 0 <= r < tmap.rows and 0 <= c < tmap.cols:
            mask[r, c] = True
    count = int(mask.sum())
    if count < 2:
        return None
    return (f"Selected region ({count:,} patches)", mask)


def _steady(tmap: TissueMap, live: bool) -> TissueMap:
    """``tmap`` as it stands: a copy of the arrays a mapping job still fills in."""
    if not live:
        return tmap  # a finished map is never changed: a new job fills in a copy
    return dataclasses.replace(tmap, probs=tmap.probs.copy(), state=tmap.state.copy())


def _names(paths: Sequence[Path]) -> str:
    names = [p.name for p in paths]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class MapExporter(QObject):
    """File > Export: the map shown in ``state``, its report, and pictures of ``view``.

    ``hide_in_pictures`` are view items (the selected patch's outline) left out of
    the view picture; ``selection`` gives the patches selected (row, col), which the
    report and the summary describe as a region when there are two or more.

    Signals: ``finished(bool)`` when an export job ended (True: written), after its
    status message or error dialog.
    """

    finished = Signal(bool)

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        settings: QSettings,
        view: SlideView,
        hide_in_pictures: list[QGraphicsItem] | None = None,
        *,
        selection: Callable[[], Sequence[tuple[int, int]]] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.dialogs = dialogs
        self.settings = settings
        self.view = view
        self.hide_in_pictures = list(hide_in_pictures or [])
        self.selection = selection or (lambda: [])
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.succeeded.connect(self._on_written)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(lambda job_id: self._end(False))
        self._job_folder: Path | None = None
        self._job_done: Callable[[list[Path]], str] = lambda paths: ""
        self._last_ok = False

    # --- names --------------------------------------------------------------------------

    def stem(self) -> str:
        """The name a slide's exports are given: its file's name without the extension,
        as ``histoviewer map`` names them ("slide" for an in-memory slide)."""
        slide, tmap = self.state.slide, self.state.tissue_map
        if slide is not None and slide.path is not None:
            return slide.path.stem
        return exports.slide_stem(tmap) if tmap is not None else "slide"

    def folder(self) -> Path:
        """Where exports are suggested: the last export folder, else the slide's."""
        if folder := self.settings.value(_LAST_DIR, ""):
            return Path(str(folder))
        slide = self.state.slide
        return slide.path.parent if slide is not None and slide.path else Path(".")

    def suggested_path(self, fmt: str) -> Path:
        """The file name suggested for ``fmt``: "<folder>/CMU-1.geojson"."""
        return self.folder() / exports.export_name(self.stem(), fmt)

    # --- the map ------------------------------------------------------------------------

    def is_busy(self) -> bool:
        """Whether an export is being written."""
        return self.runner.is_busy()

    def choose_export(self, fmt: str) -> None:
        """File > Export > one format: ask for a file name, then write it."""
        if not self._ready(fmt):
            return
        label, filters = SINGLE_EXPORTS[fmt]
        title = f"Export {label.replace('&', '')}"
        if path := self.dialogs.ask_save_file(title, str(self.suggested_path(fmt)), filters):
            self.export_map(fmt, path)

    def export_map(self, fmt: str, path: str | Path, *, wait: bool = False) -> bool:
        """Write the shown map as ``fmt`` (a key of ``export.FORMATS``) to ``path`` on
        the export thread; a name without an extension gets the format's.

        True: the export started (``wait``: and was written); False: refused or
        failed, and a dialog said why.
        """
        if not self._ready(fmt):
            return False
        path = Path(path)
        if not path.suffix:
            path = path.with_name(exports.export_name(path.name, fmt))
        return self._start([(fmt, path)], f"export {path.name}", path.parent, wait=wait)

    def choose_export_folder(self) -> None:
        """File > Export > All Formats to Folder: ask for a folder, then write them."""
        if not self._ready("all"):
            return
        if folder := self.dialogs.ask_directory("Export All Formats to Folder", str(self.folder())):
            self.export_all(folder)

    def export_all(
        self, folder: str | Path, stem: str | None = None, *, wait: bool = False
    ) -> bool:
        """Write :data:`ALL_FORMATS` of the shown map into ``folder`` as
        ``<stem><suffix>`` (``stem``: the slide's name). Files of those names there
        are replaced only when the user agrees.

        True: the export started (``wait``: and every file was written); False:
        refused, declined or failed.
        """
        if not self._ready("all"):
            return False
        folder = Path(folder)
        stem = stem or self.stem()
        targets = [(fmt, folder / exports.export_name(stem, fmt)) for fmt in ALL_FORMATS]
        if existing := [p for _, p in targets if p.exists()]:
            n = len(existing)
            count = "the existing export" if n == 1 else f"the {n} existing exports"
            if not self.dialogs.ask_proceed(
                "Replace existing exports?",
                f"Replace {count} of {stem} in {folder}?\n\n{_names(existing)} will be "
                "overwritten.",
                "Replace",
            ):
                self.state.notify("Export All cancelled: nothing was written.")
                return False
        return self._start(targets, f"export the maps of {stem}", folder, wait=wait)

    def wait(self) -> bool:
        """Block (running the event loop) until the running export has ended; whether
        the last export was written."""
        if self.is_busy():
            loop = QEventLoop()
            self.finished.connect(loop.quit)
            try:
                loop.exec()
            finally:
                self.finished.disconnect(loop.quit)
        return self._last_ok

    def shutdown(self) -> None:
        """Wait for the file being written (Export All stops after it); for quitting."""
        if self.is_busy():
            log.info("waiting for the export to finish before quitting")
        self.runner.shutdown()
        self.state.set_running(EXPORTING, False)

    # --- the view -----------------------------------------------------------------------

    def choose_view_export(self) -> None:
        if self.state.slide is None:
            self.dialogs.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return
        suggestion = str(self.folder() / f"{self.stem()}-view.png")
        if path := self.dialogs.ask_save_file("Export View Image", suggestion, "PNG image (*.png)"):
            self.export_view_image(path)

    def view_image(self) -> QImage:
        """What the view shows (slide and overlay, not the selection outline), with
        the legend in a corner when the overlay is shown: the class shown alone, or the
        heatmap's colour bar, when that is what is drawn."""
        hidden = [item for item in self.hide_in_pictures if item.isVisible()]
        for item in hidden:
            item.setVisible(False)
        try:
            image = self.view.viewport().grab().toImage()
        finally:
            for item in hidden:
                item.setVisible(True)
        tmap = self.state.tissue_map
        v = self.state.view_settings
        if tmap is not None and v.overlay_visible:
            painter = QPainter(image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            if v.heatmap_class is not None:  # the key of what is drawn: the colour bar
                draw_heatmap_key(painter, 10, 10, class_label(v.heatmap_class))
            else:  # a class shown alone: its row only
                entries = legend_entries(tmap)
                shown = [e for e in entries if v.solo_class in (None, e.name)]
                draw_legend(painter, 10, 10, shown or entries)
            painter.end()
        return image

    def export_view_image(self, path: str | Path) -> bool:
        """Save :meth:`view_image` as a PNG (atomically, on the GUI thread: a grab)."""
        try:
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            if not self.view_image().save(buffer, "PNG"):
                raise HistoViewerError(f"cannot encode the view image for {path}")
            buffer.close()
            atomic_write_bytes(path, bytes(data.data()))
        except Exception as exc:  # an exporter bug must not take the window down
            if not isinstance(exc, HistoViewerError):
                log.exception("view image export failed")
            failure = describe_error(exc, f"export {Path(path).name}")
            self.dialogs.show_error(failure.title, failure.message)
            return False
        self.settings.setValue(_LAST_DIR, str(Path(path).parent))
        self.state.notify(f"Saved {Path(path).name}")
        return True

    # --- running ------------------------------------------------------------------------

    def _ready(self, fmt: str) -> bool:
        """Whether ``fmt`` ("all": Export All) can be exported now; if not, say why."""
        st = self.state
        if st.tissue_map is None:
            self.dialogs.show_info("No map", _NO_MAP_TEXT)
            return False
        if st.map_is_live and fmt in ("report", "all"):
            what = "report" if fmt == "report" else "maps"
            self.dialogs.show_info("Mapping in progress", _LIVE_TEXT.format(what=what))
            return False
        if self.is_busy():
            self.dialogs.show_info(
                "Export in progress",
                "An export is being written; export again when it has finished.",
            )
            return False
        return True

    def _start(
        self, targets: list[tuple[str, Path]], action: str, folder: Path, *, wait: bool
    ) -> bool:
        st = self.state
        tmap = _steady(st.tissue_map, st.map_is_live)
        region = selection_region(tmap, self.selection())
        regions = [region] if region is not None else []
        slide = st.slide
        count = len(targets)

        def job(ctx: JobContext) -> list[Path]:
            thumbnail = None
            written = []
            for i, (fmt, path) in enumerate(targets):
                if i:  # quitting: stop between files (the first one is always written)
                    ctx.cancel.raise_if_cancelled()
                if count > 1:
                    ctx.progress(f"Exporting {path.name} ({i + 1} of {count})…")
                if fmt == "report" and thumbnail is None and slide is not None:
                    thumbnail = read_thumbnail(slide)
                exports.write_export(tmap, fmt, path, thumbnail=thumbnail, regions=regions)
                written.append(path)
            return written

        self._job_folder = folder
        if count == 1:
            what = "the report" if targets[0][0] == "report" else targets[0][1].name
            st.notify(f"Exporting {what}…", 0)
            self._job_done = lambda paths: f"Exported {paths[0].name}"
        else:
            st.notify(f"Exporting {count} files to {folder}…", 0)
            self._job_done = lambda paths: f"Exported {_names(paths)} to {folder}"
        self._last_ok = False
        self.runner.start(job, action)
        st.set_running(EXPORTING, True)
        return self.wait() if wait else True

    def _on_progress(self, job_id: int, text: object) -> None:
        self.state.notify(str(text), 0)

    def _on_written(self, job_id: int, paths: list[Path]) -> None:
        if self._job_folder is not None:
            self.settings.setValue(_LAST_DIR, str(self._job_folder))
        self.state.notify(self._job_done(paths), 15000)
        self._end(True)

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        self.state.notify("Export failed.", 8000)
        self.dialogs.show_error(failure.title, failure.message)
        self._end(False)

    def _end(self, ok: bool) -> None:
        self._last_ok = ok
        self.state.set_running(EXPORTING, False)
        self.finished.emit(ok)
