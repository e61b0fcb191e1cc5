"""The "Fine-tune the current model with my labels" half of Model > Train New Model.

:class:`FinetunePanel` lists the slides that have labels (:class:`LabelStore`, read on
a worker thread), each with a box to tick, its label count and classes. It says which
of the model's classes no ticked slide labels (the network is then not trained on them
and keeps what it knew) and offers to mix in tiles of a class-folder dataset so that
those classes are not forgotten. Label or tile classes the model does not know are
refused here, by name, before anything is cut.

A run first cuts the ticked slides' labels into ``OUT/data``
(:func:`cut_labelled_patches`, on the job's worker thread: the model's patch at its
scale, see :mod:`histoviewer.labels.extract`) and mixes the tiles in, then fine-tunes
the model on them (:func:`histoviewer.training.fit` with ``init_from``; the training
dialog runs both).

The panel is two group boxes, the labels and the fine-tuning settings, which
:class:`~histoviewer.gui.training_form.TrainingForm` places around its output folder.
"""

from __future__ import annotations

import html
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.errors import HistoViewerError, SlideError
from histoviewer.gui import settings as config
from histoviewer.gui.widgets import TileSourceRow, guard_wheel, sentence
from histoviewer.gui.workers import JobFailure, JobRunner
from histoviewer.labels.store import LabelError, LabelStore, match_class
from histoviewer.tasks import CancelToken
from histoviewer.training import TrainConfig, list_tiles, preset
from histoviewer.training.checkpoint import LAST_FILE
from histoviewer.training.config import model_settings

if TYPE_CHECKING:
    from histoviewer.labels.extract import ExtractResult
    from histoviewer.model import ModelInfo

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #b00020;"
#: The folder of the run's output folder the labelled patches are cut into.
DATA_FOLDER = "data"
#: Tiles of each class mixed in, unless the user chooses another number.
DEFAULT_PER_CLASS = 100
_CHECK_DELAY_MS = 300  # wait for typing to pause before listing a folder
_ROW_HEIGHT = 22
_ROWS_SHOWN = 6  # slides listed without scrolling


# --------------------------------------------------------------------------- headless


@dataclass(frozen=True)
class LabelledSlide:
    """A slide that has labels: its file, how many labels, per class, and whether the
    file is (still) where it was labelled."""

    path: str
    count: int
    counts: dict[str, int]
    exists: bool

    @property
    def name(self) -> str:
        return Path(self.path).name or self.path


def labelled_slides(store: LabelStore | None = None) -> list[LabelledSlide]:
    """Every slide with labels in ``store`` (default: the user's), by path."""
    return [
        LabelledSlide(s.slide_path, s.count, dict(s.counts), Path(s.slide_path).exists())
        for s in (store or LabelStore()).slides()
    ]


@dataclass(frozen=True)
class TileSource:
    """A class-folder dataset to mix in: where, and its tiles per model class."""

    path: str
    source: str
    available: dict[str, int]


def check_tile_source(path: str, class_names: list[str]) -> TileSource:
    """List the tiles in ``path`` (nothing decoded); LabelError naming every class the
    model does not know (as mixing them in would)."""
    index = list_tiles(path)
    unknown = [n for n in index.class_names if match_class(n, class_names) is None]
    if unknown:
        raise LabelError(
            f"the tiles in {index.source} hold classes the model does not know: "
            f"{', '.join(unknown)}; the model's classes are {', '.join(class_names)}"
        )
    labels = index.labels
    available: dict[str, int] = {}
    for c, name in enumerate(index.class_names):
        cid = match_class(name, class_names)
        assert cid is not None  # checked above
        key = class_names[cid]
        available[key] = available.get(key, 0) + int((labels == c).sum())
    return TileSource(path, index.source, available)


@dataclass(frozen=True)
class FinetuneRequest:
    """What a fine-tuning run cuts before it trains: the model (its file and info), the
    labelled slides (``scales``: µm/px the user set in the viewer for some of them) and,
    optionally, a tile dataset of which ``per_class`` tiles a class are mixed in."""

    model_path: str
    info: ModelInfo
    slides: tuple[str, ...]
    scales: dict[str, float] = field(default_factory=dict)
    tiles: str | None = None
    per_class: int = DEFAULT_PER_CLASS


