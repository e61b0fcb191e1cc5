"""Model > Load Model, Load Model Folder and Model Info.

:class:`ModelController` loads checkpoints in the background (any file
:func:`histoviewer.model.load_model` reads: ``.safetensors``, a model folder, the
recipe's ``.pth.tar``, a training ``last.pt``) and puts the classifier in the
:class:`~histoviewer.viewer_state.ViewerState`, the one place a model changes. It
remembers the model's file in the settings for the next run, says when the new
model hides a map, and warns about a model with a weak test accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings

from histoviewer.gui import settings as config
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.gui.workers import JobFailure, JobRunner
from histoviewer.model.describe import model_display_name, weak_model_warning
from histoviewer.viewer_state import LOADING_MODEL, ViewerState

if TYPE_CHECKING:
    from histoviewer.model import Classifier

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt", ".tar")
MODEL_FILTER = "Models (*.safetensors *.pth.tar *.pth *.pt *.tar);;All files (*)"


def is_model_path(path: str | Path) -> bool:
    """Whether a dropped file looks like a model (by suffix, or a folder with a model)."""
    path = str(path)
    return path.lower().endswith(MODEL_SUFFIXES) or (Path(path) / "model.safetensors").is_file()


class ModelController(QObject):
    """Loads models into ``state`` and describes the one in use (Model Info)."""

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        settings: QSettings,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.dialogs = dialogs
        self.settings = settings
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_loaded)
        self.runner.failed.connect(self._on_failed)
        self.loading_path: str | None = None  # the file being loaded
        self._info_dialog = None
        state.model_changed.connect(self._on_model_changed)

    @property
    def classifier(self) -> Classifier | None:
        return self.state.classifier

    @property
    def path(self) -> str | None:
        return self.state.model_path

    def is_loading(self) -> bool:
        return self.runner.is_busy()

    def choose_model(self) -> None:
        start = str(Path(self.path).parent) if self.path else ""
        if path := self.dialogs.ask_open_file("Load Model", start, MODEL_FILTER):
            self.load(path)

    def choose_model_folder(self) -> None:
        if path := self.dialogs.ask_directory("Load Model Folder", self.path or ""):
            self.load(path)

    def load(self, path: str | Path) -> int:
        """Load ``path`` on a worker thread; returns the job id."""
        path = str(path)
        device = self.state.mapping_settings.device
        self.loading_path = path
        job = self.runner.start(
            lambda ctx: _load_model(path, device), f"load the model {Path(path).name}"
        )
        self.state.set_running(LOADING_MODEL, True)
        return job

    def use(self, classifier: Classifier | None, path: str | None = None) -> None:
        """Use ``classifier`` (from the file ``path``, if any) for mapping; say what
        became of the map shown, and warn if the model is weak."""
        hidden = self.state.tissue_map
        old_name = model_name(self.state.classifier, self.state.model_path)
        self.state.set_model(classifier, path)
        if classifier is None:
            return
        name = model_name(classifier, self.state.model_path)
        shown = self.state.tissue_map
        if hidden is not None and shown is not None:
            self.state.notify(f"Using {name}: showing its saved map instead of {old_name}'s.")
        elif hidden is not None:
            self.state.notify(
                f"Using {name}: the map made by {old_name} is no longer shown. "
                "Map Tissue maps the slide with the new model.",
                15000,
            )
        if warning := weak_model_warning(classifier.info):
            self.dialogs.show_warning("Weak model", warning)

    def _on_model_changed(self, classifier: Classifier | None, path: str | None) -> None:
        if path:
            config.set_last_model_path(self.settings, path)
        if self._info_dialog is not None and self._info_dialog.isVisible():
            self._info_dialog.set_model(classifier, path)

    def _on_loaded(self, job_id: int, classifier: Classifier) -> None:
        self.state.set_running(LOADING_MODEL, False)
        self.use(classifier, self.loading_path)

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        self.state.set_running(LOADING_MODEL, False)
        self.dialogs.show_error(failure.title, failure.message)

    def show_info(self):
        """Open (or raise) the Model Info dialog for the model in use; returns it."""
        from histoviewer.gui.model_info import ModelInfoDialog

        if self._info_dialog is None:  # kept, and reused, when closed
            self._info_dialog = ModelInfoDialog(self.dialogs.dialog_parent())
        self._info_dialog.set_model(self.classifier, self.path)
        self._info_dialog.show()
        self._info_dialog.raise_()
        return self._info_dialog

    @property
    def info_dialog(self):
        """The Model Info dialog, or None before it was first opened."""
        return self._info_dialog

    def shutdown(self) -> None:
        self.runner.shutdown()


def model_name(classifier: Classifier | None, path: str | None) -> str:
    """How the viewer names a model: by its folder or file (see model_display_name)."""
    if classifier is None:
        return "no model"
    return model_display_name(classifier.info, path)


def _load_model(path: str, device: str) -> Classifier:
    # Imported here, on the worker thread: torch loads while the window is already up.
    from histoviewer.model import load_model

    return load_model(path, device=device)
