"""Model > Load Model, Load Model Folder and Model Info; the model shown in the status bar.

:class:`ModelController` loads checkpoints in the background (any file
:func:`histoviewer.model.load_model` reads: ``.safetensors``, a model folder, the
recipe's ``.pth.tar``, a training ``last.pt``), keeps the classifier in use and
the file it came from, remembers that file in the settings for the next run, and
keeps the status bar's model label up to date. The window's
:meth:`~histoviewer.gui.mainwindow.MainWindow.set_classifier` is the one place a
model changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel

from histoviewer.gui import settings as config
from histoviewer.gui.workers import JobFailure, JobRunner

if TYPE_CHECKING:
    from histoviewer.model import Classifier

if TYPE_CHECKING:
    from histoviewer.gui.mainwindow import MainWindow

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt", ".tar")
MODEL_FILTER = "Models (*.safetensors *.pth.tar *.pth *.pt *.tar);;All files (*)"


def is_model_path(path: str | Path) -> bool:
    """Whether a dropped file looks like a model (by suffix, or a folder with a model)."""
    path = str(path)
    return path.lower().endswith(MODEL_SUFFIXES) or (Path(path) / "model.safetensors").is_file()


class ModelController(QObject):
    """The classifier in use by ``window``, how it is loaded, and how it is described."""

    def __init__(self, window: MainWindow, label: QLabel) -> None:
        super().__init__(window)
        self.window = window
        self.label = label
        self.classifier: Classifier | None = None
        self.path: str | None = None
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_loaded)
        self.runner.failed.connect(self._on_failed)
        self._loading_path: str | None = None
        self._info_dialog = None
        self.update_label()

    def is_loading(self) -> bool:
        return self.runner.is_busy()

    def choose_model(self) -> None:
        start = str(Path(self.path).parent) if self.path else ""
        if path := self.window.ask_open_file("Load Model", start, MODEL_FILTER):
            self.load(path)

    def choose_model_folder(self) -> None:
        if path := self.window.ask_directory("Load Model Folder", self.path or ""):
            self.load(path)

    def load(self, path: str | Path) -> int:
        """Load ``path`` on a worker thread; returns the job id."""
        path = str(path)
        device = self.window.mapping_settings.device
        self._loading_path = path
        self.label.setText(f"Loading {Path(path).name}...")
        job = self.runner.start(
            lambda ctx: _load_model(path, device), f"load the model {Path(path).name}"
        )
        self.window.update_actions()
        return job

    def set_current(self, classifier: Classifier | None, path: str | None) -> None:
        """Record the model in use (the window's set_classifier does the rest)."""
        self.classifier = classifier
        self.path = str(path) if path else None
        if path:
            config.set_last_model_path(self.window.settings, str(path))
        self.update_label()
        if self._info_dialog is not None and self._info_dialog.isVisible():
            self._info_dialog.set_model(classifier, self.path)

    def _on_loaded(self, job_id: int, classifier: Classifier) -> None:
        self.window.set_classifier(classifier, self._loading_path)

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        self.update_label()
        self.window.update_actions()
        self.window.show_error(failure.title, failure.message)

    def update_label(self) -> None:
        clf = self.classifier
        if clf is None:
            self.label.setText("No model")
            self.label.setToolTip("Model > Load Model... loads one")
        else:
            self.label.setText(f"Model: {clf.info.name or clf.info.arch}")
            self.label.setToolTip(
                f"{clf.info.arch}, {clf.num_classes} classes, on {clf.device}\n"
                f"{self.path or 'not saved to a file'}\nfingerprint {clf.fingerprint[:16]}"
            )

    def show_info(self):
        """Open (or raise) the Model Info dialog for the model in use; returns it."""
        from histoviewer.gui.model_info import ModelInfoDialog

        if self._info_dialog is None:
            self._info_dialog = ModelInfoDialog(self.window)  # kept, and reused, when closed
        self._info_dialog.set_model(self.classifier, self.path)
        self._info_dialog.show()
        self._info_dialog.raise_()
        return self._info_dialog

    def shutdown(self) -> None:
        self.runner.shutdown()


def _load_model(path: str, device: str) -> Classifier:
    # Imported here, on the worker thread: torch loads while the window is already up.
    from histoviewer.model import load_model

    return load_model(path, device=device)
