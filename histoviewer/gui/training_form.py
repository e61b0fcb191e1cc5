"""The set-up half of Model > Train New Model: dataset, preset, hyperparameters, output.

:class:`TrainingForm` checks the dataset as soon as it is chosen (``list_tiles``
on a worker thread: file names only, nothing decoded) and shows its classes and
image counts, or the :class:`~histoviewer.errors.DatasetError` in red. It looks
into the output folder too: a ``last.pt`` there is an earlier run, which can be
resumed (its settings are shown) but not overwritten by a new one; other files of a
run without a ``last.pt`` make the folder unusable for a new run as well.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.errors import HistoViewerError
from histoviewer.gui import settings as config
from histoviewer.gui.workers import JobFailure, JobRunner
from histoviewer.model import ARCHITECTURES
from histoviewer.slide.mpp import DEFAULT_MPP
from histoviewer.training import PRESETS, TileIndex, TrainConfig, list_tiles, preset
from histoviewer.training.checkpoint import LAST_FILE, load_last
from histoviewer.training.run_folder import earlier_run_files

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #b00020;"
_CHECK_DELAY_MS = 300  # wait for typing to pause before listing a folder


@dataclass(frozen=True)
class EarlierRun:
    """What ``last.pt`` in the output folder says about the run that wrote it."""

    folder: str
    epoch: int  # completed epochs
    epochs: int
    config: dict[str, Any]
    finished: bool  # the test results were written (report.json)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def default_runs_root() -> Path:
    """Where new runs go unless the user chose a folder: Documents/HistoViewer/training."""
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    if not docs:
        docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(docs or Path.home()) / "HistoViewer" / "training"


def new_run_folder(root: Path, preset_name: str) -> Path:
    """A folder name that does not exist yet: ``<root>/<preset>-YYYYmmdd-HHMMSS``."""
    stem = f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = root / stem, 1
    while folder.exists():
        n += 1
        folder = root / f"{stem}-{n}"
    return folder


def inspect_run(folder: str) -> EarlierRun | None:
    """The earlier run in ``folder``, None when there is none (raises HistoViewerError
    when ``last.pt`` is there but unreadable, or missing beside other files of a run)."""
    path = Path(folder) / LAST_FILE
    if not path.is_file():
        if files := earlier_run_files(folder):
            # A model or report without the checkpoint: nothing to resume, much to lose.
            raise HistoViewerError(
                f"{folder} holds files of an earlier run "
                f"({', '.join(p.name for p in files)}) but no {LAST_FILE} to resume it"
            )
        return None
    checkpoint = load_last(path)
    cfg = checkpoint.get("config", {})
    epochs = int(cfg.get("epochs", 0))
    epoch = int(checkpoint.get("epoch", 0))
    finished = epoch >= epochs and (Path(folder) / "report.json").is_file()
    return EarlierRun(str(folder), epoch, epochs, cfg, finished)


class LearningRateBox(QDoubleSpinBox):
    """A learning rate shown as 0.001 or 2e-05 (not 0.001000), typed in either form."""

    def __init__(self) -> None:
        super().__init__(decimals=8, minimum=1e-7, maximum=1.0, singleStep=1e-4)

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            ok = 0 < float(text) <= 1
        except ValueError:
            ok = False
        state = QValidator.State.Acceptable if ok else QValidator.State.Intermediate
        return state, text, pos


class ScaleBox(QDoubleSpinBox):
    """Microns per pixel shown as 0.495 or 0.25 (not 0.4950), typed in either form."""

    def __init__(self) -> None:
        # The range the slide readers accept as a microscope scale (slide/mpp.py).
        super().__init__(decimals=4, minimum=0.05, maximum=40.0, singleStep=0.005)

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text.replace(",", "."))
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            ok = self.minimum() <= float(text.replace(",", ".")) <= self.maximum()
        except ValueError:
            ok = False
        state = QValidator.State.Acceptable if ok else QValidator.State.Intermediate
        return state, text, pos


class TrainingForm(QWidget):
    """Dataset, preset, hyperparameters, device and output folder of a training run.

    Signals: ``changed()`` whenever :attr:`dataset_ok`, :attr:`checking` or
    :attr:`earlier_run` may have changed (the dialog then enables its buttons).
    """

    changed = Signal()

    def __init__(self, settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.dataset_ok = False
        self.index: TileIndex | None = None
        # Whether the user set the tile scale: left at its default, it is only assumed,
        # and the run's report says so.
        self.mpp_given = False
        self.earlier_run: EarlierRun | None = None
        self.run_problem = ""  # why the output folder cannot be used, if it cannot
        self._checker = JobRunner(self)
        self._checker.succeeded.connect(self._on_checked)
        self._checker.failed.connect(self._on_check_failed)
        self._prober = JobRunner(self)
        self._prober.succeeded.connect(self._on_probed)
        self._prober.failed.connect(self._on_probe_failed)
        self._build()
        self._restore()

    # --- layout -------------------------------------------------------------------------

    def _build(self) -> None:
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("a folder or .zip with one sub-folder per class")
        self.data_folder_button = QPushButton("Folder...")
        self.data_zip_button = QPushButton("Zip...")
        self.data_folder_button.clicked.connect(self._choose_data_folder)
        self.data_zip_button.clicked.connect(self._choose_data_zip)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(self.data_folder_button)
        data_row.addWidget(self.data_zip_button)
        self.check_label = QLabel("Choose the labelled tiles to train on.")
        self.check_label.setWordWrap(True)
        self.check_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.class_table = QTableWidget(0, 3)
        self.class_table.setHorizontalHeaderLabels(["Class folder", "Class", "Images"])
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.class_table.verticalHeader().setDefaultSectionSize(22)
        self.class_table.setVisible(False)
        self.mpp_spin = ScaleBox()
        self.mpp_spin.setValue(DEFAULT_MPP)
        self.mpp_spin.setToolTip(
            "Microns per pixel of the tiles, as they were scanned (0.495 µm/px for the "
            "Kather 2016 tiles; about 0.25 at 40x, 0.5 at 20x). The model maps slides with "
            "patches covering the same µm of tissue, so a wrong value gives maps at the "
            "wrong scale. Left unchanged, 0.495 µm/px is assumed and the run notes it."
        )
        self.mpp_spin.valueChanged.connect(self._mpp_edited)
        self.mpp_label = QLabel("Tile scale (µm/px):")
        self.mpp_label.setBuddy(self.mpp_spin)
        scale_row = QFormLayout()
        scale_row.addRow(self.mpp_label, self.mpp_spin)
        data_box = QGroupBox("Dataset")
        data_layout = QVBoxLayout(data_box)
        data_layout.addLayout(data_row)
        data_layout.addWidget(self.check_label)
        data_layout.addWidget(self.class_table)
        data_layout.addLayout(scale_row)

        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip(
            "recipe: the reference recipe (ResNet-50, 15 epochs, no augmentation, ~92 %); "
            "best: augmentation, 60 epochs, AdamW and a cosine schedule (slower, more accurate)"
        )
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(list(ARCHITECTURES))
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000)
        # Raising it above a finished run's epochs is what makes Resume extend that run.
        self.epochs_spin.valueChanged.connect(self.changed)
        self.batch_spin = QSpinBox(minimum=1, maximum=4096)
        self.image_spin = QSpinBox(minimum=16, maximum=1024, singleStep=16, suffix=" px")
        self.lr_spin = LearningRateBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(config.available_devices())
        self.device_combo.setToolTip("auto uses a GPU when one is available, else the CPU.")
        settings_box = QGroupBox("Training")
        form = QFormLayout(settings_box)
        form.addRow("Preset:", self.preset_combo)
        form.addRow("Architecture:", self.arch_combo)
        form.addRow("Epochs:", self.epochs_spin)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Image size:", self.image_spin)
        form.addRow("Learning rate:", self.lr_spin)
        form.addRow("Device:", self.device_combo)

        self.advanced_box = QGroupBox("Advanced")
        self.advanced_box.setCheckable(True)
        self.advanced_box.setChecked(False)
        self.optimizer_combo = QComboBox()
        self.optimizer_combo.addItems(["adam", "adamw", "sgd"])
        self.weight_decay_spin = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=1.0)
        self.weight_decay_spin.setSingleStep(0.01)
        self.augment_check = QCheckBox("Augmentation")
        self.augment_check.setToolTip(
            "Flips, 90-degree rotations, mild zoom, stain and colour jitter (as in 'best')"
        )
        self.tile_spin = QSpinBox(
            minimum=0, maximum=1024, suffix=" px", specialValueText="the tiles' own"
        )
        self.tile_spin.setToolTip(
            "The patch size the model learns at. \"the tiles' own\" keeps the tiles' size "
            "(they must all be one square size); a number resizes every tile to it (non-"
            "square ones are centre-cropped first) and keeps their µm per tile."
        )
        self.limit_spin = QSpinBox(minimum=0, maximum=1_000_000, specialValueText="all")
        self.limit_spin.setToolTip("Use at most this many images per class (0 = all).")
        self._advanced_inner = QWidget()
        adv = QFormLayout(self._advanced_inner)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.addRow("Optimizer:", self.optimizer_combo)
        adv.addRow("Weight decay:", self.weight_decay_spin)
        adv.addRow("", self.augment_check)
        adv.addRow("Tile size:", self.tile_spin)
        adv.addRow("Images per class:", self.limit_spin)
        QVBoxLayout(self.advanced_box).addWidget(self._advanced_inner)
        self._advanced_inner.setVisible(False)
        self.advanced_box.toggled.connect(self._advanced_inner.setVisible)

        self.out_edit = QLineEdit()
        self.out_button = QPushButton("Browse...")
        self.out_button.clicked.connect(self._choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        self.run_label = QLabel()
        self.run_label.setWordWrap(True)
        self.run_label.setVisible(False)
        out_box = QGroupBox("Output folder")
        out_layout = QVBoxLayout(out_box)
        out_layout.addLayout(out_row)
        out_layout.addWidget(self.run_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (data_box, out_box, settings_box, self.advanced_box):
            layout.addWidget(box)
        layout.addStretch(1)

        self._check_timer = QTimer(self, singleShot=True, interval=_CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self.check_dataset)
        self._probe_timer = QTimer(self, singleShot=True, interval=_CHECK_DELAY_MS)
        self._probe_timer.timeout.connect(self.inspect_output)
        self.data_edit.textChanged.connect(self._data_edited)
        self.out_edit.textChanged.connect(self._out_edited)
        self.preset_combo.currentTextChanged.connect(self.apply_preset)

    def _restore(self) -> None:
        name = config.training_value(self.settings, "preset")
        self.preset_combo.setCurrentText(name if name in PRESETS else "recipe")
        self.apply_preset(self.preset_combo.currentText())
        device = config.training_value(self.settings, "device")
        if device:
            if self.device_combo.findText(device) < 0:
                self.device_combo.addItem(device)
            self.device_combo.setCurrentText(device)
        if data := config.training_value(self.settings, "data"):
            self.data_edit.setText(data)
        last = config.training_value(self.settings, "last_run")
        # An interrupted run (the app was closed or crashed) is offered again.
        if (
            last
            and (Path(last) / LAST_FILE).is_file()
            and not (Path(last) / "report.json").exists()
        ):
            self.out_edit.setText(last)
        else:
            self.new_output_folder()

    # --- values -------------------------------------------------------------------------

    def runs_root(self) -> Path:
        root = config.training_value(self.settings, "runs_root")
        return Path(root) if root else default_runs_root()

    def new_output_folder(self) -> None:
        """Point the output at a fresh folder under the runs folder."""
        self.out_edit.setText(
            str(new_run_folder(self.runs_root(), self.preset_combo.currentText()))
        )

    def apply_preset(self, name: str) -> None:
        """Fill the training fields from the preset ``name`` ("recipe" or "best"); the
        tiles' scale and size belong to the data and are left alone."""
        self.apply_config(preset(name), keep_preset=True)

    def apply_config(self, cfg: TrainConfig, *, keep_preset: bool = False) -> None:
        """Show ``cfg``'s settings (data and output folder are left alone; with
        ``keep_preset``, the tiles' scale and size too)."""
        if not keep_preset:
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentText(cfg.preset)
            self.preset_combo.blockSignals(False)
            self.set_tile_scale(cfg.mpp)
            self.tile_spin.setValue(cfg.patch_size or 0)
        self.arch_combo.setCurrentText(cfg.arch)
        self.epochs_spin.setValue(cfg.epochs)
        self.batch_spin.setValue(cfg.batch_size)
        self.image_spin.setValue(cfg.image_size)
        self.lr_spin.setValue(cfg.lr)
        self.optimizer_combo.setCurrentText(cfg.optimizer)
        self.weight_decay_spin.setValue(cfg.weight_decay)
        self.augment_check.setChecked(cfg.augments)
        self.limit_spin.setValue(cfg.limit_per_class or 0)

    def set_tile_scale(self, mpp: float | None) -> None:
        """Show the tiles' µm/px; None: not known (the default shows, as an assumption)."""
        self.mpp_spin.blockSignals(True)
        self.mpp_spin.setValue(DEFAULT_MPP if mpp is None else mpp)
        self.mpp_spin.blockSignals(False)
        self.mpp_given = mpp is not None

    def _mpp_edited(self) -> None:
        self.mpp_given = True

    @property
    def epochs(self) -> int:
        """The Epochs field: a run's length, and what a finished run is extended to."""
        return self.epochs_spin.value()

    def can_resume(self) -> bool:
        """True when the folder's run can go on: interrupted, or finished and Epochs is
        set above its length (extending it)."""
        run = self.earlier_run
        return run is not None and (not run.finished or self.epochs > run.epochs)

    def config(self) -> TrainConfig:
        """The run the form describes; HistoViewerError for a setting that cannot work."""
        name = self.preset_combo.currentText()
        base = preset(name)
        changes: dict[str, Any] = {
            "data": self.data_edit.text().strip(),
            "out": self.out_edit.text().strip(),
            "arch": self.arch_combo.currentText(),
            "epochs": self.epochs_spin.value(),
            "batch_size": self.batch_spin.value(),
            "image_size": self.image_spin.value(),
            "lr": self.lr_spin.value(),
            "optimizer": self.optimizer_combo.currentText(),
            "weight_decay": self.weight_decay_spin.value(),
            "mpp": self.mpp_spin.value() if self.mpp_given else None,
            "patch_size": self.tile_spin.value() or None,
            "limit_per_class": self.limit_spin.value() or None,
            "device": self.device_combo.currentText(),
        }
        if self.augment_check.isChecked() != base.augments:
            # On: the "best" preset's augmentation; off: none at all.
            source = PRESETS["best"]() if self.augment_check.isChecked() else preset("recipe")
            for key in ("flips", "rot90", "scale_jitter", "stain_jitter", "color_jitter"):
                changes[key] = getattr(source, key)
        return preset(name, **changes)

    @property
    def device(self) -> str:
        return self.device_combo.currentText()

    @property
    def out_folder(self) -> str:
        return self.out_edit.text().strip()

    def checking(self) -> bool:
        return (
            self._checker.is_busy()
            or self._check_timer.isActive()
            or self._prober.is_busy()
            or self._probe_timer.isActive()
        )

    def remember(self) -> None:
        """Save the choices for next time (when a run starts)."""
        for key, value in (
            ("data", self.data_edit.text().strip()),
            ("preset", self.preset_combo.currentText()),
            ("device", self.device),
            ("last_run", self.out_folder),
        ):
            config.set_training_value(self.settings, key, value)

    def set_editable(self, on: bool) -> None:
        for w in (
            self.data_edit,
            self.data_folder_button,
            self.data_zip_button,
            self.mpp_spin,
            self.preset_combo,
            self.arch_combo,
            self.epochs_spin,
            self.batch_spin,
            self.image_spin,
            self.lr_spin,
            self.device_combo,
            self.advanced_box,
            self.out_edit,
            self.out_button,
        ):
            w.setEnabled(on)

    # --- the dataset check --------------------------------------------------------------

    def _data_edited(self) -> None:
        self.dataset_ok = False
        self.index = None
        self._check_timer.start()
        self.changed.emit()

    def check_dataset(self) -> None:
        """List the dataset's class folders and files on a worker thread (no decoding)."""
        self._check_timer.stop()
        path = self.data_edit.text().strip()
        self.dataset_ok = False
        self.index = None
        if not path:
            self._checker.cancel()
            self._show_check("Choose the labelled tiles to train on.", error=False)
            self.changed.emit()
            return
        self._show_check(f"Checking {path}...", error=False)
        self._checker.start(lambda ctx: list_tiles(path), f"use {path} for training")
        self.changed.emit()

    def _on_checked(self, job_id: int, index: TileIndex) -> None:
        self.index = index
        self.dataset_ok = True
        counts = [int((index.labels == c).sum()) for c in range(len(index.class_folders))]
        self.class_table.setRowCount(len(counts))
        for row, (folder, name, n) in enumerate(
            zip(index.class_folders, index.class_names, counts, strict=True)
        ):
            count = QTableWidgetItem(f"{n:,}")
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for col, item in enumerate((QTableWidgetItem(folder), QTableWidgetItem(name), count)):
                self.class_table.setItem(row, col, item)
        # Up to eight classes (Kather 2016) show without scrolling.
        table = self.class_table
        rows = min(len(counts), 8)
        header = table.horizontalHeader().sizeHint().height()
        table.setFixedHeight(rows * 22 + header + 2 * table.frameWidth() + 8)
        text = f"{len(counts)} classes, {sum(counts):,} images in {index.source}."
        if index.skipped:
            text += f" {len(index.skipped)} other file(s) will be left out."
        self._show_check(text, error=False, table=True)
        self.changed.emit()

    def _on_check_failed(self, job_id: int, failure: JobFailure) -> None:
        self._show_check(failure.message, error=True)
        self.changed.emit()

    def _show_check(self, text: str, *, error: bool, table: bool = False) -> None:
        self.check_label.setText(text)
        self.check_label.setStyleSheet(ERROR_STYLE if error else "")
        self.class_table.setVisible(table)

    def class_counts(self) -> list[tuple[str, int]]:
        """(class folder, images) as the table shows them."""
        return [
            (
                self.class_table.item(r, 0).text(),
                int(self.class_table.item(r, 2).text().replace(",", "")),
            )
            for r in range(self.class_table.rowCount())
        ]

    # --- the output folder --------------------------------------------------------------

    def _out_edited(self) -> None:
        self.earlier_run = None
        self.run_problem = ""
        self._probe_timer.start()
        self.changed.emit()

    def inspect_output(self) -> None:
        """Look for an earlier run (``last.pt``) in the output folder, off the GUI thread."""
        self._probe_timer.stop()
        folder = self.out_folder
        self.earlier_run = None
        self.run_problem = "" if folder else "Choose an output folder."
        self._show_run()
        if folder:
            self._prober.start(lambda ctx: inspect_run(folder), f"read the run in {folder}")
        self.changed.emit()

    def _on_probed(self, job_id: int, run: EarlierRun | None) -> None:
        self.earlier_run = run
        self.run_problem = ""
        if run is not None:
            # Its settings, so that Resume (or, for a finished run, more epochs) reads
            # as what it will do.
            try:
                self.apply_config(TrainConfig.from_dict(run.config))
            except Exception as exc:  # a checkpoint from another version: show it anyway
                log.warning("settings of %s not shown: %s", run.folder, exc)
            if data := run.config.get("data"):
                self.data_edit.setText(str(data))
        self._show_run()
        self.changed.emit()

    def _on_probe_failed(self, job_id: int, failure: JobFailure) -> None:
        self.earlier_run = None
        self.run_problem = f"{failure.message}. Choose another folder."
        self._show_run()
        self.changed.emit()

    def _show_run(self) -> None:
        run = self.earlier_run
        if self.run_problem:
            self.run_label.setText(self.run_problem)
            self.run_label.setStyleSheet(ERROR_STYLE)
        elif run is not None and run.finished:
            self.run_label.setText(
                f"A finished run of {_epochs(run.epochs)} is in this folder. To extend it, "
                f"set Epochs above {run.epochs} and press Extend; a new run needs another "
                "folder."
            )
            self.run_label.setStyleSheet("font-weight: bold;")
        elif run is not None:
            self.run_label.setText(
                f"An interrupted run was found at epoch {run.epoch} of {run.epochs}: "
                "Resume continues it (a new run needs another folder)."
            )
            self.run_label.setStyleSheet("font-weight: bold;")
        self.run_label.setVisible(bool(self.run_problem) or run is not None)

    # --- file choosers (tests set the fields directly) ----------------------------------

    def _choose_data_folder(self) -> None:
        start = self.data_edit.text().strip()
        if path := QFileDialog.getExistingDirectory(self, "Training Tiles Folder", start):
            self.data_edit.setText(path)

    def _choose_data_zip(self) -> None:
        start = self.data_edit.text().strip()
        path, _ = QFileDialog.getOpenFileName(
            self, "Training Tiles Zip", start, "Zip archives (*.zip);;All files (*)"
        )
        if path:
            self.data_edit.setText(path)

    def _choose_out(self) -> None:
        start = self.out_folder or str(self.runs_root())
        if path := QFileDialog.getExistingDirectory(self, "Output Folder", start):
            self.out_edit.setText(path)

    def shutdown(self) -> None:
        self._check_timer.stop()
        self._probe_timer.stop()
        self._checker.shutdown()
        self._prober.shutdown()
