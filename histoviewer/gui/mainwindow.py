"""The main window: a slide, its tissue map, and the panels that explain it.

The window builds the viewer's parts and wires them through one
:class:`~histoviewer.viewer_state.ViewerState` (slide, model, map, selection,
settings, jobs), which emits a signal for each change:

- :mod:`~histoviewer.gui.actions` - actions, menus, toolbar, shortcuts;
- :mod:`~histoviewer.gui.mapping_controller` - the mapping job and the maps it makes;
- :mod:`~histoviewer.gui.model_controller` - loading models, Model Info;
- :mod:`~histoviewer.gui.exporting` - File > Export;
- :mod:`~histoviewer.gui.labelling` - patch labels: selecting, labelling, drawing,
  saving, Edit > Undo / Redo, File > Import / Export Labels;
- :mod:`~histoviewer.gui.slide_scale` - the slide's scale: status-bar badge, Set Slide Scale;
- :mod:`~histoviewer.gui.training_dialog` - Model > Train New Model (created on demand).

The controllers change the state and listen to it; the window's widgets (view,
overlay, legend, Patch panel, status bar) follow it. None of them imports the
window: they ask the user through :class:`~histoviewer.gui.dialogs.UserDialogs`,
which the window implements. Every message to the user goes through
:meth:`MainWindow.show_error` / :meth:`MainWindow.show_info`, and every question
through ``ask_*`` methods, so tests can answer them without a modal dialog.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QFrame,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QToolButton,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.errors import HistoViewerError
from histoviewer.gui import actions
from histoviewer.gui import settings as config
from histoviewer.gui.exporting import MapExporter
from histoviewer.gui.icons import app_icon
from histoviewer.gui.labelling import LabelController
from histoviewer.gui.legend import LegendPanel
from histoviewer.gui.mapping_controller import MappingController
from histoviewer.gui.model_controller import ModelController, is_model_path, model_name
from histoviewer.gui.overlay import OVERLAY_Z, SELECTION_Z, MapOverlay
from histoviewer.gui.overview import OverviewPanel
from histoviewer.gui.probabilities import PatchPanel
from histoviewer.gui.review import ReviewPanel
from histoviewer.gui.selection import PatchOutline
from histoviewer.gui.shortcuts import ShortcutsDialog, research_use_text
from histoviewer.gui.slide_scale import SlideScaleController
from histoviewer.gui.slideview import SlideView
from histoviewer.gui.workers import describe_error
from histoviewer.labels.store import LabelStore
from histoviewer.mapping.cache import MapCache
from histoviewer.mapping.summary_text import partial_map_text
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import find_shipped_models
from histoviewer.model.describe import percent, recorded_test_accuracy
from histoviewer.slide import SlideReader, file_dialog_filter, open_slide
from histoviewer.slide.demo_slide import (
    DEMO_MISSING,
    KATHER_2016_CREDIT,
    demo_slide_path,
    truth_for_slide,
)
from histoviewer.slide.magnification import format_magnification
from histoviewer.viewer_state import (
    LOADING_MODEL,
    MAPPING,
    TRAINING,
    MappingSettings,
    ViewerState,
    ViewSettings,
)

if TYPE_CHECKING:
    from histoviewer.model import Classifier

log = logging.getLogger(__name__)

APP_TITLE = "HistoViewer"

#: Dock heights asked for at first start (the docks scroll when the window is smaller).
#: The Map panel's quantities fit under its table from about 1000 px high.
DOCK_HEIGHTS = {"overview": 120, "map": 340, "patch": 300}


class MainWindow(QMainWindow):
    """HistoViewer's main window.

    ``settings`` defaults to the user's QSettings and ``cache`` to a MapCache in
    the user's cache folder (or $HISTOVIEWER_CACHE_DIR), ``labels`` to a LabelStore in
    the user's data folder (or $HISTOVIEWER_LABELS_DIR); tests pass their own.
    With ``restore_model`` the model used last time (else the first model shipped
    under resources/models) is loaded in the background.

    :attr:`state` is the viewer's state. Signals, for callers that watch the window:
    ``model_changed(Classifier | None)``, ``slide_changed(SlideReader | None)``,
    ``map_changed(TissueMap | None)`` (another map shown) and
    ``mapping_finished(TissueMap)`` (a job ended, complete or, after Cancel, partial).
    """

    model_changed = Signal(object)
    slide_changed = Signal(object)
    map_changed = Signal(object)
    mapping_finished = Signal(object)

    def __init__(
        self,
        settings: QSettings | None = None,
        cache: MapCache | None = None,
        labels: LabelStore | None = None,
        *,
        restore_model: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else config.app_settings()
        self.cache = cache if cache is not None else MapCache()
        self.label_store = labels if labels is not None else LabelStore()
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.state = ViewerState(
            config.load_mapping_settings(self.settings), config.load_view_settings(self.settings)
        )
        self._training_dialog = None  # created on first use (imports matplotlib)

        self._build_view()
        self._build_panels()
        self._build_status_bar()
        # The window follows the state first: its messages come before the controllers'.
        self._follow_state()
        self.scale = SlideScaleController(
            self.state, self, self.settings, self.scale_button, parent=self
        )
        self.mapping = MappingController(self.state, self, self.cache, self.view, parent=self)
        self.mapping.progress_changed.connect(self._on_mapping_progress)
        self.mapping.progress_reported.connect(self.legend.set_progress)
        self.mapping.finished.connect(self.mapping_finished)
        self.models = ModelController(self.state, self, self.settings, parent=self)
        self.labelling = LabelController(
            self.state, self, self.label_store, self.view, self.patch_panel, parent=self
        )
        # Several patches selected: the Map panel gives their quantities too.
        self.labelling.cellsSelected.connect(self._on_cells_selected)
        self.statusBar().insertPermanentWidget(0, self.labelling.count_label)
        self.exporter = MapExporter(
            self.state,
            self,
            self.settings,
            self.view,
            hide_in_pictures=[self.outline, self.labelling.selection_layer],
            selection=self.labelling.selected_cells,
            parent=self,
        )
        actions.build_actions(self)
        actions.build_menus(self)
        actions.build_toolbar(self)
        self.cancel_button.setDefaultAction(self.cancel_action)
        self.view.set_empty_actions(
            [
                self.open_action,
                self.recent_menu.menuAction(),
                self.open_demo_action,
                self.load_model_action,
            ]
        )
        self._show_view_settings(self.state.view_settings)
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
        self.outline = PatchOutline()
        self.view.add_layer(self.outline, SELECTION_Z)
        self.view.clicked.connect(self._on_view_clicked)
        self.view.cursorMoved.connect(self._on_cursor_moved)
        self.view.zoomChanged.connect(self._show_zoom)
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
        self.legend.shadingToggled.connect(self.set_confidence_shading)
        self.legend.classVisibilityChanged.connect(self.overlay.set_class_visible)
        self.legend.soloChosen.connect(self.show_only_class)
        self.legend.heatmapChosen.connect(self.show_heatmap)
        self.patch_panel = PatchPanel()
        self.overview_dock = self._dock("Overview", "overview", self.overview)
        self.map_dock = self._dock("Map", "map", self.legend)
        self.patch_dock = self._dock("Patch", "patch", self.patch_panel)
        docks = [self.overview_dock, self.map_dock, self.patch_dock]
        self.resizeDocks(docks, list(DOCK_HEIGHTS.values()), Qt.Orientation.Vertical)
        self.resizeDocks([self.map_dock], [380], Qt.Orientation.Horizontal)
        # Review shares the Patch panel's place (a tab): a 768 px screen has no room
        # for a fourth panel in the column.
        self.review = ReviewPanel(self.state)
        self.review.patchChosen.connect(self.view.center_on)
        self.review.uncertainOnlyToggled.connect(self.set_uncertain_only)
        self.review.thresholdChanged.connect(
            lambda value: self.state.update_view_settings(uncertain_threshold=float(value))
        )
        self.review_dock = self._dock("Review", "review", self.review)
        self.tabifyDockWidget(self.patch_dock, self.review_dock)
        self.patch_dock.raise_()

    def _dock(self, title: str, name: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{name}_dock")  # saveState needs stable names
        # A panel taller than its share of the window scrolls; it never makes the
        # window taller than the screen.
        scroll = QScrollArea()
        scroll.setWidget(widget)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        dock.setWidget(scroll)
        dock.setAllowedAreas(
            Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel()
        self.zoom_label = QLabel()
        self.scale_button = QToolButton()  # the slide's µm/px; a warning when assumed
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
        self._show_model(None, None)

    def _follow_state(self) -> None:
        st = self.state
        st.slide_changed.connect(self._on_slide_changed)
        st.slide_scale_changed.connect(lambda slide: self._show_zoom(self.view.zoom()))
        st.model_changed.connect(self._on_model_changed)
        st.map_changed.connect(self._on_map_changed)
        st.map_updated.connect(self._on_map_updated)
        st.selection_changed.connect(self._on_selection_changed)
        st.mapping_settings_changed.connect(
            lambda s: config.save_mapping_settings(self.settings, s)
        )
        st.view_settings_changed.connect(self._on_view_settings_changed)
        st.jobs_changed.connect(self._on_jobs_changed)
        st.labels_changed.connect(lambda labels: self.update_actions())
        st.message.connect(self._show_message)

    def _show_message(self, text: str, milliseconds: int) -> None:
        self.statusBar().showMessage(text, milliseconds)

    # --- messages and questions (tests replace these) -----------------------------------

    def show_error(self, title: str, text: str) -> QMessageBox:
        """Tell the user something failed; never blocks (the box is window-modal)."""
        log.warning("%s: %s", title, text)
        return self._message(QMessageBox.Icon.Critical, title, text)

    def show_info(self, title: str, text: str) -> QMessageBox:
        return self._message(QMessageBox.Icon.Information, title, text)

    def show_warning(self, title: str, text: str) -> QMessageBox:
        log.warning("%s: %s", title, text)
        return self._message(QMessageBox.Icon.Warning, title, text)

    def dialog_parent(self) -> QWidget:
        return self

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
        """The slide's µm/px the user enters (None: cancelled)."""
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
        return self.state.slide

    @property
    def classifier(self) -> Classifier | None:
        return self.state.classifier

    @property
    def model_path(self) -> str | None:
        """The file the model in use was loaded from (None for one fresh from memory)."""
        return self.state.model_path

    @property
    def tissue_map(self) -> TissueMap | None:
        """The map shown: the one being filled in while mapping, else the last result."""
        return self.state.tissue_map

    @property
    def mapping_settings(self) -> MappingSettings:
        return self.state.mapping_settings

    def set_mapping_settings(self, s: MappingSettings) -> None:
        self.state.set_mapping_settings(s)

    def is_mapping(self) -> bool:
        return self.mapping.is_busy()

    def is_loading_model(self) -> bool:
        return self.models.is_loading()

    def is_training(self) -> bool:
        return self._training_dialog is not None and self._training_dialog.is_running()

    # --- slides -------------------------------------------------------------------------

    def choose_slide(self) -> None:
        slide = self.state.slide
        start = str(Path(slide.path).parent) if slide and slide.path else ""
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

    def open_demo_slide(self) -> bool:
        """Help > Open Demo Slide: the slide of Kather 2016 test tiles shipped under
        resources/demo; False and a dialog if it is missing or cannot be opened."""
        path = demo_slide_path()
        if path is None:
            self.show_error("No demo slide", DEMO_MISSING)
            return False
        if not self.open_slide(path):
            return False
        self.state.notify(
            "Demo slide: Analysis > Map Tissue maps it, and the Map panel compares the map "
            "with its true classes.",
            15000,
        )
        return True

    def close_slide(self) -> None:
        """Close the slide; a map being made stops, and its partial map is saved."""
        self.set_slide(None)

    def _slide_name(self) -> str:
        slide = self.state.slide
        return slide.path.name if slide is not None and slide.path else "The slide"

    def set_slide(self, reader: SlideReader | None) -> None:
        """Show an open ``reader`` (the window owns it from now on; the mapping
        controller closes it once no job reads it)."""
        self.state.set_slide(reader)

    def _on_slide_changed(self, reader: SlideReader | None, old: SlideReader | None) -> None:
        self.view.set_slide(reader)
        self._show_truth(reader)
        self.cursor_label.clear()
        self.view.viewport().setToolTip("")
        if reader is None:
            self.setWindowTitle(APP_TITLE)
            self.statusBar().clearMessage()
        else:
            name = reader.path.name if reader.path else "slide"
            self.setWindowTitle(f"{name} — {APP_TITLE}")
            w, h = reader.dimensions
            self.statusBar().showMessage(
                f"{name}: {w:,} x {h:,} px, {reader.mpp:.4g} µm/px ({reader.mpp_source}), "
                f"{reader.format_name}",
                8000,
            )
        self._show_zoom(self.view.zoom())
        self.update_actions()
        self.slide_changed.emit(reader)

    def _show_truth(self, reader: SlideReader | None) -> None:
        """A slide with true classes beside it (the demo slide): the Map panel compares
        its maps with them; a truth file that cannot be used is said there, not in a
        dialog, since the slide itself opened fine."""
        path = reader.path if reader is not None else None
        try:
            self.legend.set_truth(truth_for_slide(path))
        except HistoViewerError as exc:
            log.warning("true classes not used: %s", exc)
            self.legend.set_truth(None, problem=str(exc))

    def choose_slide_scale(self) -> None:
        """Analysis > Set Slide Scale: ask for the slide's µm/px and use it."""
        self.scale.ask_and_set()

    def set_slide_scale(self, mpp: float | None) -> bool:
        """Use ``mpp`` µm/px as the open slide's scale (None: its file's again); see
        :meth:`SlideScaleController.set_scale`."""
        return self.scale.set_scale(mpp)

    def fill_recent_menu(self) -> None:
        """File > Open Recent: the slides opened last, newest first."""
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

        On success it becomes the model in use, on failure a dialog explains why and
        the current model stays.
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
        stopped, and the map shown becomes the saved one for this model, if any.
        """
        self.models.use(classifier, path)

    def _on_model_changed(self, classifier: Classifier | None, path: str | None) -> None:
        self._show_model(classifier, path)
        self.update_actions()
        if self._training_dialog is not None:  # the model it fine-tunes
            self._training_dialog.set_current_model(path, classifier and classifier.info)
        self.model_changed.emit(classifier)

    def _show_model(self, clf: Classifier | None, path: str | None) -> None:
        label = self.model_label
        if self.state.is_running(LOADING_MODEL) and self.models.loading_path:
            label.setText(f"Loading {Path(self.models.loading_path).name}...")
        elif clf is None:
            label.setText("No model")
            label.setToolTip("Model > Load Model... loads one")
        else:
            accuracy = recorded_test_accuracy(clf.info)
            tested = f" · {percent(accuracy)} on its test tiles" if accuracy is not None else ""
            label.setText(f"Model: {model_name(clf, path)}{tested}")
            label.setToolTip(
                f"{clf.info.arch}, {clf.num_classes} classes, on {clf.device}\n"
                f"{path or 'not saved to a file'}\nfingerprint {clf.fingerprint[:16]}\n"
                "Model > Model Info... says more."
            )

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
            clf = self.state.classifier
            self._training_dialog.set_current_model(self.model_path, clf and clf.info)
        self._training_dialog.show()
        self._training_dialog.raise_()
        self._training_dialog.activateWindow()
        return self._training_dialog

    @property
    def training_dialog(self):
        """The training dialog, or None before Model > Train New Model was first used."""
        return self._training_dialog

    def _use_trained_model(self, classifier: Classifier, path: str) -> None:
        self.state.notify(f"Using the model trained in {Path(path).parent}")
        self.models.use(classifier, path)
        if self.state.slide is not None and self.state.classifier is classifier:
            self.map_tissue()  # the open slide, mapped again with the new model

    def _on_training_finished(self, result) -> None:
        from histoviewer.gui.training_dialog import training_outcome_text

        self.statusBar().showMessage(training_outcome_text(result), 15000)

    def _on_training_state(self, text: str) -> None:
        self.training_label.setText(text)
        self.training_label.setVisible(bool(text))
        self.state.set_running(TRAINING, self.is_training())

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
        if self.state.slide is not None:
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
        if self.state.slide is None:
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
        if self.state.slide is None:
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
        dialog = config.MappingSettingsDialog(self.state.mapping_settings, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.state.set_mapping_settings(dialog.settings()))
        dialog.open()

    def _on_mapping_progress(self, text: str, done: int, total: int) -> None:
        self.progress_label.setText(text)
        self.progress.setRange(0, total)  # 0, 0: busy until the first report
        self.progress.setValue(done)

    def _on_jobs_changed(self) -> None:
        mapping = self.state.is_running(MAPPING)
        for widget in (self.progress_label, self.progress, self.cancel_button):
            widget.setVisible(mapping)
        if not mapping:
            self.progress_label.clear()
        self._show_model(self.state.classifier, self.state.model_path)
        self.update_actions()

    # --- overlay and panels -------------------------------------------------------------

    def _on_map_changed(self, tmap: TissueMap | None) -> None:
        self.overlay.set_map(tmap)
        live = self.state.map_is_live
        self.legend.set_map(tmap, live=live)
        partial = tmap is not None and not live and not tmap.complete
        self.legend.set_status(partial_map_text(tmap) if partial else "")
        self._drop_views_of_missing_classes(tmap)
        self._describe_selection()
        self.update_actions()
        self.map_changed.emit(tmap)

    def _on_map_updated(self, tmap: TissueMap) -> None:
        self.overlay.refresh(live=True)  # a heatmap follows at most every 0.75 s
        self.legend.set_map(tmap, live=True)
        self._describe_selection()

    def _on_cells_selected(self, cells: list[tuple[int, int]]) -> None:
        """The Map panel gives the quantities of 2 or more selected patches, scrolled
        into view (at 768 px the panel is short)."""
        self.legend.set_region(cells)
        if self.legend.region_quantities() is not None:
            scroll = self.map_dock.widget()
            block = self.legend.region_block
            # Once the block is laid out: its place is known only then.
            QTimer.singleShot(0, scroll, lambda: scroll.ensureWidgetVisible(block, 0, 0))

    def _drop_views_of_missing_classes(self, tmap: TissueMap | None) -> None:
        """Solo and the heatmap name a class: a map without it shows every class."""
        v = self.state.view_settings
        if tmap is not None and not {v.solo_class, v.heatmap_class} <= {None, *tmap.class_names}:
            self.state.update_view_settings(solo_class=None, heatmap_class=None)

    def show_only_class(self, name: str | None) -> None:
        """View > Show Only Class (a click on a class's name in the Map panel): draw only
        class ``name``, whatever the visibility ticks say (None: all classes, as the
        ticks say). Leaves the probability heatmap; shows the overlay."""
        self._show_view(
            name,
            solo_class=name,
            heatmap_class=None,
            told="Showing only {} (Esc or View > Show Only Class > All Classes to show all)",
        )

    def show_heatmap(self, name: str | None) -> None:
        """View > Probability Heatmap (the Map panel's Show box): draw class ``name``'s
        probability as a smooth heatmap instead of the class colours (None: the class
        colours). Leaves solo; shows the overlay."""
        self._show_view(
            name,
            solo_class=None,
            heatmap_class=name,
            told="Showing the probability of {} (Esc or View > Probability Heatmap > Off "
            "to show the classes)",
        )

    def _show_view(
        self, name: str | None, *, solo_class: str | None, heatmap_class: str | None, told: str
    ) -> None:
        """Solo or heatmap of class ``name`` (None: neither), saying so in the status bar."""
        if name is not None and not self._has_map_to_show():
            return
        self.state.update_view_settings(
            solo_class=solo_class,
            heatmap_class=heatmap_class,
            **({"overlay_visible": True} if name else {}),
        )
        if name is not None:
            self.state.notify(told.format(class_label(name)), 10000)

    def _has_map_to_show(self) -> bool:
        if self.state.tissue_map is not None:
            return True
        v = self.state.view_settings
        self.legend.set_view_mode(v.solo_class, v.heatmap_class)  # undo the panel's choice
        self.state.notify("No map to show yet: Analysis > Map Tissue makes one.", 6000)
        return False

    def show_all_classes(self) -> None:
        """Esc while solo or a heatmap is shown: a region being chosen (Map Region) is
        cancelled first; otherwise every class is drawn again, as the ticks say."""
        if self.view.is_selecting_region():
            self.view.cancel_region_selection()
        else:
            self.show_only_class(None)

    def set_overlay_visible(self, visible: bool) -> None:
        self.state.update_view_settings(overlay_visible=bool(visible))

    def set_confidence_shading(self, on: bool) -> None:
        """Draw patches fainter where the model is unsure."""
        self.state.update_view_settings(confidence_shading=bool(on))

    def set_uncertain_only(self, on: bool) -> None:
        """View > Uncertain Only: draw only the patches at least as uncertain as the
        Review panel's threshold."""
        self.state.update_view_settings(uncertain_only=bool(on))

    def _on_opacity_changed(self, value: float) -> None:
        self.state.update_view_settings(opacity=float(value))

    def _on_view_settings_changed(self, v: ViewSettings) -> None:
        self._show_view_settings(v)
        config.save_view_settings(self.settings, v)

    def _show_view_settings(self, v: ViewSettings) -> None:
        self.overlay.setVisible(v.overlay_visible)
        self.overlay.setOpacity(v.opacity)
        self.overlay.set_confidence_shading(v.confidence_shading)
        if abs(self.legend.opacity.value() / 100 - v.opacity) > 0.005:
            self.legend.set_opacity(v.opacity)
        for control in (self.overlay_action, self.legend.show_overlay):
            if control.isChecked() != v.overlay_visible:
                control.setChecked(v.overlay_visible)
        for control in (self.shading_action, self.legend.shading):
            if control.isChecked() != v.confidence_shading:
                control.setChecked(v.confidence_shading)
        self.overlay.set_uncertain_only(v.uncertain_threshold if v.uncertain_only else None)
        for control in (self.uncertain_action, self.review.uncertain_only):
            if control.isChecked() != v.uncertain_only:
                control.setChecked(v.uncertain_only)
        if abs(self.review.threshold_value() - v.uncertain_threshold) > 0.001:
            self.review.set_threshold(v.uncertain_threshold)
        self.overlay.set_solo_class(v.solo_class)
        self.overlay.set_heatmap_class(v.heatmap_class)
        self.legend.set_view_mode(v.solo_class, v.heatmap_class)
        self.show_all_classes_action.setEnabled(
            v.solo_class is not None or v.heatmap_class is not None
        )

    def _on_view_clicked(self, x: float, y: float) -> None:
        tmap = self.tissue_map
        rc = tmap.patch_at(x, y) if tmap is not None else None
        self.state.set_selection(rc)
        if rc is not None:
            self.patch_dock.raise_()

    def select_patch(self, row: int, col: int) -> None:
        """Outline patch (row, col) of the shown map and describe it in the Patch panel."""
        self.state.set_selection((row, col))

    def clear_selection(self) -> None:
        """Drop the selected patch (outline and Patch panel)."""
        self.state.set_selection(None)

    def _on_selection_changed(self, cell: tuple[int, int] | None) -> None:
        self._describe_selection()

    def _describe_selection(self) -> None:
        """Outline the selected patch and describe it in the Patch panel (or clear both)."""
        cell, tmap, slide = self.state.selection, self.state.tissue_map, self.state.slide
        if cell is None or tmap is None or slide is None:
            self.outline.clear()
            self.patch_panel.clear()
            return
        row, col = cell
        x, y, w, h = tmap.patch_box(row, col)
        self.outline.set_box(x, y, w, h)
        try:
            pixels = slide.read_region(0, x, y, w, h)
        except HistoViewerError as exc:
            log.warning("patch image not shown: %s", exc)
            pixels = None
        self.patch_panel.show_patch(tmap, row, col, pixels)

    def _on_cursor_moved(self, x: float, y: float) -> None:
        slide = self.state.slide
        if x < 0 or y < 0 or slide is None:
            self.cursor_label.clear()
            self.view.viewport().setToolTip("")
            return
        mpp = slide.mpp
        self.cursor_label.setText(f"x {x:,.0f}, y {y:,.0f} px  ({x * mpp:,.1f}, {y * mpp:,.1f} µm)")
        tip = self.overlay.describe_at(x, y) if self.overlay.isVisible() else None
        self.view.viewport().setToolTip(tip or "")

    def _show_zoom(self, zoom: float) -> None:
        magnification = self.view.magnification()
        if self.state.slide is None or magnification is None:
            self.zoom_label.clear()
            self.zoom_label.setToolTip("")
            return
        self.zoom_label.setText(f"{format_magnification(magnification)} · Zoom {zoom * 100:.3g} %")
        self.zoom_label.setToolTip(
            "The objective magnification the view matches (40x: about 0.25 µm per screen "
            "pixel), and screen pixels per slide pixel. View > Magnification sets it."
        )

    def zoom_to_magnification(self, magnification: float) -> None:
        """View > Magnification: show the slide as an objective of that power would."""
        if self.state.slide is not None:
            self.view.zoom_to_magnification(magnification)

    # --- export (see exporting.py) ------------------------------------------------------

    def choose_export(self, fmt: str) -> None:
        self.exporter.choose_export(fmt)

    def export_map(self, fmt: str, path: str | Path, *, wait: bool = True) -> bool:
        """Write the shown map as ``fmt`` (a key of ``mapping.export.FORMATS``: geojson,
        csv, report, classes-tiff, ...) to ``path``, on the export thread.

        ``wait``: return once written (True) or failed (False, a dialog said why);
        else at once (True: started).
        """
        return self.exporter.export_map(fmt, path, wait=wait)

    def choose_export_folder(self) -> None:
        self.exporter.choose_export_folder()

    def export_all(self, folder: str | Path, stem: str | None = None, *, wait: bool = True) -> bool:
        """Write the map's formats and its report to ``folder`` as ``histoviewer map``
        names them, ``<stem><suffix>`` (``stem``: the slide's name); see
        :meth:`export_map` for ``wait``."""
        return self.exporter.export_all(folder, stem, wait=wait)

    def is_exporting(self) -> bool:
        return self.exporter.is_busy()

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
            f"H&E whole-slide images with a ResNet classifier.\n\n"
            "The tissue classes, the tiles HistoViewer's Kather models are trained on and "
            "the demo slide's tiles (Help > Open Demo Slide: held-out test tiles) come from the "
            f"Kather 2016 colorectal histology data, used under CC BY 4.0:\n"
            f"{KATHER_2016_CREDIT}\n\n{research_use_text()}",
        )

    def show_shortcuts(self) -> ShortcutsDialog:
        """Help > Keyboard Shortcuts: every shortcut and mouse gesture of the window."""
        dialog = self.findChild(ShortcutsDialog)
        if dialog is None:
            dialog = ShortcutsDialog(self.findChildren(type(self.open_action)), self)
        dialog.show()
        dialog.raise_()
        return dialog

    def update_actions(self) -> None:
        if hasattr(self, "model_info_action"):  # not while the window is being built
            actions.update_actions(self)

    def _restore_geometry(self) -> None:
        geometry = self.settings.value("window/geometry")
        screen = QApplication.primaryScreen()
        available = screen.availableGeometry() if screen else None
        if geometry is None or not self.restoreGeometry(geometry):
            size = available.size() * 0.8 if available else None
            self.resize(size if size else self.sizeHint())
        elif available is not None and (
            self.height() > available.height() or self.width() > available.width()
        ):
            # Saved on a larger screen: fit this one.
            self.resize(
                min(self.width(), available.width()), min(self.height(), available.height())
            )
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
        if self.exporter.is_busy():  # the file being written is finished, never cut short
            self.statusBar().showMessage("Finishing the export before quitting…")
            self.statusBar().repaint()
        self.exporter.shutdown()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        config.save_view_settings(self.settings, self.state.view_settings)
        self.settings.sync()
        self.view.shutdown()
        if (reader := self.state.slide) is not None:
            self.mapping.retire(reader)  # its jobs have ended: closes it now

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
