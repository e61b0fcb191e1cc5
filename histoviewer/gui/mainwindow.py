"""The main window: a slide, its tissue map, and the panels that explain it.

The window owns the open :class:`~histoviewer.slide.SlideReader`, the loaded
:class:`~histoviewer.model.Classifier` and the shown
:class:`~histoviewer.mapping.TissueMap`. Slow work (mapping, loading a model)
runs in :class:`~histoviewer.gui.workers.JobRunner` jobs; a job's results are
dropped when the slide or model it was made for has been replaced.

Every message to the user goes through :meth:`MainWindow.show_error` /
:meth:`MainWindow.show_info`, and every file question through ``ask_*``
methods, so tests can answer them without a modal dialog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QKeySequence,
    QPainter,
    QPen,
)
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QGraphicsRectItem,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QToolButton,
    QWidget,
)

from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes
from histoviewer.gui import settings as config
from histoviewer.gui.icons import app_icon, icon
from histoviewer.gui.legend import LegendPanel, draw_legend, legend_entries
from histoviewer.gui.overlay import OVERLAY_Z, SELECTION_Z, MapOverlay
from histoviewer.gui.overview import OverviewPanel
from histoviewer.gui.probabilities import PatchPanel
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import JobFailure, JobRunner, describe_error
from histoviewer.mapping import export as exports
from histoviewer.mapping.cache import MapCache, MapKey, map_key
from histoviewer.mapping.engine import BatchResult, MapProgress, map_slide
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap
from histoviewer.model import Classifier, find_shipped_models, load_model
from histoviewer.slide import SlideReader, file_dialog_filter, open_slide

log = logging.getLogger(__name__)

APP_TITLE = "HistoViewer"
MODEL_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt", ".tar")
NO_MODEL_TEXT = (
    "Mapping needs a tissue classifier, and none is loaded. Load one with Model > Load "
    "Model... (a .safetensors file, a model folder, or a .pth.tar / .pt checkpoint), or "
    "train one on the Kather 2016 tiles with 'histoviewer train' and load the result."
)
_SINGLE_EXPORTS = {
    "geojson": ("GeoJSON for QuPath", "GeoJSON (*.geojson)"),
    "csv": ("CSV Table", "CSV (*.csv)"),
    "png": ("Map Image (PNG)", "PNG image (*.png)"),
    "npz": ("NumPy Arrays (NPZ)", "NumPy archive (*.npz)"),
}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_text(p: MapProgress) -> str:
    """'412 / 1,089 patches · 35.2 patches/s · 0:19 left'."""
    return (
        f"{p.done:,} / {p.total:,} patches · {p.rate:.1f} patches/s · {format_duration(p.eta)} left"
    )


class MainWindow(QMainWindow):
    """HistoViewer's main window.

    ``settings`` defaults to the user's QSettings and ``cache`` to a MapCache in
    the user's cache folder (or $HISTOVIEWER_CACHE_DIR); tests pass their own.
    With ``restore_model`` the model used last time (else the first model shipped
    under resources/models) is loaded in the background.

    Signals: ``model_changed(Classifier | None)``, ``slide_changed(SlideReader |
    None)``, ``map_changed(TissueMap | None)`` (the shown map, after a job ended
    or a cached map was found) and ``mapping_finished(TissueMap)`` (complete or,
    after Cancel, partial).
    """

    model_changed = Signal(object)
    slide_changed = Signal(object)
    map_changed = Signal(object)
    mapping_finished = Signal(object)

    def __init__(
        self,
        settings: QSettings | None = None,
        cache: MapCache | None = None,
        *,
        restore_model: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else config.app_settings()
        self.cache = cache if cache is not None else MapCache()
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)

        self._slide: SlideReader | None = None
        self._classifier: Classifier | None = None
        self._model_path: str | None = None
        self._map: TissueMap | None = None  # the finished (or cancelled) map shown
        self._live: TissueMap | None = None  # the map a running job fills in
        self._job_key: MapKey | None = None
        self._job_slides: dict[int, SlideReader] = {}
        self._retired: dict[int, SlideReader] = {}  # readers to close when their job ends
        self._mapping = config.load_mapping_settings(self.settings)
        # Read before the widgets exist: building them saves their defaults.
        view_settings = config.load_view_settings(self.settings)

        self._mapper = JobRunner(self)
        self._mapper.progress.connect(self._on_map_progress)
        self._mapper.partial.connect(self._on_map_batch)
        self._mapper.succeeded.connect(self._on_map_done)
        self._mapper.failed.connect(self._on_map_failed)
        self._mapper.finished.connect(self._on_map_thread_finished)
        self._loader = JobRunner(self)
        self._loader.succeeded.connect(self._on_model_loaded)
        self._loader.failed.connect(self._on_model_failed)
        self._loading_path: str | None = None

        self._build_view()
        self._build_panels()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._apply_view_settings(view_settings)
        self._restore_geometry()
        self._update_actions()

        if restore_model:
            self._restore_model()

    # --- construction -------------------------------------------------------------------

    def _build_view(self) -> None:
        self.view = SlideView(self)
        self.setCentralWidget(self.view)
        self.overlay = MapOverlay()
        self.view.add_layer(self.overlay, OVERLAY_Z)
        self.selection = QGraphicsRectItem()
        pen = QPen(QColor(0, 0, 0), 3)
        pen.setCosmetic(True)  # same width at every zoom
        self.selection.setPen(pen)
        inner = QGraphicsRectItem(self.selection)
        inner_pen = QPen(QColor(255, 255, 255), 1.5)
        inner_pen.setCosmetic(True)
        inner.setPen(inner_pen)
        self._selection_inner = inner
        self.selection.setVisible(False)
        self.view.add_layer(self.selection, SELECTION_Z)
        self.view.clicked.connect(self._on_view_clicked)
        self.view.cursorMoved.connect(self._on_cursor_moved)
        self.view.zoomChanged.connect(self._on_zoom_changed)
        self.view.loadFailed.connect(lambda text: self.show_error("Cannot read the slide", text))
        # The view's viewport would swallow drops; the window handles them.
        self.view.setAcceptDrops(False)
        self.view.viewport().setAcceptDrops(False)

    def _build_panels(self) -> None:
        self.overview = OverviewPanel(self.view)
        self.legend = LegendPanel()
        self.legend.overlayToggled.connect(self.set_overlay_visible)
        self.legend.opacityChanged.connect(self._on_opacity_changed)
        self.legend.shadingToggled.connect(self._on_shading_toggled)
        self.legend.classVisibilityChanged.connect(self.overlay.set_class_visible)
        self.patch_panel = PatchPanel()
        self.overview_dock = self._dock("Overview", "overview", self.overview)
        self.map_dock = self._dock("Map", "map", self.legend)
        self.patch_dock = self._dock("Patch", "patch", self.patch_panel)
        self.resizeDocks(
            [self.overview_dock, self.map_dock, self.patch_dock],
            [220, 300, 420],
            Qt.Orientation.Vertical,
        )
        self.resizeDocks([self.map_dock], [380], Qt.Orientation.Horizontal)

    def _dock(self, title: str, name: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{name}_dock")  # saveState needs stable names
        dock.setWidget(widget)
        dock.setAllowedAreas(
            Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        return dock

    def _action(
        self,
        text: str,
        slot: object,
        *,
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        icon_name: str | None = None,
        tip: str | None = None,
        checkable: bool = False,
    ) -> QAction:
        action = QAction(text, self)
        if icon_name:
            action.setIcon(icon(icon_name))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.setCheckable(checkable)
        (action.toggled if checkable else action.triggered).connect(slot)
        return action

    def _build_actions(self) -> None:
        std = QKeySequence.StandardKey
        a = self._action
        self.open_action = a(
            "&Open Slide...",
            self.choose_slide,
            shortcut=std.Open,
            icon_name="open",
            tip="Open a whole-slide image",
        )
        self.close_action = a(
            "&Close Slide",
            self.close_slide,
            shortcut=std.Close,
            icon_name="close",
            tip="Close the slide",
        )
        self.quit_action = a("&Quit", self.close, shortcut=std.Quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.zoom_in_action = a(
            "Zoom &In", self.view.zoom_in, shortcut=std.ZoomIn, icon_name="zoom-in", tip="Zoom in"
        )
        self.zoom_out_action = a(
            "Zoom &Out",
            self.view.zoom_out,
            shortcut=std.ZoomOut,
            icon_name="zoom-out",
            tip="Zoom out",
        )
        self.fit_action = a(
            "&Fit to Window",
            self.view.fit,
            shortcut="Ctrl+0",
            icon_name="fit",
            tip="Show the whole slide",
        )
        self.actual_size_action = a(
            "&Actual Size",
            self.view.actual_size,
            shortcut="Ctrl+1",
            icon_name="actual-size",
            tip="One slide pixel per screen pixel",
        )
        self.overlay_action = a(
            "Show &Overlay",
            self.set_overlay_visible,
            shortcut="O",
            icon_name="overlay",
            tip="Show or hide the tissue map (O)",
            checkable=True,
        )
        self.overlay_action.setChecked(True)
        self.shading_action = a(
            "&Confidence Shading",
            self._on_shading_toggled,
            tip="Draw patches fainter where the model is unsure",
            checkable=True,
        )
        self.map_action = a(
            "&Map Tissue",
            self.map_tissue,
            shortcut="Ctrl+M",
            icon_name="map",
            tip="Classify every patch of the slide",
        )
        self.remap_action = a(
            "&Re-map Tissue",
            self.remap_tissue,
            shortcut="Ctrl+Shift+M",
            tip="Map the slide again and replace the saved map",
        )
        self.cancel_action = a(
            "&Cancel Mapping",
            self.cancel_mapping,
            icon_name="cancel",
            tip="Stop mapping and keep the patches done so far",
        )
        self.settings_action = a(
            "Mapping &Settings...",
            self.edit_mapping_settings,
            icon_name="settings",
            tip="Stride, device, batch size, background skipping",
        )
        self.load_model_action = a(
            "&Load Model...",
            self.choose_model,
            shortcut="Ctrl+L",
            icon_name="model",
            tip="Load a tissue classifier",
        )
        self.load_model_folder_action = a(
            "Load Model &Folder...",
            self.choose_model_folder,
            tip="Load a model folder holding model.safetensors",
        )
        self.export_view_action = a(
            "&View Image with Overlay...",
            self.choose_view_export,
            tip="Save what the view shows, with the legend",
        )
        self.export_all_action = a(
            "&All Map Formats to Folder...",
            self.choose_export_folder,
            tip="GeoJSON, CSV, PNG, NPZ and a summary",
        )
        self.export_actions = {
            fmt: a(f"{label}...", lambda _=False, f=fmt: self.choose_export(f))
            for fmt, (label, _) in _SINGLE_EXPORTS.items()
        }
        self.about_action = a("&About HistoViewer", self.show_about)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(self.close_action)
        file_menu.addSeparator()
        self.export_menu = file_menu.addMenu(icon("export"), "&Export")
        for action in self.export_actions.values():
            self.export_menu.addAction(action)
        self.export_menu.addAction(self.export_all_action)
        self.export_menu.addSeparator()
        self.export_menu.addAction(self.export_view_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        view_menu = bar.addMenu("&View")
        for action in (
            self.zoom_in_action,
            self.zoom_out_action,
            self.fit_action,
            self.actual_size_action,
        ):
            view_menu.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(self.overlay_action)
        view_menu.addAction(self.shading_action)
        view_menu.addSeparator()
        for dock in (self.overview_dock, self.map_dock, self.patch_dock):
            view_menu.addAction(dock.toggleViewAction())

        analysis = bar.addMenu("&Analysis")
        for action in (self.map_action, self.remap_action, self.cancel_action):
            analysis.addAction(action)
        analysis.addSeparator()
        analysis.addAction(self.settings_action)

        # Other features (Model Info, Train) add their actions to this menu.
        self.model_menu = bar.addMenu("&Model")
        self.model_menu.addAction(self.load_model_action)
        self.model_menu.addAction(self.load_model_folder_action)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.about_action)

    def _build_toolbar(self) -> None:
        tools = self.addToolBar("Main")
        tools.setObjectName("main_toolbar")
        tools.setMovable(False)
        tools.addAction(self.open_action)
        tools.addSeparator()
        for action in (
            self.zoom_in_action,
            self.zoom_out_action,
            self.fit_action,
            self.actual_size_action,
        ):
            tools.addAction(action)
        tools.addSeparator()
        tools.addAction(self.map_action)
        tools.addAction(self.cancel_action)
        tools.addAction(self.overlay_action)
        export_button = QToolButton()
        export_button.setIcon(icon("export"))
        export_button.setToolTip("Export the map or the view")
        export_button.setMenu(self.export_menu)
        export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_button = export_button
        tools.addWidget(export_button)
        tools.addSeparator()
        tools.addAction(self.load_model_action)
        tools.addAction(self.settings_action)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel()
        self.zoom_label = QLabel()
        self.model_label = QLabel("No model")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.progress_label = QLabel()
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(self.cancel_action)
        self.cancel_button.setAutoRaise(True)
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.setVisible(False)
            bar.addPermanentWidget(w)
        for w in (self.cursor_label, self.zoom_label, self.model_label):
            bar.addPermanentWidget(w)

    # --- messages and questions (tests replace these) -----------------------------------

    def show_error(self, title: str, text: str) -> QMessageBox:
        """Tell the user something failed; never blocks (the box is window-modal)."""
        log.warning("%s: %s", title, text)
        return self._message(QMessageBox.Icon.Critical, title, text)

    def show_info(self, title: str, text: str) -> QMessageBox:
        return self._message(QMessageBox.Icon.Information, title, text)

    def _message(self, kind: QMessageBox.Icon, title: str, text: str) -> QMessageBox:
        box = QMessageBox(kind, title, text, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        return box

    def ask_open_file(self, title: str, directory: str, filters: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, title, directory, filters)
        return path or None

    def ask_directory(self, title: str, directory: str) -> str | None:
        return QFileDialog.getExistingDirectory(self, title, directory) or None

    def ask_save_file(self, title: str, suggestion: str, filters: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, title, suggestion, filters)
        return path or None

    # --- state --------------------------------------------------------------------------

    @property
    def slide(self) -> SlideReader | None:
        return self._slide

    @property
    def classifier(self) -> Classifier | None:
        return self._classifier

    @property
    def tissue_map(self) -> TissueMap | None:
        """The map shown: the one being filled in while mapping, else the last result."""
        return self._live if self._live is not None else self._map

    @property
    def mapping_settings(self) -> config.MappingSettings:
        return self._mapping

    def set_mapping_settings(self, s: config.MappingSettings) -> None:
        self._mapping = s
        config.save_mapping_settings(self.settings, s)

    def is_mapping(self) -> bool:
        return self._mapper.is_busy()

    def is_loading_model(self) -> bool:
        return self._loader.is_busy()

    # --- slides -------------------------------------------------------------------------

    def choose_slide(self) -> None:
        start = str(Path(self._slide.path).parent) if self._slide and self._slide.path else ""
        recent = config.recent_files(self.settings)
        if not start and recent:
            start = str(Path(recent[0]).parent)
        if path := self.ask_open_file("Open Slide", start, file_dialog_filter()):
            self.open_slide(path)

    def open_slide(self, path: str | Path) -> bool:
        """Open ``path`` (replacing the current slide); False and a dialog if it fails."""
        path = str(path)
        try:
            reader = open_slide(path)
        except HistoViewerError as exc:
            self.show_error("Cannot open slide", str(exc))
            return False
        except Exception as exc:  # a reader bug must not take the window down
            log.exception("opening %s failed", path)
            failure = describe_error(exc, f"open {Path(path).name}")
            self.show_error(failure.title, failure.message)
            return False
        self.set_slide(reader)
        config.add_recent_file(self.settings, str(Path(path).resolve()))
        return True

    def close_slide(self) -> None:
        self.set_slide(None)

    def set_slide(self, reader: SlideReader | None) -> None:
        """Show an open ``reader`` (the window owns it from now on and closes it)."""
        self._mapper.cancel()  # a running job maps the old slide: drop its results
        old = self._slide
        self._slide = reader
        self._live = None
        self._map = None
        self._select(None)
        self.view.set_slide(reader)
        self._show_map(None)
        if old is not None:
            self._retire(old)
        if reader is None:
            self.setWindowTitle(APP_TITLE)
        else:
            name = reader.path.name if reader.path else "slide"
            self.setWindowTitle(f"{name} — {APP_TITLE}")
            w, h = reader.dimensions
            self.statusBar().showMessage(
                f"{name}: {w:,} x {h:,} px, {reader.mpp:g} µm/px ({reader.mpp_source}), "
                f"{reader.format_name}",
                8000,
            )
            self._restore_cached_map()
        self._update_actions()
        self.slide_changed.emit(reader)

    def _retire(self, reader: SlideReader) -> None:
        """Close ``reader`` now, or when the jobs still reading it have ended."""
        busy = [j for j, r in self._job_slides.items() if r is reader]
        if busy:
            self._retired[busy[-1]] = reader
        else:
            reader.close()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = config.recent_files(self.settings)
        for i, path in enumerate(files):
            label = f"&{i + 1} {Path(path).name}" if i < 9 else Path(path).name
            action = self.recent_menu.addAction(label)
            action.setToolTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_recent(p))
        if not files:
            self.recent_menu.addAction("No recent slides").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction(
                "Clear Recent", lambda: config.clear_recent_files(self.settings)
            )

    def open_recent(self, path: str) -> bool:
        if not Path(path).exists():
            config.remove_recent_file(self.settings, path)
            self.show_error(
                "Cannot open slide",
                f"{path} no longer exists; it was removed from the recent slides.",
            )
            return False
        return self.open_slide(path)

    # --- drag and drop ------------------------------------------------------------------

    @staticmethod
    def _dropped_path(event: QDragEnterEvent | QDropEvent) -> str | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        files = [u.toLocalFile() for u in urls if u.isLocalFile()]
        return files[0] if files else None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_path(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragEnterEvent) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        path = self._dropped_path(event)
        if not path:
            event.ignore()
            return
        event.acceptProposedAction()
        # Let the drag end before a slow open or an error dialog.
        QTimer.singleShot(0, lambda: self.open_dropped(path))

    def open_dropped(self, path: str) -> None:
        """A model file loads as the model; anything else opens as a slide."""
        if path.lower().endswith(MODEL_SUFFIXES) or (Path(path) / "model.safetensors").is_file():
            self.load_model(path)
        else:
            self.open_slide(path)

    # --- models -------------------------------------------------------------------------

    def choose_model(self) -> None:
        start = str(Path(self._model_path).parent) if self._model_path else ""
        filters = "Models (*.safetensors *.pth.tar *.pth *.pt *.tar);;All files (*)"
        if path := self.ask_open_file("Load Model", start, filters):
            self.load_model(path)

    def choose_model_folder(self) -> None:
        start = self._model_path or ""
        if path := self.ask_directory("Load Model Folder", start):
            self.load_model(path)

    def load_model(self, path: str | Path) -> int:
        """Load a model in the background; returns the job id.

        On success it becomes the classifier (:meth:`set_classifier`), on failure
        a dialog explains why and the current model stays.
        """
        path = str(path)
        device = self._mapping.device
        self._loading_path = path
        self.model_label.setText(f"Loading {Path(path).name}...")
        job = self._loader.start(
            lambda ctx: load_model(path, device=device), f"load the model {Path(path).name}"
        )
        self._update_actions()
        return job

    def _restore_model(self) -> None:
        """Load the model used last time, else the first one shipped with the app."""
        last = config.last_model_path(self.settings)
        if last and Path(last).exists():
            self.load_model(last)
        elif shipped := find_shipped_models():
            self.load_model(shipped[0])

    def _on_model_loaded(self, job_id: int, classifier: Classifier) -> None:
        self.set_classifier(classifier, self._loading_path)

    def _on_model_failed(self, job_id: int, failure: JobFailure) -> None:
        self._update_model_label()
        self._update_actions()
        self.show_error(failure.title, failure.message)

    def set_classifier(self, classifier: Classifier | None, path: str | None = None) -> None:
        """Use ``classifier`` for mapping (None unloads it).

        ``path`` is the file it came from and is remembered for the next run
        (a classifier fresh from training may have none). A running mapping is
        stopped, and the map shown becomes the cached one for this model, if any.
        """
        self._mapper.cancel()
        self._live = None
        self._classifier = classifier
        self._model_path = str(path) if path else None
        if path:
            config.set_last_model_path(self.settings, str(path))
        self._update_model_label()
        self._map = None
        self._show_map(None)
        self._restore_cached_map()
        self._update_actions()
        self.model_changed.emit(classifier)

    def _update_model_label(self) -> None:
        clf = self._classifier
        if clf is None:
            self.model_label.setText("No model")
            self.model_label.setToolTip("Model > Load Model... loads one")
        else:
            self.model_label.setText(f"Model: {clf.info.name or clf.info.arch}")
            self.model_label.setToolTip(
                f"{clf.info.arch}, {clf.num_classes} classes, on {clf.device}\n"
                f"{self._model_path or 'not saved to a file'}\nfingerprint {clf.fingerprint[:16]}"
            )

    # --- mapping ------------------------------------------------------------------------

    def _key(self) -> MapKey | None:
        if self._slide is None or self._classifier is None:
            return None
        s = self._mapping
        return map_key(self._slide, self._classifier, s.stride, s.skip_background)

    def _restore_cached_map(self) -> bool:
        key = self._key()
        tmap = self.cache.load(key) if key is not None else None
        if tmap is None:
            return False
        self._map = tmap
        self._show_map(tmap)
        self.statusBar().showMessage(
            f"Showing the saved map from {self._classifier.info.name or 'this model'} "
            f"({tmap.classified_count:,} patches). Analysis > Re-map Tissue maps again.",
            8000,
        )
        self.map_changed.emit(tmap)
        return True

    def map_tissue(self) -> int | None:
        """Map the slide with the loaded model, or show the saved map for it.

        Returns the job id, or None when nothing was started (a saved map was
        shown, or something is missing and a message said what to do).
        """
        return self._start_mapping(use_cache=True)

    def remap_tissue(self) -> int | None:
        """Map the slide again, ignoring and then replacing the saved map."""
        return self._start_mapping(use_cache=False)

    def _start_mapping(self, *, use_cache: bool) -> int | None:
        if self._slide is None:
            self.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return None
        if self._classifier is None:
            self.show_info("No model loaded", NO_MODEL_TEXT)
            return None
        if self.is_mapping():
            return self._mapper.current_job
        if use_cache and self._restore_cached_map():
            return None
        slide, clf, s = self._slide, self._classifier, self._mapping
        try:
            grid = make_grid(slide, clf.info, s.stride)
        except HistoViewerError as exc:
            self.show_error("Cannot map the slide", str(exc))
            return None
        self._live = TissueMap.empty(
            grid, clf.info.class_names, clf.info.class_colors, mpp=slide.mpp
        )
        self._job_key = self._key()
        self._select(None)
        self._show_map(self._live)

        def job(ctx) -> TissueMap:
            return map_slide(
                slide,
                clf,
                stride=s.stride,
                batch_size=s.batch_size,
                skip_background=s.skip_background,
                device=s.device,
                progress=ctx.progress,
                cancel=ctx.cancel,
                on_batch=ctx.partial,
            )

        job_id = self._mapper.start(job, f"map {slide.path.name if slide.path else 'the slide'}")
        self._job_slides[job_id] = slide
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress_label.setText("Finding tissue...")
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.setVisible(True)
        self._update_actions()
        return job_id

    def cancel_mapping(self) -> None:
        """Stop mapping at the next batch; the patches done so far stay on screen."""
        if self.is_mapping():
            self.progress_label.setText("Cancelling...")
            self._mapper.request_stop()

    def _on_map_progress(self, job_id: int, p: MapProgress) -> None:
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)
        self.progress_label.setText(progress_text(p))

    def _on_map_batch(self, job_id: int, batch: BatchResult) -> None:
        live = self._live
        if live is None:
            return
        live.probs[batch.rows, batch.cols] = batch.probs
        live.state[batch.rows, batch.cols] = CLASSIFIED
        self.overlay.refresh()
        self.legend.set_map(live)
        self._refresh_selection()

    def _on_map_done(self, job_id: int, tmap: TissueMap) -> None:
        self._end_job_ui()
        self._live = None
        self._map = tmap
        self._show_map(tmap)
        if tmap.complete and self._job_key is not None:
            try:
                self.cache.save(self._job_key, tmap)
            except (HistoViewerError, ValueError) as exc:
                log.warning("map not cached: %s", exc)
                self.statusBar().showMessage(f"The map could not be saved for next time: {exc}")
            else:
                self.statusBar().showMessage(
                    f"Mapped {tmap.classified_count:,} patches in {format_duration(tmap.elapsed)}.",
                    10000,
                )
        elif not tmap.complete:
            self.statusBar().showMessage(
                f"Mapping cancelled: {tmap.classified_count:,} patches classified, "
                f"{tmap.pending_count:,} not. This partial map is not saved.",
                10000,
            )
        self.map_changed.emit(tmap)
        self.mapping_finished.emit(tmap)

    def _on_map_failed(self, job_id: int, failure: JobFailure) -> None:
        self._end_job_ui()
        self._live = None
        self._show_map(self._map)
        self.show_error(failure.title, failure.message)

    def _on_map_thread_finished(self, job_id: int) -> None:
        self._job_slides.pop(job_id, None)
        if (reader := self._retired.pop(job_id, None)) is not None:
            reader.close()

    def _end_job_ui(self) -> None:
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.setVisible(False)
        self._update_actions()

    def edit_mapping_settings(self) -> None:
        dialog = config.MappingSettingsDialog(self._mapping, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._settings_accepted(dialog.settings()))
        dialog.open()

    def _settings_accepted(self, s: config.MappingSettings) -> None:
        changed = s != self._mapping
        self.set_mapping_settings(s)
        if changed and not self.is_mapping() and self._map is None:
            self._restore_cached_map()

    # --- overlay and panels -------------------------------------------------------------

    def _show_map(self, tmap: TissueMap | None) -> None:
        self.overlay.set_map(tmap)
        self.legend.set_map(tmap)
        self._refresh_selection()
        self._update_actions()

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay.setVisible(visible)
        for control in (self.overlay_action, self.legend.show_overlay):
            if control.isChecked() != visible:
                control.setChecked(visible)
        self._save_view_settings()

    def _on_opacity_changed(self, value: float) -> None:
        self.overlay.setOpacity(value)
        self._save_view_settings()

    def _on_shading_toggled(self, on: bool) -> None:
        self.overlay.set_confidence_shading(on)
        for control in (self.shading_action, self.legend.shading):
            if control.isChecked() != on:
                control.setChecked(on)
        self._save_view_settings()

    def _apply_view_settings(self, v: config.ViewSettings) -> None:
        self.legend.set_opacity(v.opacity)
        self.overlay.setOpacity(v.opacity)
        self.set_overlay_visible(v.overlay_visible)
        self._on_shading_toggled(v.confidence_shading)

    def _save_view_settings(self) -> None:
        config.save_view_settings(
            self.settings,
            config.ViewSettings(
                overlay_visible=self.overlay.isVisible(),
                opacity=self.legend.opacity.value() / 100,
                confidence_shading=self.overlay.confidence_shading(),
            ),
        )

    def _on_view_clicked(self, x: float, y: float) -> None:
        tmap = self.tissue_map
        rc = tmap.patch_at(x, y) if tmap is not None else None
        self._select(rc)
        if rc is not None:
            self.patch_dock.raise_()

    def select_patch(self, row: int, col: int) -> None:
        """Outline patch (row, col) of the shown map and describe it in the Patch panel."""
        self._select((row, col))

    def _select(self, rc: tuple[int, int] | None) -> None:
        tmap = self.tissue_map
        if rc is None or tmap is None or self._slide is None:
            self.selection.setVisible(False)
            self.patch_panel.clear()
            return
        row, col = rc
        x, y, w, h = tmap.patch_box(row, col)
        self.selection.setRect(x, y, w, h)
        self._selection_inner.setRect(x, y, w, h)
        self.selection.setVisible(True)
        try:
            pixels = self._slide.read_region(0, x, y, w, h)
        except HistoViewerError as exc:
            log.warning("patch image not shown: %s", exc)
            pixels = None
        self.patch_panel.show_patch(tmap, row, col, pixels)

    def _refresh_selection(self) -> None:
        """Redescribe the selected patch after the shown map changed (or drop it)."""
        rc = self.patch_panel.row_col
        tmap = self.tissue_map
        if rc is None:
            return
        if tmap is None or rc[0] >= tmap.rows or rc[1] >= tmap.cols:
            self._select(None)
        else:
            self._select(rc)

    def _on_cursor_moved(self, x: float, y: float) -> None:
        if x < 0 or y < 0 or self._slide is None:
            self.cursor_label.clear()
            return
        mpp = self._slide.mpp
        self.cursor_label.setText(f"x {x:,.0f}, y {y:,.0f} px  ({x * mpp:,.1f}, {y * mpp:,.1f} µm)")

    def _on_zoom_changed(self, zoom: float) -> None:
        self.zoom_label.setText(f"Zoom {zoom * 100:.3g} %")

    # --- export -------------------------------------------------------------------------

    def _export_base(self) -> Path:
        """A suggested file name stem: beside the slide, named after it."""
        folder = self.settings.value("export/last_dir", "")
        slide = self._slide.path if self._slide and self._slide.path else Path("slide")
        base = Path(str(folder)) if folder else slide.parent
        return base / f"{slide.stem}.map"

    def choose_export(self, fmt: str) -> None:
        if not self._need_map():
            return
        label, filters = _SINGLE_EXPORTS[fmt]
        suggestion = str(self._export_base()) + exports.FORMATS[fmt]
        if path := self.ask_save_file(f"Export {label}", suggestion, filters):
            self.export_map(fmt, path)

    def export_map(self, fmt: str, path: str | Path) -> bool:
        """Write the shown map as ``fmt`` (geojson, csv, png, npz) to ``path``."""
        writer = {
            "geojson": exports.export_geojson,
            "csv": exports.export_csv,
            "png": exports.export_png,
            "npz": exports.export_npz,
        }[fmt]
        return self._run_export(
            lambda: writer(self.tissue_map, path), Path(path).parent, f"Exported {Path(path).name}"
        )

    def choose_export_folder(self) -> None:
        if not self._need_map():
            return
        base = self._export_base()
        if folder := self.ask_directory("Export All Map Formats", str(base.parent)):
            self.export_all(folder, base.name)

    def export_all(self, folder: str | Path, stem: str) -> bool:
        return self._run_export(
            lambda: exports.export_all(self.tissue_map, folder, stem),
            Path(folder),
            f"Exported GeoJSON, CSV, PNG, NPZ and summary to {folder}",
        )

    def choose_view_export(self) -> None:
        if self._slide is None:
            self.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return
        suggestion = str(self._export_base().with_name(self._export_base().stem + "-view.png"))
        if path := self.ask_save_file("Export View Image", suggestion, "PNG image (*.png)"):
            self.export_view_image(path)

    def view_image(self) -> QImage:
        """What the view shows (slide and overlay), with the legend in a corner."""
        image = self.view.viewport().grab().toImage()
        tmap = self.tissue_map
        if tmap is not None and self.overlay.isVisible():
            painter = QPainter(image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            draw_legend(painter, 10, 10, legend_entries(tmap))
            painter.end()
        return image

    def export_view_image(self, path: str | Path) -> bool:
        """Save :meth:`view_image` as a PNG (atomically); False and a dialog on failure."""

        def write() -> None:
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            if not self.view_image().save(buffer, "PNG"):
                raise HistoViewerError(f"cannot encode the view image for {path}")
            buffer.close()
            atomic_write_bytes(path, bytes(data.data()))

        return self._run_export(write, Path(path).parent, f"Saved {Path(path).name}")

    def _need_map(self) -> bool:
        if self.tissue_map is None:
            self.show_info(
                "No map",
                "There is no tissue map to export yet. Map the slide "
                "first (Analysis > Map Tissue).",
            )
            return False
        return True

    def _run_export(self, write: Callable[[], object], folder: Path, done: str) -> bool:
        try:
            write()
        except HistoViewerError as exc:
            self.show_error("Export failed", str(exc))
            return False
        except Exception as exc:  # an exporter bug must not take the window down
            log.exception("export failed")
            failure = describe_error(exc, "export")
            self.show_error(failure.title, failure.message)
            return False
        self.settings.setValue("export/last_dir", str(folder))
        self.statusBar().showMessage(done, 8000)
        return True

    # --- misc ---------------------------------------------------------------------------

    def show_about(self) -> None:
        from histoviewer import __version__

        self.show_info(
            "About HistoViewer",
            f"HistoViewer {__version__}\n\nMaps eight tissue classes (Kather 2016) across "
            "H&E whole-slide images with a ResNet classifier.",
        )

    def _update_actions(self) -> None:
        has_slide = self._slide is not None
        has_map = self.tissue_map is not None
        mapping = self.is_mapping()
        self.close_action.setEnabled(has_slide)
        for action in (
            self.zoom_in_action,
            self.zoom_out_action,
            self.fit_action,
            self.actual_size_action,
            self.export_view_action,
        ):
            action.setEnabled(has_slide)
        # Map Tissue stays enabled without a model: it then says how to get one.
        self.map_action.setEnabled(not mapping)
        self.remap_action.setEnabled(not mapping and self._map is not None)
        self.cancel_action.setEnabled(mapping)
        for action in [*self.export_actions.values(), self.export_all_action]:
            action.setEnabled(has_map)
        self.load_model_action.setEnabled(not self.is_loading_model())
        self.load_model_folder_action.setEnabled(not self.is_loading_model())
        if self._classifier is None:
            self.map_action.setStatusTip("Load a model first (Model > Load Model...)")
        else:
            self.map_action.setStatusTip("Classify every patch of the slide")

    def _restore_geometry(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            screen = QApplication.primaryScreen()
            size = screen.availableGeometry().size() * 0.8 if screen else None
            self.resize(size if size else self.sizeHint())
        if (state := self.settings.value("window/state")) is not None:
            self.restoreState(state)

    def shutdown(self) -> None:
        """Stop and wait for every job, save the settings, close the slide.

        Idempotent; closing the window calls it.
        """
        self._mapper.shutdown()
        self._loader.shutdown()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self._save_view_settings()
        self.settings.sync()
        self.view.shutdown()
        if self._slide is not None:
            reader, self._slide = self._slide, None
            reader.close()
        for reader in self._retired.values():
            reader.close()
        self._retired.clear()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()