@dataclass(frozen=True)
class CutEvent:
    """Progress of the step before fine-tuning. ``kind``: "cut" (``done`` of ``total``
    labelled patches cut), "mix" (mixing in the tiles of ``message``), "done"
    (``message``: what was written)."""

    kind: str
    done: int = 0
    total: int = 0
    message: str = ""


def cut_labelled_patches(
    request: FinetuneRequest,
    data: str | Path,
    progress: Callable[[CutEvent], None],
    cancel: CancelToken,
) -> ExtractResult:
    """Cut the labels of ``request``'s slides into the new or empty folder ``data`` and
    mix its tiles in. On any error, or Cancelled, ``data`` is removed again (it held
    nothing before) and the error is raised: SlideError for a slide that cannot be
    opened (moved), LabelError for labels that no longer match their slide or that
    name a class the model does not know, DatasetError for a broken tile dataset."""
    from histoviewer.labels.extract import add_tiles

    data = Path(data).expanduser()
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise HistoViewerError(f"{data} already holds files: choose an empty output folder")
    try:
        result = _cut(request, data, progress, cancel)
        if request.tiles:
            progress(CutEvent("mix", message=request.tiles))
            result.mixed = add_tiles(
                data, request.tiles, request.info, per_class=request.per_class, cancel=cancel
            )
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    progress(CutEvent("done", message=result.summary()))
    return result


def _cut(
    request: FinetuneRequest,
    data: Path,
    progress: Callable[[CutEvent], None],
    cancel: CancelToken,
) -> ExtractResult:
    from histoviewer.labels.extract import extract_tiles
    from histoviewer.slide import open_slide
    from histoviewer.slide.mpp import GIVEN_VIEWER

    store = LabelStore()
    readers = []
    try:
        jobs = []
        for path in request.slides:
            cancel.raise_if_cancelled()
            try:
                reader = open_slide(path)
            except SlideError as exc:
                raise SlideError(
                    f"{exc}. Its labels belong to the file at that place: put the file back "
                    "there, or untick the slide among the labelled slides"
                ) from None
            readers.append(reader)
            if mpp := request.scales.get(path):
                reader.set_mpp(mpp, GIVEN_VIEWER)
            labels = store.load(reader.identity())
            if not len(labels):
                raise LabelError(
                    f"the labels of {Path(path).name} do not match its file any more (it "
                    "changed since it was labelled): untick the slide"
                )
            jobs.append((reader, labels))
        progress(CutEvent("cut", 0, sum(len(labels) for _, labels in jobs)))
        return extract_tiles(
            jobs,
            request.info,
            data,
            progress=lambda done, total: progress(CutEvent("cut", done, total)),
            cancel=cancel,
        )
    finally:
        for reader in readers:
            reader.close()


def forget_patches(out: str | Path) -> None:
    """Remove ``out``'s labelled patches when no run there can use them (no ``last.pt``
    to resume): the next Start cuts them again."""
    out = Path(out).expanduser()
    if not (out / LAST_FILE).is_file():
        shutil.rmtree(out / DATA_FOLDER, ignore_errors=True)


def inspect_finetune_folder(folder: str) -> None:
    """HistoViewerError when ``folder`` has labelled patches but no run to resume."""
    data = Path(folder).expanduser() / DATA_FOLDER
    if (
        data.is_dir()
        and any(data.iterdir())
        and not (Path(folder).expanduser() / LAST_FILE).is_file()
    ):
        raise HistoViewerError(f"{data} already holds files but no run uses them")


# --------------------------------------------------------------------------- the panel


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n:,} {one}" if n == 1 else f"{n:,} {many or one + 's'}"


def _classes_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {name}" for name, n in counts.items())


