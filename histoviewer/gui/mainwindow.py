"""The main window: a slide, its tissue map, and the panels that explain it.

The window owns the open :class:`~histoviewer.slide.SlideReader` and wires the
parts that do the work:

- :mod:`~histoviewer.gui.actions` - actions, menus, toolbar, shortcuts;
- :mod:`~histoviewer.gui.mapping_controller` - the mapping job and the maps it makes;
- :mod:`~histoviewer.gui.model_controller` - loading models, Model Info, the status label;
- :mod:`~histoviewer.gui.exporting` - File > Export;
- :mod:`~histoviewer.gui.slide_scale` - the slide's scale: status-bar badge, Set Slide Scale;
- :mod:`~histoviewer.gui.training_dialog` - Model > Train New Model (created on demand).

Slow work runs in :class:`~histoviewer.gui.workers.JobRunner` jobs; a job's
results are dropped when the slide or model it was made for has been replaced.

Every message to the user goes through :meth:`MainWindow.show_error` /
:meth:`MainWindow.show_info`, and every question through ``ask_*`` methods, so
tests can answer them without a modal dialog.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QColor, QDragEnterEvent, QDropEvent, QImage, QPen
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QGraphicsRectItem,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QToolButton,
    QWidget,
)

from histoviewer.errors import HistoViewerError
from histoviewer.gui import actions
from histoviewer.gui import settings as config
from histoviewer.gui.exporting import MapExporter
from histoviewer.gui.icons import app_icon
from histoviewer.gui.legend import LegendPanel
from histoviewer.gui.mapping_controller import MappingController
from histoviewer.gui.model_controller import ModelController, is_model_path
from histoviewer.gui.overlay import OVERLAY_Z, SELECTION_Z, MapOverlay
from histoviewer.gui.overview import OverviewPanel
from histoviewer.gui.probabilities import PatchPanel
from histoviewer.gui.slide_scale import SlideScaleController
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import describe_error
from histoviewer.mapping.cache import MapCache
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import find_shipped_models
from histoviewer.slide import SlideReader, file_dialog_filter, open_slide

if TYPE_CHECKING:
    from histoviewer.model import Classifier

log = logging.getLogger(__name__)

APP_TITLE = "HistoViewer"


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
        self._mapping = config.load_mapping_settings(self.settings)
        self._training_dialog = None  # created on first use (imports matplotlib)
        # Read before the widgets exist: building them saves their defaults.
        view_settings = config.load_view_settings(self.settings)

        self._build_view()
        self._build_panels()
        self._build_status_bar()
        self.scale = SlideScaleController(self, self.scale_button)
        self.mapping = MappingController(self)
        self.models = ModelController(self, self.model_label)
        self.exporter = MapExporter(self)
        # The runners under their old names (tests and callers wait on their signals).
        self._mapper = self.mapping.runner
        self._loader = self.models.runner
        actions.build_actions(self)
        actions.build_menus(self)
        actions.build_toolbar(self)
        self._finish_actions()
        self._apply_view_settings(view_settings)
        self._restore_geometry()
        self.update_actions()

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
        self.view.regionSelected.connect(self._on_region_selected)
        self.view.regionSelectionCancelled.connect(self._on_region_selection_cancelled)
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

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel()
        self.zoom_label = QLabel()
        self.scale_button = QToolButton()  # the slide's um/px; a warning when assumed
        self.model_label = QLabel("No model")
        self.training_label = QLabel()  # "Training: epoch 3/15" while a run goes on
        self.training_label.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.progress_label = QLabel()
        # Room between a long status message (cut off, not elided) and the progress.
        self.progress_label.setContentsMargins(12, 0, 0, 0)
        self.cancel_button = QToolButton()
        self.cancel_button.setAutoRaise(True)
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.setVisible(False)
            bar.addPermanentWidget(w)
        for w in (
            self.training_label,
            self.cursor_label,
            self.zoom_label,
            self.scale_button,
            self.model_label,
        ):
            bar.addPermanentWidget(w)

    def _finish_actions(self) -> None:
        self.cancel_button.setDefaultAction(self.cancel_action)
        self.train_action = actions.make_action(
            self,
            "&Train New Model...",
            self.open_training_dialog,
            tip="Train a tissue classifier on your own labelled tiles",
        )
        self.model_info_action = actions.make_action(
            self,
            "Model &Info...",
            self.show_model_info,
            shortcut="Ctrl+I",
            tip="Classes, colours, input size, scale, training data and metrics of the model",
        )
        self.model_menu.addSeparator()
        self.model_menu.addAction(self.model_info_action)
        self.model_menu.addSeparator()
        self.model_menu.addAction(self.train_action)

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

    def ask_slide_scale(self, current: float, text: str) -> float | None:
        """The slide's um/px the user enters (None: cancelled)."""
        value, ok = QInputDialog.getDouble(
            self, "Set Slide Scale", text, current, 0.05, 40.0, 4, step=0.01
        )
        return float(value) if ok else None

    def ask_proceed(self, title: str, text: str, proceed: str) -> bool:
        """A warning with ``proceed`` and Cancel buttons (Cancel the default)."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self)
        go = box.addButton(proceed, QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.exec()
        return box.clickedButton() is go

    def ask_yes_no(self, title: str, text: str) -> bool:
        """A blocking yes / no question (only for quitting with a training run going)."""
        answer = QMessageBox.question(
            self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        )
        return answer == QMessageBox.StandardButton.Yes

    # --- state --------------------------------------------------------------------------

    @property
    def slide(self) -> SlideReader | None:
        return self._slide

    @property
    def classifier(self) -> Classifier | None:
        return self.models.classifier

    @property
    def model_path(self) -> str | None:
        """The file the model in use was loaded from (None for one fresh from memory)."""
        return self.models.path

    @property
    def tissue_map(self) -> TissueMap | None:
        """The map shown: the one being filled in while mapping, else the last result."""
        return self.mapping.shown

    @property
    def mapping_settings(self) -> config.MappingSettings:
        return self._mapping

    def set_mapping_settings(self, s: config.MappingSettings) -> None:
        self._mapping = s
        config.save_mapping_settings(self.settings, s)

    def is_mapping(self) -> bool:
        return self.mapping.is_busy()

    def is_loading_model(self) -> bool:
        return self.models.is_loading()

    def is_training(self) -> bool:
        return self._training_dialog is not None and self._training_dialog.is_running()

    # --- slides -------------------------------------------------------------------------

    def choose_slide(self) -> None:
        start = str(Path(self._slide.path).parent) if self._slide and self._slide.path else ""
        recent = config.recent_files(self.settings)
        if not start and recent:
            start = str(Path(recent[0]).parent)
        if path := self.ask_open_file("Open Slide", start, file_dialog_filter()):
            self.open_slide(path)

    def open_slide(self, path: str | Path) -> bool:
        """Open ``path`` (replacing the current slide); False and a dialog if it fails.

        While a map is being made the user is asked first (False: they chose to stay);
        the partial map is saved, and Map Tissue continues it when the slide is back.
        """
        path = str(path)
        if self.is_mapping() and not self.ask_proceed(
            "Mapping in progress",
            f"{self._slide_name()} is being mapped. Open {Path(path).name} instead?\n\n"
            "The patches classified so far are kept: Map Tissue continues from them when "
            "you open this slide again.",
            "Keep Partial Map and Open",
        ):
            return False
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
        self.scale.adopt(reader)
        self.set_slide(reader)
        config.add_recent_file(self.settings, str(Path(path).resolve()))
        return True

    def close_slide(self) -> None:
        """Close the slide; a map being made stops, and its partial map is saved."""
        self.set_slide(None)

    def _slide_name(self) -> str:
        slide = self._slide
        return slide.path.name if slide is not None and slide.path else "The slide"

    def set_slide(self, reader: SlideReader | None) -> None:
        """Show an open ``reader`` (the window owns it from now on and closes it)."""
        self.mapping.reset()  # a running job maps the old slide: it stops and saves its work
        old = self._slide
        self._slide = reader
        self._select(None)
        self.view.set_slide(reader)
        self.show_map(None)
        if old is not None:
            self.mapping.retire(old)
        if reader is None:
            self.setWindowTitle(APP_TITLE)
        else:
            name = reader.path.name if reader.path else "slide"
            self.setWindowTitle(f"{name} — {APP_TITLE}")
            w, h = reader.dimensions
            self.statusBar().showMessage(
                f"{name}: {w:,} x {h:,} px, {reader.mpp:.4g} µm/px ({reader.mpp_source}), "
                f"{reader.format_name}",
                8000,
            )
            self.mapping.restore_cached()
        self.scale.update_badge()
        self.update_actions()
        self.slide_changed.emit(reader)

    def choose_slide_scale(self) -> None:
        """Analysis > Set Slide Scale: ask for the slide's um/px and use it."""
        self.scale.ask_and_set()

    def set_slide_scale(self, mpp: float | None) -> bool:
        """Use ``mpp`` um/px as the open slide's scale (None: its file's again).

        Remembered for the slide's file. The map shown is dropped, since its patches
        were cut at the old scale; a saved map for the new scale is shown if there
        is one. Refused (False, with a message) while mapping or for a value outside
        0.05-40 um/px.
        """
        slide = self._slide
        if slide is None:
            return False
        if self.is_mapping():
            self.show_info(
                "Mapping in progress",
                "The slide's scale decides the size of every patch: cancel the mapping "
                "before changing it.",
            )
            return False
        try:
            self.scale.apply(slide, mpp)
        except ValueError as exc:
            self.show_error("Cannot set the slide's scale", str(exc).capitalize())
            return False
        self.mapping.reset()
        self.show_map(None)
        self.mapping.restore_cached()
        self.statusBar().showMessage(
            f"Slide scale: {slide.mpp:g} µm/px ({slide.mpp_source}).", 8000
        )
        self.update_actions()
        return True

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
        if is_model_path(path):
            self.load_model(path)
        else:
            self.open_slide(path)

    # --- models -------------------------------------------------------------------------

    def choose_model(self) -> None:
        self.models.choose_model()

    def choose_model_folder(self) -> None:
        self.models.choose_model_folder()

    def load_model(self, path: str | Path) -> int:
        """Load a model in the background; returns the job id.

        On success it becomes the classifier (:meth:`set_classifier`), on failure
        a dialog explains why and the current model stays.
        """
        return self.models.load(path)

    def _restore_model(self) -> None:
        """Load the model used last time, else the first one shipped with the app."""
        last = config.last_model_path(self.settings)
        if last and Path(last).exists():
            self.load_model(last)
        elif shipped := find_shipped_models():
            self.load_model(shipped[0])

    def set_classifier(self, classifier: Classifier | None, path: str | None = None) -> None:
        """Use ``classifier`` for mapping (None unloads it).

        ``path`` is the file it came from and is remembered for the next run
        (a classifier fresh from training may have none). A running mapping is
        stopped, and the map shown becomes the cached one for this model, if any.
        """
        self.mapping.reset()
        self.models.set_current(classifier, path)
        self.show_map(None)
        self.mapping.restore_cached()
        self.scale.update_badge()
        self.update_actions()
        self.model_changed.emit(classifier)

    def show_model_info(self):
        """Model > Model Info: the model in use, its classes, scale, training and metrics."""
        return self.models.show_info()

    def open_training_dialog(self):
        """Model > Train New Model: show the (single, non-modal) training dialog."""
        if self._training_dialog is None:
            from histoviewer.gui.training_dialog import TrainingDialog

            self._training_dialog = TrainingDialog(self.settings, self)
            self._training_dialog.use_model.connect(self._use_trained_model)
            self._training_dialog.state_changed.connect(self._on_training_state)
            self._training_dialog.run_finished.connect(self._on_training_finished)
        self._training_dialog.show()
        self._training_dialog.raise_()
        self._training_dialog.activateWindow()
        return self._training_dialog

    @property
    def training_dialog(self):
        """The training dialog, or None before Model > Train New Model was first used."""
        return self._training_dialog

    def _use_trained_model(self, classifier: Classifier, path: str) -> None:
        self.set_classifier(classifier, path)
        self.statusBar().showMessage(f"Using the model trained in {Path(path).parent}", 8000)

    def _on_training_finished(self, result) -> None:
        if result.cancelled:
            text = f"Training stopped after epoch {result.epochs_done}; it can be resumed."
        else:
            accuracy = (result.test_metrics or {}).get("accuracy", 0.0)
            text = (
                f"Training finished: test accuracy {accuracy * 100:.1f} %. "
                "Model > Train New Model... shows the results."
            )
        self.statusBar().showMessage(text, 15000)

    def _on_training_state(self, text: str) -> None:
        self.training_label.setText(text)
        self.training_label.setVisible(bool(text))

    # --- mapping ------------------------------------------------------------------------

    def map_tissue(self) -> int | None:
        """Map the slide with the loaded model, or show the saved map for it.

        Returns the job id, or None when nothing was started (a saved map was
        shown, or something is missing and a message said what to do).
        """
        return self.mapping.start(use_cache=True)

    def remap_tissue(self) -> int | None:
        """Map the slide again, ignoring and then replacing the saved map."""
        return self.mapping.start(use_cache=False)

    def map_tissue_region(self, x: float, y: float, w: float, h: float) -> int | None:
        """Map only the patches touching the level-0 rectangle (x, y, w, h), into the
        slide's partial map (continued by a later Map Tissue). Returns the job id."""
        if self._slide is not None:
            area = QRectF(x, y, w, h).intersected(self.view.slide_rect())
            if area.isEmpty():
                self.show_info("Map Region", "The region lies outside the slide.")
                return None
            x, y, w, h = area.x(), area.y(), area.width(), area.height()
        x0, y0 = math.floor(x), math.floor(y)
        region = (x0, y0, max(1, math.ceil(x + w) - x0), max(1, math.ceil(y + h) - y0))
        return self.mapping.start(use_cache=True, region=region)

    def map_region(self) -> bool:
        """Analysis > Map Region: the next drag on the slide chooses the region to map
        (Esc cancels). False when nothing can be mapped yet (a message says why)."""
        if self._slide is None:
            self.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return False
        if self.classifier is None:
            self.mapping.start(use_cache=True)  # says how to get a model
            return False
        if self.is_mapping():
            return False
        self.view.start_region_selection()
        self.statusBar().showMessage(
            "Map Region: drag a rectangle over the part of the slide to map (Esc cancels)."
        )
        return True

    def map_current_view(self) -> int | None:
        """Analysis > Map Current View: map the part of the slide the view shows."""
        if self._slide is None:
            self.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return None
        area = self.view.visible_rect()
        return self.map_tissue_region(area.x(), area.y(), area.width(), area.height())

    def _on_region_selected(self, rect: QRectF) -> None:
        self.statusBar().clearMessage()
        self.map_tissue_region(rect.x(), rect.y(), rect.width(), rect.height())

    def _on_region_selection_cancelled(self) -> None:
        self.statusBar().showMessage("Map Region cancelled.", 4000)

    def cancel_mapping(self) -> None:
        """Stop mapping at the next batch; the patches done so far stay on screen and
        are saved, so Map Tissue continues from them."""
        self.mapping.cancel()

    def edit_mapping_settings(self) -> None:
        dialog = config.MappingSettingsDialog(self._mapping, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._settings_accepted(dialog.settings()))
        dialog.open()

    def _settings_accepted(self, s: config.MappingSettings) -> None:
        changed = s != self._mapping
        self.set_mapping_settings(s)
        if changed and not self.is_mapping() and self.mapping.result is None:
            self.mapping.restore_cached()

    # --- overlay and panels -------------------------------------------------------------

    def show_map(self, tmap: TissueMap | None) -> None:
        self.overlay.set_map(tmap)
        self.legend.set_map(tmap)
        self.refresh_selection()
        self.update_actions()

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

    def clear_selection(self) -> None:
        """Drop the selected patch (outline and Patch panel)."""
        self._select(None)

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

    def refresh_selection(self) -> None:
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

    # --- export (see exporting.py) ------------------------------------------------------

    def choose_export(self, fmt: str) -> None:
        self.exporter.choose_export(fmt)

    def export_map(self, fmt: str, path: str | Path) -> bool:
        """Write the shown map as ``fmt`` (geojson, csv, png, npz) to ``path``."""
        return self.exporter.export_map(fmt, path)

    def choose_export_folder(self) -> None:
        self.exporter.choose_export_folder()

    def export_all(self, folder: str | Path, stem: str) -> bool:
        """Write every map format and a summary to ``folder`` as ``stem.*``."""
        return self.exporter.export_all(folder, stem)

    def choose_view_export(self) -> None:
        self.exporter.choose_view_export()

    def view_image(self) -> QImage:
        """What the view shows (slide and overlay), with the legend in a corner."""
        return self.exporter.view_image()

    def export_view_image(self, path: str | Path) -> bool:
        """Save :meth:`view_image` as a PNG (atomically); False and a dialog on failure."""
        return self.exporter.export_view_image(path)

    # --- misc ---------------------------------------------------------------------------

    def show_about(self) -> None:
        from histoviewer import __version__

        self.show_info(
            "About HistoViewer",
            f"HistoViewer {__version__}\n\nMaps eight tissue classes (Kather 2016) across "
            "H&E whole-slide images with a ResNet classifier.",
        )

    def update_actions(self) -> None:
        if hasattr(self, "model_info_action"):  # not while the window is being built
            actions.update_actions(self)
            self.model_info_action.setEnabled(self.classifier is not None)

    def _restore_geometry(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            screen = QApplication.primaryScreen()
            size = screen.availableGeometry().size() * 0.8 if screen else None
            self.resize(size if size else self.sizeHint())
        if (state := self.settings.value("window/state")) is not None:
            self.restoreState(state)

    def shutdown(self) -> None:
        """Stop and wait for every job (a training run keeps its last epoch), save the
        settings, close the slide.

        Idempotent; closing the window calls it.
        """
        if self._training_dialog is not None:
            self._training_dialog.shutdown()
        self.mapping.shutdown()
        self.models.shutdown()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self._save_view_settings()
        self.settings.sync()
        self.view.shutdown()
        if self._slide is not None:
            reader, self._slide = self._slide, None
            reader.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.is_training() and not self.ask_yes_no(
            "Stop training?",
            "A model is being trained. Quit and stop it? The run can be resumed later "
            "from its last completed epoch (Model > Train New Model > Resume).",
        ):
            event.ignore()
            return
        if self.is_mapping() and not self.ask_proceed(
            "Mapping in progress",
            f"{self._slide_name()} is being mapped. Quit now?\n\n"
            "The patches classified so far are kept: Map Tissue continues from them when "
            "you open the slide again.",
            "Keep Partial Map and Quit",
        ):
            event.ignore()
            return
        self.shutdown()
        event.accept()
