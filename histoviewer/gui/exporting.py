"""File > Export: the shown tissue map in every format, and a picture of the view.

:class:`MapExporter` exports the map shown in the
:class:`~histoviewer.viewer_state.ViewerState`. It asks for file names through
:class:`~histoviewer.gui.dialogs.UserDialogs` (tests answer) and writes through
:mod:`histoviewer.mapping.export` (atomic writes). Failures become a dialog; success
a status message. The last export folder is remembered in the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSettings
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem

from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.gui.legend import draw_legend, legend_entries
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import describe_error
from histoviewer.mapping import export as exports
from histoviewer.viewer_state import ViewerState

log = logging.getLogger(__name__)

#: format -> (menu label, file dialog filter)
SINGLE_EXPORTS = {
    "geojson": ("GeoJSON for QuPath", "GeoJSON (*.geojson)"),
    "csv": ("CSV Table", "CSV (*.csv)"),
    "png": ("Map Image (PNG)", "PNG image (*.png)"),
    "npz": ("NumPy Arrays (NPZ)", "NumPy archive (*.npz)"),
}

_LAST_DIR = "export/last_dir"


class MapExporter:
    """File > Export: the map shown in ``state``, and pictures of ``view``.

    ``hide_in_pictures`` are view items (the selected patch's outline) left out of
    the view picture.
    """

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        settings: QSettings,
        view: SlideView,
        hide_in_pictures: list[QGraphicsItem] | None = None,
    ) -> None:
        self.state = state
        self.dialogs = dialogs
        self.settings = settings
        self.view = view
        self.hide_in_pictures = list(hide_in_pictures or [])

    def _base(self) -> Path:
        """A suggested file name stem: beside the slide, named after it."""
        folder = self.settings.value(_LAST_DIR, "")
        slide = self.state.slide
        slide = slide.path if slide and slide.path else Path("slide")
        base = Path(str(folder)) if folder else slide.parent
        return base / f"{slide.stem}.map"

    def choose_export(self, fmt: str) -> None:
        if not self._need_map():
            return
        label, filters = SINGLE_EXPORTS[fmt]
        suggestion = str(self._base()) + exports.FORMATS[fmt]
        if path := self.dialogs.ask_save_file(f"Export {label}", suggestion, filters):
            self.export_map(fmt, path)

    def export_map(self, fmt: str, path: str | Path) -> bool:
        writer = {
            "geojson": exports.export_geojson,
            "csv": exports.export_csv,
            "png": exports.export_png,
            "npz": exports.export_npz,
        }[fmt]
        return self._run(
            lambda: writer(self.state.tissue_map, path),
            Path(path).parent,
            f"Exported {Path(path).name}",
        )

    def choose_export_folder(self) -> None:
        if not self._need_map():
            return
        base = self._base()
        if folder := self.dialogs.ask_directory("Export All Map Formats", str(base.parent)):
            self.export_all(folder, base.name)

    def export_all(self, folder: str | Path, stem: str) -> bool:
        return self._run(
            lambda: exports.export_all(self.state.tissue_map, folder, stem),
            Path(folder),
            f"Exported GeoJSON, CSV, PNG, NPZ and summary to {folder}",
        )

    def choose_view_export(self) -> None:
        if self.state.slide is None:
            self.dialogs.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return
        base = self._base()
        suggestion = str(base.with_name(base.stem + "-view.png"))
        if path := self.dialogs.ask_save_file("Export View Image", suggestion, "PNG image (*.png)"):
            self.export_view_image(path)

    def view_image(self) -> QImage:
        """What the view shows (slide and overlay, not the selection outline), with
        the legend in a corner when the overlay is shown."""
        hidden = [item for item in self.hide_in_pictures if item.isVisible()]
        for item in hidden:
            item.setVisible(False)
        try:
            image = self.view.viewport().grab().toImage()
        finally:
            for item in hidden:
                item.setVisible(True)
        tmap = self.state.tissue_map
        if tmap is not None and self.state.view_settings.overlay_visible:
            painter = QPainter(image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            draw_legend(painter, 10, 10, legend_entries(tmap))
            painter.end()
        return image

    def export_view_image(self, path: str | Path) -> bool:
        def write() -> None:
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            if not self.view_image().save(buffer, "PNG"):
                raise HistoViewerError(f"cannot encode the view image for {path}")
            buffer.close()
            atomic_write_bytes(path, bytes(data.data()))

        return self._run(write, Path(path).parent, f"Saved {Path(path).name}")

    def _need_map(self) -> bool:
        if self.state.tissue_map is None:
            self.dialogs.show_info(
                "No map",
                "There is no tissue map to export yet. Map the slide "
                "first (Analysis > Map Tissue).",
            )
            return False
        return True

    def _run(self, write: Callable[[], object], folder: Path, done: str) -> bool:
        try:
            write()
        except HistoViewerError as exc:
            self.dialogs.show_error("Export failed", str(exc))
            return False
        except Exception as exc:  # an exporter bug must not take the window down
            log.exception("export failed")
            failure = describe_error(exc, "export")
            self.dialogs.show_error(failure.title, failure.message)
            return False
        self.settings.setValue(_LAST_DIR, str(folder))
        self.state.notify(done)
        return True