class FinetunePanel(QObject):
    """The labelled slides, the tiles to mix in and the fine-tuning settings.

    ``sources_box`` and ``settings_box`` are the two group boxes the form lays out.
    Signal ``changed()`` whenever :attr:`ready`, :meth:`checking` or the counts the
    estimate uses may have changed. :meth:`set_model` says which model to fine-tune.
    """

    changed = Signal()

    def __init__(self, settings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.model_path: str | None = None
        self.info: ModelInfo | None = None
        self.slides: list[LabelledSlide] = []
        self.listed = False  # the labelled slides have been read at least once
        self.tile_source: TileSource | None = None
        self.tile_problem = ""
        self._unticked: set[str] = set()  # slides the user unticked (kept over refreshes)
        self._editable = True
        self._lister = JobRunner(self)
        self._lister.succeeded.connect(self._on_listed)
        self._lister.failed.connect(self._on_list_failed)
        self._tile_checker = JobRunner(self)
        self._tile_checker.succeeded.connect(self._on_tiles_checked)
        self._tile_checker.failed.connect(self._on_tiles_failed)
        self._build()
        self._restore()
        self._tile_timer = QTimer(self, singleShot=True, interval=_CHECK_DELAY_MS)
        self._tile_timer.timeout.connect(self.check_tiles)
        self.tiles_edit.textChanged.connect(self._tiles_edited)
        self.mix_check.toggled.connect(self._mix_toggled)
        self.per_class_spin.valueChanged.connect(self._show_mix)
        for signal in (
            self.epochs_spin.valueChanged,
            self.batch_spin.valueChanged,
            self.device_combo.currentTextChanged,
            self.per_class_spin.valueChanged,
        ):
            signal.connect(self._edited)
        self._show_model()

    # --- layout -------------------------------------------------------------------------

    def _build(self) -> None:
        self.model_label = _wrapping_label()
        self.slides_table = QTableWidget(0, 3)
        self.slides_table.setHorizontalHeaderLabels(["Slide", "Labels", "Classes"])
        self.slides_table.verticalHeader().setVisible(False)
        self.slides_table.verticalHeader().setDefaultSectionSize(_ROW_HEIGHT)
        self.slides_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.slides_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.slides_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        # The classes wrap in a narrow form: the rows follow the columns' widths.
        header.sectionResized.connect(self._fit_rows)
        self.slides_table.itemChanged.connect(self._on_ticked)
        self.slides_label = _wrapping_label("Reading the labelled slides...")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the labelled slides again (after labelling more)")
        self.refresh_button.clicked.connect(self.refresh)
        slides_row = QHBoxLayout()
        slides_row.addWidget(self.slides_label, 1)
        slides_row.addWidget(self.refresh_button, 0, Qt.AlignmentFlag.AlignTop)
        self.coverage_label = _wrapping_label()

        self.mix_check = QCheckBox("Also train on tiles from:")
        self.mix_check.setToolTip(
            "Mix tiles of a class-folder dataset (folder or .zip, e.g. the tiles the model "
            "was trained on) into the labelled patches, so that fine-tuning does not make "
            "the model forget the classes the labels do not cover"
        )
        tiles_row = TileSourceRow("Tiles to Mix In")
        self.tiles_edit = tiles_row.edit
        self.tiles_folder_button = tiles_row.folder_button
        self.tiles_zip_button = tiles_row.zip_button
        self.per_class_spin = QSpinBox(minimum=1, maximum=100_000)
        self.per_class_spin.setValue(DEFAULT_PER_CLASS)
        self.per_class_spin.setSuffix(" per class")
        self.per_class_spin.setToolTip("At most this many tiles of each class are mixed in")
        per_class_row = QHBoxLayout()
        per_class_row.addWidget(QLabel("At most"))
        per_class_row.addWidget(self.per_class_spin)
        per_class_row.addStretch(1)
        self.mix_label = _wrapping_label()
        self.mix_widget = QWidget()
        mix = QVBoxLayout(self.mix_widget)
        mix.setContentsMargins(0, 0, 0, 0)
        mix.addLayout(tiles_row)
        mix.addLayout(per_class_row)
        mix.addWidget(self.mix_label)
        self.mix_widget.setEnabled(False)

        self.sources_box = QGroupBox("Labelled slides")
        sources = QVBoxLayout(self.sources_box)
        sources.addWidget(self.model_label)
        sources.addLayout(slides_row)
        sources.addWidget(self.slides_table)
        sources.addWidget(self.coverage_label)
        sources.addWidget(self.mix_check)
        sources.addWidget(self.mix_widget)

        self.epochs_spin = QSpinBox(minimum=1, maximum=1000)
        self.batch_spin = QSpinBox(minimum=1, maximum=4096)
        self.device_combo = QComboBox()
        self.device_combo.addItems(config.available_devices())
        self.device_combo.setToolTip("auto uses a GPU when one is available, else the CPU.")
        self.estimate_label = _wrapping_label()
        self.settings_box = QGroupBox("Fine-tuning")
        form = QFormLayout(self.settings_box)
        form.addRow("Epochs:", self.epochs_spin)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Device:", self.device_combo)
        form.addRow(self.estimate_label)
        for box in (self.sources_box, self.settings_box):
            for button in box.findChildren(QPushButton):
                button.setAutoDefault(False)
            guard_wheel(box)

    def _restore(self) -> None:
        base = preset("finetune")

        def saved(key: str, default: int) -> int:
            try:
                return int(config.training_value(self.settings, f"finetune_{key}"))
            except ValueError:
                return default

        self.epochs_spin.setValue(saved("epochs", base.epochs))
        self.batch_spin.setValue(saved("batch_size", base.batch_size))
        self.per_class_spin.setValue(saved("per_class", DEFAULT_PER_CLASS))
        device = config.training_value(self.settings, "device")
        if device:
            if self.device_combo.findText(device) < 0:
                self.device_combo.addItem(device)
            self.device_combo.setCurrentText(device)
        self.tiles_edit.setText(config.training_value(self.settings, "finetune_tiles"))
        self.mix_check.setChecked(config.training_value(self.settings, "finetune_mix") == "true")
        self.mix_widget.setEnabled(self.mix_check.isChecked())

    def remember(self) -> None:
        """Save the choices for next time (when a run starts, and as they change)."""
        for key, value in (
            ("finetune_epochs", str(self.epochs_spin.value())),
            ("finetune_batch_size", str(self.batch_spin.value())),
            ("finetune_per_class", str(self.per_class_spin.value())),
            ("finetune_mix", "true" if self.mix_check.isChecked() else "false"),
            ("finetune_tiles", self.tiles_edit.text().strip()),
            ("device", self.device),
        ):
            config.set_training_value(self.settings, key, value)

    def _edited(self) -> None:
        self.remember()
        self.changed.emit()

    # --- the model ----------------------------------------------------------------------

    def set_model(self, path: str | None, info: ModelInfo | None) -> None:
        """Fine-tune the model ``info`` from the file ``path`` (None: there is none)."""
        if path == self.model_path and info is self.info:
            return
        self.model_path, self.info = (path, info) if path and info is not None else (None, None)
        if not self.tiles_edit.text().strip() and (suggested := self.model_tiles()):
            self.tiles_edit.setText(suggested)  # offered; mixed in only when ticked
        self._show_model()
        self._show_slides()
        if self.mix_check.isChecked() and self.tiles_edit.text().strip():
            self.check_tiles()  # the classes it is checked against changed
        self.changed.emit()

    def model_tiles(self) -> str:
        """The tiles the model was trained on, where they still are ("" if unknown, or
        for a fine-tuned model, whose tiles were labelled patches)."""
        cfg = (self.info.training or {}).get("config") if self.info is not None else None
        if not isinstance(cfg, dict) or cfg.get("init_from"):
            return ""
        data = str(cfg.get("data") or "")
        return data if data and Path(data).exists() else ""

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names) if self.info is not None else []

    def _show_model(self) -> None:
        info = self.info
        if info is None:
            self.model_label.setText(
                "Load a model saved in a file to fine-tune it (Model > Load Model...)."
            )
            return
        self.model_label.setText(
            f"Fine-tunes <b>{_escape(info.name)}</b> ({info.arch}, "
            f"{_count(len(info.class_names), 'class', 'classes')}; "
            f"{info.patch_size} px patches at {info.mpp:g} µm/px)."
        )
        self.model_label.setToolTip(self.model_path or "")

    # --- the labelled slides ------------------------------------------------------------

    def refresh(self) -> None:
        """Read the labelled slides again, off the GUI thread."""
        self.slides_label.setText("Reading the labelled slides...")
        self.slides_label.setStyleSheet("")
        self._lister.start(lambda ctx: labelled_slides(), "read the labelled slides")
        self.changed.emit()

    def _on_listed(self, job_id: int, slides: list[LabelledSlide]) -> None:
        self.slides = slides
        self.listed = True
        self._show_slides()
        self.changed.emit()

    def _on_list_failed(self, job_id: int, failure: JobFailure) -> None:
        self.slides = []
        self.listed = True
        self._show_slides()
        self.slides_label.setText(sentence(failure.message))
        self.slides_label.setStyleSheet(ERROR_STYLE)
        self.changed.emit()

    def _show_slides(self) -> None:
        table = self.slides_table
        table.blockSignals(True)
        table.setRowCount(len(self.slides))
        for row, slide in enumerate(self.slides):
            name = QTableWidgetItem(slide.name if slide.exists else f"{slide.name} (not found)")
            name.setToolTip(slide.path if slide.exists else f"{slide.path}: the file is not there")
            if slide.exists:
                name.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                ticked = slide.path not in self._unticked
                name.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
            else:
                name.setFlags(Qt.ItemFlag.NoItemFlags)
                name.setForeground(table.palette().color(QPalette.ColorRole.PlaceholderText))
            count = QTableWidgetItem(f"{slide.count:,}")
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            classes = QTableWidgetItem(_classes_text(slide.counts))
            classes.setToolTip(_classes_text(slide.counts))
            for col, item in enumerate((name, count, classes)):
                if col:
                    item.setFlags(name.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
                table.setItem(row, col, item)
        table.blockSignals(False)
        self._fit_rows()
        table.setVisible(bool(self.slides))
        self._show_summary()

    def _show_summary(self) -> None:
        """What the ticked slides give, and which classes they leave out."""
        if not self.listed:
            text = "Reading the labelled slides..."
        elif not self.slides:
            text = (
                "No slide has labels yet. Label patches on a slide's map first; the slides "
                "with labels are listed here."
            )
        else:
            ticked = self.ticked_slides()
            text = (
                f"{_count(len(self.slides), 'slide')} with labels; "
                f"{self.labelled_patches():,} labelled patches of "
                f"{_count(len(ticked), 'ticked slide')} are cut at the model's scale and "
                "trained on."
            )
        self.slides_label.setText(text)
        self.slides_label.setStyleSheet("")
        self._show_coverage()

    def _fit_rows(self) -> None:
        """Rows as high as their wrapped classes; up to six rows show without scrolling."""
        table = self.slides_table
        table.resizeRowsToContents()
        shown = min(table.rowCount(), _ROWS_SHOWN)
        rows = sum(table.rowHeight(r) for r in range(shown)) if shown else _ROW_HEIGHT
        header = table.horizontalHeader().sizeHint().height()
        table.setFixedHeight(rows + header + 2 * table.frameWidth() + 2)

    def _on_ticked(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        path = self.slides[item.row()].path
        if item.checkState() == Qt.CheckState.Checked:
            self._unticked.discard(path)
        else:
            self._unticked.add(path)
        self._show_summary()  # not the table: this item is still emitting
        self.changed.emit()

    def set_ticked(self, path: str, on: bool) -> None:
        """Tick (or untick) the slide ``path`` in the list."""
        for row, slide in enumerate(self.slides):
            if slide.path == path:
                state = Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
                self.slides_table.item(row, 0).setCheckState(state)

    def ticked_slides(self) -> list[LabelledSlide]:
        """The slides whose labels a run cuts (those whose file is there and ticked)."""
        return [s for s in self.slides if s.exists and s.path not in self._unticked]

    def labelled_patches(self) -> int:
        return sum(s.count for s in self.ticked_slides())

    def label_counts(self) -> dict[str, int]:
        """Labels of the ticked slides per label class name."""
        out: dict[str, int] = {}
        for slide in self.ticked_slides():
            for name, n in slide.counts.items():
                out[name] = out.get(name, 0) + n
        return out

    def unknown_classes(self) -> list[str]:
        """Label classes of the ticked slides that the model does not know."""
        names = self.class_names
        return sorted(n for n in self.label_counts() if match_class(n, names) is None)

    def unlabelled_classes(self) -> list[str]:
        """The model's classes that no ticked slide labels."""
        names = self.class_names
        covered = {match_class(n, names) for n in self.label_counts()}
        return [n for i, n in enumerate(names) if i not in covered]

    def _show_coverage(self) -> None:
        label = self.coverage_label
        label.setStyleSheet("")
        if self.info is None or not self.ticked_slides():
            label.setVisible(False)
            return
        label.setVisible(True)
        if unknown := self.unknown_classes():
            label.setText(
                f"The labels name {_plural(unknown, 'a class', 'classes')} the model does not "
                f"know: {', '.join(unknown)}. The model's classes are "
                f"{', '.join(self.class_names)}: untick those slides, or fine-tune a model "
                "that has these classes."
            )
            label.setStyleSheet(ERROR_STYLE)
            return
        missing = self.unlabelled_classes()
        if not missing:
            label.setText(f"The labels cover all {len(self.class_names)} of the model's classes.")
            return
        shown = ", ".join(class_label(n) for n in missing)
        mixed = self.tile_source is not None and self.mix_check.isChecked()
        advice = (
            "the tiles mixed in below keep the model from forgetting them."
            if mixed
            else "mixing in tiles of all the classes (below, e.g. those the model was "
            "trained on) keeps it from forgetting them."
        )
        label.setText(
            f"No labels of {shown}: fine-tuning on the labels alone does not train on "
            f"{_plural(missing, 'that class', 'those classes')}; {advice}"
        )

    # --- the tiles mixed in -------------------------------------------------------------

    @property
    def mixing(self) -> bool:
        """Whether tiles are to be mixed in (the box ticked and a source given)."""
        return self.mix_check.isChecked() and bool(self.tiles_edit.text().strip())

    def _mix_toggled(self, on: bool) -> None:
        self.mix_widget.setEnabled(on and self._editable)
        self.remember()
        if on and self.tiles_edit.text().strip() and self.tile_source is None:
            self.check_tiles()
        self._show_mix()
        self.changed.emit()

    def _tiles_edited(self) -> None:
        self.tile_source = None
        self.tile_problem = ""
        self._tile_timer.start()
        self.changed.emit()

    def check_tiles(self) -> None:
        """List the tiles to mix in on a worker thread and check their classes."""
        self._tile_timer.stop()
        path = self.tiles_edit.text().strip()
        self.tile_source = None
        self.tile_problem = ""
        names = self.class_names
        if not path or not names or not self.mix_check.isChecked():
            self._tile_checker.cancel()
        else:
            self._tile_checker.start(
                lambda ctx: check_tile_source(path, names), f"mix in the tiles of {path}"
            )
        self._show_mix()
        self.changed.emit()

    def _on_tiles_checked(self, job_id: int, source: TileSource) -> None:
        self.tile_source = source
        self.tile_problem = ""
        config.set_training_value(self.settings, "finetune_tiles", source.path)
        self._show_mix()
        self.changed.emit()

    def _on_tiles_failed(self, job_id: int, failure: JobFailure) -> None:
        self.tile_source = None
        self.tile_problem = sentence(failure.message)
        self._show_mix()
        self.changed.emit()

    def mixed_counts(self) -> dict[str, int]:
        """Tiles of each model class a run mixes in (none unless checked and mixing)."""
        source = self.tile_source
        if source is None or not self.mix_check.isChecked():
            return {}
        n = self.per_class_spin.value()
        return {name: min(n, count) for name, count in source.available.items() if count}

    def _show_mix(self) -> None:
        label = self.mix_label
        label.setStyleSheet("")
        path = self.tiles_edit.text().strip()
        if not self.mix_check.isChecked():
            label.setText("")
        elif not path:
            label.setText("Choose a folder or .zip of tiles with one sub-folder per class.")
        elif self.tile_problem:
            label.setText(self.tile_problem)
            label.setStyleSheet(ERROR_STYLE)
        elif self.tile_source is None:
            label.setText(f"Checking {path}...")
        else:
            mixed = self.mixed_counts()
            available = sum(self.tile_source.available.values())
            label.setText(
                f"{_count(len(self.tile_source.available), 'class', 'classes')}, "
                f"{available:,} tiles in {self.tile_source.source}: {sum(mixed.values()):,} of "
                f"them are mixed in (at most {self.per_class_spin.value():,} of each class)."
            )
        label.setVisible(bool(label.text()))
        self._show_coverage()

    # --- state --------------------------------------------------------------------------

    def checking(self) -> bool:
        """Whether the slides or the tiles are still being read."""
        return (
            self._lister.is_busy()
            or self._tile_checker.is_busy()
            or (self.mixing and self._tile_timer.isActive())
        )

    @property
    def problem(self) -> str:
        """Why a run cannot start ("" when it can, checks aside)."""
        if self.info is None or not self.model_path:
            return "Load a model saved in a file to fine-tune it."
        if not self.ticked_slides():
            return "Tick at least one slide with labels."
        if unknown := self.unknown_classes():
            return f"The labels name classes the model does not know: {', '.join(unknown)}."
        if self.mixing and self.tile_problem:
            return self.tile_problem
        if self.mix_check.isChecked() and not self.tiles_edit.text().strip():
            return "Choose the tiles to mix in, or untick 'Also train on tiles from'."
        return ""

    @property
    def ready(self) -> bool:
        """Whether a run can start (the output folder aside)."""
        return (
            not self.problem
            and not self.checking()
            and (not self.mixing or self.tile_source is not None)
        )

    def counts(self) -> list[int]:
        """Patches a run trains on per model class (labels, and the tiles mixed in)."""
        names = self.class_names
        out = [0] * len(names)
        for name, n in self.label_counts().items():
            cid = match_class(name, names)
            if cid is not None:
                out[cid] += n
        for name, n in self.mixed_counts().items():
            out[names.index(name)] += n
        return out

    @property
    def epochs(self) -> int:
        return self.epochs_spin.value()

    @property
    def device(self) -> str:
        return self.device_combo.currentText()

    def config(self, out: str) -> TrainConfig:
        """The run: the finetune preset's schedule with the model's architecture, input
        size and patch scale (as :func:`~histoviewer.training.config.finetune_config`
        makes it, which the run uses), on the patches cut into ``out/data``."""
        info, path = self.info, self.model_path
        if info is None or not path:
            raise HistoViewerError("load a model saved in a file to fine-tune it")
        return preset(
            "finetune",
            data=str(Path(out) / DATA_FOLDER) if out else "",
            out=out,
            epochs=self.epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            device=self.device,
            init_from=path,
            **model_settings(info),
        )

    def request(self) -> FinetuneRequest:
        """What a run cuts: the ticked slides (at the scale set in the viewer for those
        that have one) and the tiles to mix in; HistoViewerError when it cannot start."""
        if problem := self.problem:
            raise HistoViewerError(problem)
        assert self.info is not None and self.model_path
        paths = tuple(s.path for s in self.ticked_slides())
        scales = {p: config.slide_scale(self.settings, p) for p in paths}
        return FinetuneRequest(
            self.model_path,
            self.info,
            paths,
            {p: v for p, v in scales.items() if v is not None},
            self.tiles_edit.text().strip() if self.mixing else None,
            self.per_class_spin.value(),
        )

    def show_run_config(self, cfg: TrainConfig) -> None:
        """Show the settings of the fine-tuning run found in the output folder."""
        self.epochs_spin.setValue(cfg.epochs)
        self.batch_spin.setValue(cfg.batch_size)

    def set_editable(self, on: bool) -> None:
        self._editable = on
        for w in (
            self.slides_table,
            self.refresh_button,
            self.mix_check,
            self.epochs_spin,
            self.batch_spin,
            self.device_combo,
        ):
            w.setEnabled(on)
        self.mix_widget.setEnabled(on and self.mix_check.isChecked())

    def shutdown(self) -> None:
        self._tile_timer.stop()
        self._lister.shutdown()
        self._tile_checker.shutdown()


def _wrapping_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _plural(items: list[str], one: str, many: str) -> str:
    return one if len(items) == 1 else many


def _escape(text: str) -> str:
    return html.escape(text, quote=False)
