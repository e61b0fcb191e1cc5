"""The set-up half of Model > Train New Model: dataset, preset, hyperparameters, output.

:class:`TrainingForm` checks the dataset as soon as it is chosen (``list_tiles``
on a worker thread: file names only, nothing decoded) and shows its classes and
image counts, or the :class:`~histoviewer.errors.DatasetError` in red. It looks
into the output folder too: a ``last.pt`` there is an earlier run, which can be
resumed (its settings are shown) but not overwritten by a new one; other files of a
run without a ``last.pt`` make the folder unusable for a new run as well. A folder
holding a cross-validation by specimen (``crossval.json``, ``fold-N`` folders) is an
earlier run too: Resume continues it at the fold (or final model) it stopped in.

"Also test on unseen specimens" turns a run into a cross-validation by specimen
(:mod:`histoviewer.training.crossval`): one training per fold, each tested on the
specimens it never saw, then the final model, K + 1 trainings in all. The specimens
are read from the file names as soon as the tiles are checked, so that tiles whose
names carry none are refused before hours of work, not after the tiles are read.

The form has two modes: a new model trained from a tile dataset, or the model in the
viewer fine-tuned with the user's labels
(:class:`~histoviewer.gui.finetune_form.FinetunePanel`, offered only while the viewer's
model came from a file, see :meth:`TrainingForm.set_current_model`). Both share the
output folder and Resume.

Every choice is remembered in the settings as it is made and comes back the next time
the dialog opens. Below the training settings the form says about how long the run
will take (:class:`Estimate`): epochs times tiles at a training speed that is, best
first, the speed of an earlier run with the same settings, one measured with a few
batches of random tiles on this computer (:func:`measure_speed`, on a worker thread),
or a typical speed of such a device (:data:`TYPICAL_RATES`), and it says which.
"""

from __future__ import annotations

import logging
import math
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
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.errors import HistoViewerError
from histoviewer.gui import settings as config
from histoviewer.gui.finetune_form import ERROR_STYLE, FinetunePanel, inspect_finetune_folder
from histoviewer.gui.widgets import TileSourceRow, guard_wheel, sentence
from histoviewer.gui.workers import JobContext, JobFailure, JobRunner
from histoviewer.model import ARCHITECTURES, ModelInfo
from histoviewer.slide.mpp import DEFAULT_MPP
from histoviewer.training import PRESETS, TileIndex, TrainConfig, list_tiles, preset
from histoviewer.training import report as reporting
from histoviewer.training.checkpoint import LAST_FILE, load_last
from histoviewer.training.crossval import (
    CROSSVAL_FILE,
    earlier_files,
    fold_folder,
    is_crossval,
    saved_config,
)
from histoviewer.training.specimens import compile_pattern, specimen_of
from histoviewer.training.split import GROUPED_VAL_SHARE

log = logging.getLogger(__name__)

_CHECK_DELAY_MS = 300  # wait for typing to pause before listing a folder
_MEASURE_DELAY_MS = 800  # wait for the settings to settle before measuring the speed

# Training speeds in images per second at 224 px with batches of 32 or more, typical of
# an 8-core desktop CPU, a mid-range CUDA GPU with mixed precision and an Apple M1/M2
# GPU. Only a first guess, used until the speed on this computer has been measured:
# real speeds differ several-fold from one machine to the next.
TYPICAL_RATES: dict[str, dict[str, float]] = {
    "cpu": {"resnet18": 40.0, "resnet34": 22.0, "resnet50": 10.0, "resnet101": 6.0},
    "cuda": {"resnet18": 2000.0, "resnet34": 1200.0, "resnet50": 550.0, "resnet101": 330.0},
    "mps": {"resnet18": 350.0, "resnet34": 200.0, "resnet50": 90.0, "resnet101": 50.0},
}
#: Evaluation (forward only, no gradients) runs about this many times faster.
EVAL_SPEEDUP = 3.0
# Smaller images speed training up by their pixels, but not without end.
_MAX_SMALL_IMAGE_SPEEDUP = 8.0

SPEED_BASES = {
    "run": "the speed of an earlier run with these settings on this computer",
    "measured": "the speed measured with a few batches on this computer",
    "typical": "a typical speed of such a device; this computer's may differ several-fold",
}


NO_MODEL_TIP = (
    "Fine-tunes the model in use with the patches labelled on slides. Load a model saved in a "
    "file first (Model > Load Model...)."
)

#: Fold counts the form offers for the cross-validation by specimen.
MIN_FOLDS, MAX_FOLDS, DEFAULT_FOLDS = 2, 10, 5


@dataclass(frozen=True)
class EarlierRun:
    """What ``last.pt`` in the output folder says about the run that wrote it.

    For a cross-validation by specimen (``parts`` > 0: its folds and the final model),
    ``config`` is the whole cross-validation's (crossval.json), ``part_no`` the part
    Resume continues (1 to ``parts``; ``parts`` is the final model) and ``epoch`` the
    epochs completed in that part; ``finished``: every part is.
    """

    folder: str
    epoch: int  # completed epochs
    epochs: int
    config: dict[str, Any]
    finished: bool  # the test results were written (report.json)
    parts: int = 0  # 0: a single run; folds + 1 for a cross-validation
    part_no: int = 0

    @property
    def crossval(self) -> bool:
        return self.parts > 0

    @property
    def part_name(self) -> str:
        """'fold 2 of 5' or 'the final model' (the part Resume continues); '' for a run."""
        if not self.crossval:
            return ""
        if self.part_no >= self.parts:
            return "the final model"
        return f"fold {self.part_no} of {self.parts - 1}"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def approx_duration(seconds: float) -> str:
    """A rough length of time, for estimates: '40 s', '12 min', '2 h 10 min'."""
    secs = max(1, round(seconds))
    if secs < 60:
        return f"{secs} s"
    minutes = round(secs / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class Speed:
    """Images per second in training and in evaluation; ``basis``: a key of
    :data:`SPEED_BASES` (where the figures come from)."""

    train: float
    eval: float
    basis: str


def typical_speed(arch: str, device_type: str, image_size: int) -> Speed:
    """:data:`TYPICAL_RATES` for ``arch`` on a device of ``device_type`` ("cpu", "cuda",
    "mps"), scaled to ``image_size`` by the pixels per image."""
    rates = TYPICAL_RATES.get(device_type, TYPICAL_RATES["cpu"])
    base = rates.get(arch, min(rates.values()))
    factor = min(_MAX_SMALL_IMAGE_SPEEDUP, (224 / max(1, image_size)) ** 2)
    return Speed(base * factor, base * factor * EVAL_SPEEDUP, "typical")


def _used_tiles(counts: list[int], cfg: TrainConfig) -> int:
    limit = cfg.limit_per_class
    return sum(min(n, limit) if limit else n for n in counts)


def split_sizes(counts: list[int], cfg: TrainConfig) -> tuple[int, int, int]:
    """About how many tiles of ``counts`` (per class) train, validate and test under
    ``cfg``'s images-per-class limit and split fractions (the canonical split)."""
    total = _used_tiles(counts, cfg)
    held = math.ceil(total * cfg.holdout)
    test = math.ceil(held * cfg.test_share)
    return total - held, held - test, test


def fold_sizes(counts: list[int], cfg: TrainConfig) -> tuple[int, int, int]:
    """About how many tiles train, validate and test in one fold of ``cfg``'s
    cross-validation by specimen: a fold's specimens (about 1 / ``cfg.folds`` of the
    tiles) test, a small share of the rest validates, the rest trains."""
    total = _used_tiles(counts, cfg)
    test = math.ceil(total / max(1, cfg.folds))
    val = math.ceil((total - test) * GROUPED_VAL_SHARE)
    return total - test - val, val, test


@dataclass(frozen=True)
class Estimate:
    """About how long ``epochs`` epochs of a run take (and its test at the end).

    For a cross-validation by specimen (``folds`` > 0) ``seconds`` covers every training
    left, ``trainings`` of the ``folds`` + 1 (the folds, on ``fold_train_images`` tiles
    an epoch each, then the final model on ``train_images``), ``epochs`` each.
    """

    seconds: float
    epochs: int
    train_images: int
    arch: str
    image_size: int
    batch_size: int
    where: str  # "this CPU", "the GPU", ...
    speed: Speed
    folds: int = 0  # 0: a single run
    fold_train_images: int = 0
    trainings: int = 1

    @classmethod
    def of(
        cls,
        cfg: TrainConfig,
        epochs: int,
        counts: list[int],
        speed: Speed,
        where: str,
        *,
        from_part: int = 1,
        part_epochs_done: int = 0,
    ) -> Estimate:
        """``epochs`` epochs of ``cfg`` on tiles of ``counts`` (per class). For a
        cross-validation ``epochs`` is each training's length, and resuming it starts
        at part ``from_part`` (1 to folds + 1) of which ``part_epochs_done`` are done."""

        def seconds(n: int, sizes: tuple[int, int, int]) -> float:
            train, val, test = sizes
            return max(0, n) * (train / speed.train + val / speed.eval) + test / speed.eval

        canonical = split_sizes(counts, cfg)
        common = (cfg.arch, cfg.image_size, cfg.batch_size, where, speed)
        if not is_crossval(cfg):
            return cls(seconds(epochs, canonical), epochs, canonical[0], *common)
        fold = fold_sizes(counts, cfg)
        parts = cfg.folds + 1
        total = 0.0
        for part in range(max(1, from_part), parts + 1):
            left = epochs - (part_epochs_done if part == from_part else 0)
            total += seconds(left, fold if part <= cfg.folds else canonical)
        return cls(
            total,
            epochs,
            canonical[0],
            *common,
            folds=cfg.folds,
            fold_train_images=fold[0],
            trainings=parts - max(1, from_part) + 1,
        )

    @property
    def short(self) -> str:
        """'About 2 h 10 min on this CPU'."""
        return f"About {approx_duration(self.seconds)} on {self.where}"

    @property
    def work(self) -> str:
        """'15 epochs x 80,000 training tiles, resnet50 at 224 px, batch 64'; for a
        cross-validation '6 trainings of 15 epochs (5 folds on about 76,000 training
        tiles each, then the final model on 80,000), resnet50 at 224 px, batch 64'."""
        model = f"{self.arch} at {self.image_size} px, batch {self.batch_size}"
        if not self.folds:
            return f"{_epochs(self.epochs)} × {self.train_images:,} training tiles, {model}"
        sizes = (
            f"on about {self.fold_train_images:,} training tiles each, then the final model "
            f"on {self.train_images:,}"
        )
        if self.trainings > self.folds:
            return (
                f"{self.trainings} trainings of {_epochs(self.epochs)} ({self.folds} folds "
                f"{sizes}), {model}"
            )
        if self.trainings == 1:
            return (
                f"the final model left, {_epochs(self.epochs)} × {self.train_images:,} "
                f"training tiles, {model}"
            )
        return (
            f"{self.trainings} of {self.folds + 1} trainings left, {_epochs(self.epochs)} each "
            f"(the folds {sizes}), {model}"
        )

    @property
    def basis(self) -> str:
        """Why the figure is only approximate."""
        rate = f"{self.speed.train:,.0f} images/s"
        return f"approximate: {rate}, {SPEED_BASES[self.speed.basis]}"


def device_place(device: Any) -> str:
    """How a torch device reads in a sentence: 'this CPU', 'the GPU', 'the GPU cuda:1'."""
    if device.type == "cuda":
        return "the GPU" if device.index is None else f"the GPU {device}"
    if device.type == "mps":
        return "the Apple GPU"
    return "this CPU"


def measure_speed(cfg: TrainConfig, ctx: JobContext | None = None) -> Speed:
    """Time a few training and evaluation batches of ``cfg``'s network on its device
    (random tiles of its tile size; the engine and settings of a real run). On a CPU
    the batches are small (the speed there hardly depends on their size), on a GPU
    up to 64 images. The global random state is left as it was."""
    import torch

    from histoviewer.device import resolve_device
    from histoviewer.model import ModelInfo, build_network
    from histoviewer.training.engine import Engine

    device = resolve_device(cfg.device)
    batch = max(2, min(cfg.batch_size, 4 if device.type == "cpu" else 64))
    run = cfg.replace(batch_size=batch, eval_batch_size=2 * batch, compile=False)
    tile = cfg.patch_size or cfg.image_size

    def check() -> None:
        if ctx is not None:
            ctx.cancel.raise_if_cancelled()

    with torch.random.fork_rng(devices=[]):
        network = build_network(cfg.arch, 2)
        info = ModelInfo(
            arch=cfg.arch,
            class_names=["a", "b"],
            input_size=cfg.image_size,
            patch_size=tile,
            mpp=cfg.tile_mpp,
        )
        images = torch.randint(0, 256, (3 * batch, tile, tile, 3), dtype=torch.uint8)
        images = images.to(device)
        labels = (torch.arange(3 * batch) % 2).to(device)
        engine = Engine(run, network, info, device, images, labels, 3 * batch)
        rows = torch.arange(3 * batch, device=device)
        try:
            check()
            warm_up = engine.train_one_epoch(0, rows[:batch])  # first calls set up
            check()
            train = warm_up.images_per_s
            if warm_up.seconds < 5.0:
                train = engine.train_one_epoch(1, rows[batch:]).images_per_s
            check()
            engine.evaluate(rows[:batch])
            evaluated = engine.evaluate(rows[: 2 * batch])
        finally:
            del engine, network, images, labels
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return Speed(train, max(train, evaluated.images_per_s), "measured")


# Speeds measured (or seen in runs) in this session, by TrainingForm.speed_key; None:
# the measurement failed.
_SPEEDS: dict[tuple, Speed | None] = {}


def _speed_name(key: tuple) -> str:
    """The settings key of a run's speed: 'speed/resnet50-cpu-224-0-64'."""
    return "speed/" + "-".join(str(part).replace(":", "_") for part in key)


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
    """The earlier run or cross-validation in ``folder``, None when there is none (raises
    HistoViewerError when ``last.pt`` or ``crossval.json`` is there but unreadable, or
    when files of a run lie there, or in a ``fold-N`` folder, without either)."""
    if (Path(folder) / CROSSVAL_FILE).is_file():
        return inspect_crossval(folder)
    path = Path(folder) / LAST_FILE
    if not path.is_file():
        if files := earlier_files(folder):
            # A model or report without the checkpoint: nothing to resume, much to lose.
            names = ", ".join(p.relative_to(Path(folder).expanduser()).as_posix() for p in files)
            raise HistoViewerError(
                f"{folder} holds files of an earlier run ({names}) but no {LAST_FILE} to resume it"
            )
        return None
    checkpoint = load_last(path)
    cfg = checkpoint.get("config", {})
    epochs = int(cfg.get("epochs", 0))
    epoch = int(checkpoint.get("epoch", 0))
    finished = epoch >= epochs and (Path(folder) / "report.json").is_file()
    return EarlierRun(str(folder), epoch, epochs, cfg, finished)


def inspect_crossval(folder: str) -> EarlierRun:
    """The cross-validation by specimen in ``folder`` (its crossval.json): which part
    Resume continues (the first whose run has no report.json yet) and how far that part
    got (its ``last.pt``); HistoViewerError when a file cannot be read."""
    try:
        cfg = saved_config(folder)
    except (KeyError, TypeError, ValueError) as exc:  # not written by this program
        raise HistoViewerError(
            f"cannot read the cross-validation in {Path(folder) / CROSSVAL_FILE} ({exc})"
        ) from None
    if cfg is None:
        raise HistoViewerError(f"{folder} holds no {CROSSVAL_FILE}")
    parts = cfg.folds + 1
    part_no, epoch = parts, cfg.epochs
    for part in range(1, parts + 1):
        run = fold_folder(folder, part) if part < parts else Path(folder)
        if (run / reporting.REPORT_FILE).is_file():
            continue  # finished (a finished fold is only tested again on resume)
        part_no = part
        last = run / LAST_FILE
        epoch = int(load_last(last).get("epoch", 0)) if last.is_file() else 0
        break
    finished = part_no == parts and (Path(folder) / reporting.REPORT_FILE).is_file()
    return EarlierRun(str(folder), epoch, cfg.epochs, cfg.to_dict(), finished, parts, part_no)


def specimen_names(stems: list[str]) -> tuple[list[str], int, str]:
    """The specimens named in ``stems`` (file names without extension) by the default
    pattern (Kather 2016 CRC-Prim-HE-NN, TCGA barcodes), sorted; how many names carry
    none, and the first such name ("" if every name carries one)."""
    pattern = compile_pattern(None)
    found: set[str] = set()
    missing, example = 0, ""
    for stem in stems:
        specimen = specimen_of(stem, pattern)
        if specimen is None:
            missing += 1
            example = example or stem
        else:
            found.add(specimen)
    return sorted(found), missing, example


@dataclass(frozen=True)
class CheckedTiles:
    """What the dataset check found: the tiles and the specimens in their names."""

    index: TileIndex
    specimens: list[str]
    unnamed: int  # file names that carry no specimen
    unnamed_example: str


def check_tiles(path: str) -> CheckedTiles:
    """List the tiles in ``path`` (nothing decoded) and read their specimens."""
    index = list_tiles(path)
    return CheckedTiles(index, *specimen_names(index.stems))


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
    #: Whether to measure the training speed on this computer for the time estimate
    #: (tests turn it off, but for the test of the measurement).
    measure_speeds = True

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
        self._counts: list[int] = []  # images per class of the checked dataset
        self.checked: CheckedTiles | None = None  # the specimens in the tiles' names
        self._editable = True
        self._measuring: tuple | None = None  # the speed_key being measured
        self._meter = JobRunner(self)
        self._meter.succeeded.connect(self._on_measured)
        self._meter.failed.connect(self._on_measure_failed)
        self._checker = JobRunner(self)
        self._checker.succeeded.connect(self._on_checked)
        self._checker.failed.connect(self._on_check_failed)
        self._prober = JobRunner(self)
        self._prober.succeeded.connect(self._on_probed)
        self._prober.failed.connect(self._on_probe_failed)
        # The other mode: fine-tune the model in the viewer with the user's labels.
        self.finetune = FinetunePanel(settings, self)
        self._build()
        self._restore()
        self._watch()
        self._update_estimate()

    # --- layout -------------------------------------------------------------------------

    def _build(self) -> None:
        data_row = TileSourceRow("Training Tiles")
        self.data_edit = data_row.edit
        self.data_folder_button = data_row.folder_button
        self.data_zip_button = data_row.zip_button
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
        unseen_tip = (
            "Also measure the accuracy to expect on a new patient: the tiles' specimens, "
            "read from the file names (like CRC-Prim-HE-03 in the Kather 2016 tiles, or "
            "TCGA-XX-XXXX), are dealt into folds; one model is trained per fold and tested "
            "on that fold's specimens, which it never saw. Then the final model is trained "
            "as usual. K folds: K + 1 trainings in all, each about as long as one run."
        )
        self.unseen_check = QCheckBox("Also test on unseen specimens")
        self.unseen_check.setToolTip(unseen_tip)
        self.folds_spin = QSpinBox(minimum=MIN_FOLDS, maximum=MAX_FOLDS)
        self.folds_spin.setValue(DEFAULT_FOLDS)
        self.folds_spin.setToolTip(
            "How many folds the specimens are dealt into: each fold's model trains on the "
            "others' specimens. More folds train on more tiles each, but take longer "
            "(folds + 1 trainings)."
        )
        self.folds_spin.setEnabled(False)
        self.folds_label = QLabel("Folds:")
        self.folds_label.setBuddy(self.folds_spin)
        self.folds_label.setToolTip(self.folds_spin.toolTip())
        self.unseen_check.toggled.connect(self.folds_spin.setEnabled)
        unseen_row = QHBoxLayout()
        unseen_row.setContentsMargins(0, 0, 0, 0)
        unseen_row.addWidget(self.unseen_check)
        unseen_row.addSpacing(12)
        unseen_row.addWidget(self.folds_label)
        unseen_row.addWidget(self.folds_spin)
        unseen_row.addStretch(1)
        form.addRow(unseen_row)
        self.specimen_label = QLabel()
        self.specimen_label.setWordWrap(True)
        self.specimen_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.specimen_label.setVisible(False)
        form.addRow(self.specimen_label)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.estimate_label)

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

        self.train_radio = QRadioButton("Train a new model from tiles")
        self.train_radio.setChecked(True)
        self.finetune_radio = QRadioButton("Fine-tune the current model with my labels")
        self.finetune_radio.setEnabled(False)
        self.finetune_radio.setToolTip(NO_MODEL_TIP)
        mode_box = QGroupBox("What to train")
        mode_layout = QVBoxLayout(mode_box)
        mode_layout.addWidget(self.train_radio)
        mode_layout.addWidget(self.finetune_radio)
        self._tile_boxes = (data_box, settings_box, self.advanced_box)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (
            mode_box,
            data_box,
            self.finetune.sources_box,
            out_box,
            settings_box,
            self.finetune.settings_box,
            self.advanced_box,
        ):
            layout.addWidget(box)
        layout.addStretch(1)
        self._show_mode()

        self._check_timer = QTimer(self, singleShot=True, interval=_CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self.check_dataset)
        self._probe_timer = QTimer(self, singleShot=True, interval=_CHECK_DELAY_MS)
        self._probe_timer.timeout.connect(self.inspect_output)
        self._measure_timer = QTimer(self, singleShot=True, interval=_MEASURE_DELAY_MS)
        self._measure_timer.timeout.connect(self.measure)
        self.finetune_radio.toggled.connect(self._mode_changed)
        self.finetune.changed.connect(self._finetune_changed)
        self.data_edit.textChanged.connect(self._data_edited)
        self.out_edit.textChanged.connect(self._out_edited)
        self.preset_combo.currentTextChanged.connect(self.apply_preset)
        self.unseen_check.toggled.connect(self._show_specimens)
        self.folds_spin.valueChanged.connect(self._show_specimens)
        # Start depends on whether the specimens allow the folds.
        self.unseen_check.toggled.connect(self.changed)
        self.folds_spin.valueChanged.connect(self.changed)
        # Enter must never press a button here (the dialog's buttons start hours of work),
        # and the wheel must scroll the form, not change the field under the pointer.
        for button in self.findChildren(QPushButton):
            button.setAutoDefault(False)
        guard_wheel(self)

    # --- remembered choices -------------------------------------------------------------

    def _restore(self) -> None:
        name = config.training_value(self.settings, "preset")
        self.preset_combo.setCurrentText(name if name in PRESETS else "recipe")
        self.apply_preset(self.preset_combo.currentText())
        self._restore_fields()
        device = config.training_value(self.settings, "device")
        if device:
            if self.device_combo.findText(device) < 0:
                self.device_combo.addItem(device)
            self.device_combo.setCurrentText(device)
        if data := config.training_value(self.settings, "data"):
            self.data_edit.setText(data)
        last = config.training_value(self.settings, "last_run")
        # An interrupted run or cross-validation (the app was closed or crashed) is
        # offered again; a finished one has its (final model's) report.json.
        if (
            last
            and any((Path(last) / name).is_file() for name in (LAST_FILE, CROSSVAL_FILE))
            and not (Path(last) / reporting.REPORT_FILE).exists()
        ):
            self.out_edit.setText(last)
        else:
            self.new_output_folder()

    def _restore_fields(self) -> None:
        """The training fields as they were last left (over the preset's values)."""

        def saved(key: str) -> str:
            return config.training_value(self.settings, key)

        for combo, key in (
            (self.arch_combo, "arch"),
            (self.optimizer_combo, "optimizer"),
        ):
            if (text := saved(key)) and combo.findText(text) >= 0:
                combo.setCurrentText(text)
        spins: tuple[tuple[Any, str, type], ...] = (
            (self.epochs_spin, "epochs", int),
            (self.batch_spin, "batch_size", int),
            (self.image_spin, "image_size", int),
            (self.tile_spin, "patch_size", int),
            (self.limit_spin, "limit_per_class", int),
            (self.lr_spin, "lr", float),
            (self.weight_decay_spin, "weight_decay", float),
        )
        for spin, key, kind in spins:
            try:
                value = kind(saved(key))
            except ValueError:
                continue
            if spin.minimum() <= value <= spin.maximum():
                spin.setValue(value)
        try:
            mpp = float(saved("mpp"))
        except ValueError:
            mpp = None  # not given: assumed, as left
        if mpp is not None and self.mpp_spin.minimum() <= mpp <= self.mpp_spin.maximum():
            self.set_tile_scale(mpp)
        if augment := saved("augment"):
            self.augment_check.setChecked(augment == "true")
        self.advanced_box.setChecked(saved("advanced") == "true")
        try:
            folds = int(saved("folds"))
        except ValueError:
            folds = DEFAULT_FOLDS
        self.folds_spin.setValue(min(MAX_FOLDS, max(MIN_FOLDS, folds)))
        self.unseen_check.setChecked(saved("unseen_specimens") == "true")

    def _watch(self) -> None:
        # Connected after _restore: restoring writes nothing back.
        for signal in (
            self.preset_combo.currentTextChanged,
            self.arch_combo.currentTextChanged,
            self.epochs_spin.valueChanged,
            self.batch_spin.valueChanged,
            self.image_spin.valueChanged,
            self.lr_spin.valueChanged,
            self.device_combo.currentTextChanged,
            self.optimizer_combo.currentTextChanged,
            self.weight_decay_spin.valueChanged,
            self.augment_check.toggled,
            self.tile_spin.valueChanged,
            self.limit_spin.valueChanged,
            self.mpp_spin.valueChanged,
            self.advanced_box.toggled,
            self.unseen_check.toggled,
            self.folds_spin.valueChanged,
        ):
            signal.connect(self._edited)
        self.changed.connect(self._update_estimate)

    def _edited(self) -> None:
        self.remember_settings()
        self._update_estimate()
        if self.measure_speeds:
            self._measure_timer.start()

    def remember_settings(self) -> None:
        """Save the training choices (as they change), restored when the form is made."""

        def number(value: float) -> str:
            return repr(value)

        for key, value in (
            ("preset", self.preset_combo.currentText()),
            ("arch", self.arch_combo.currentText()),
            ("epochs", str(self.epochs_spin.value())),
            ("batch_size", str(self.batch_spin.value())),
            ("image_size", str(self.image_spin.value())),
            ("lr", number(self.lr_spin.value())),
            ("device", self.device),
            ("optimizer", self.optimizer_combo.currentText()),
            ("weight_decay", number(self.weight_decay_spin.value())),
            ("augment", "true" if self.augment_check.isChecked() else "false"),
            ("patch_size", str(self.tile_spin.value())),
            ("limit_per_class", str(self.limit_spin.value())),
            ("mpp", number(self.mpp_spin.value()) if self.mpp_given else ""),
            ("advanced", "true" if self.advanced_box.isChecked() else "false"),
            ("unseen_specimens", "true" if self.unseen_check.isChecked() else "false"),
            ("folds", str(self.folds_spin.value())),
        ):
            config.set_training_value(self.settings, key, value)

    # --- values -------------------------------------------------------------------------

    def runs_root(self) -> Path:
        root = config.training_value(self.settings, "runs_root")
        return Path(root) if root else default_runs_root()

    def new_output_folder(self) -> None:
        """Point the output at a fresh folder under the runs folder."""
        name = "finetune" if self.finetuning else self.preset_combo.currentText()
        self.out_edit.setText(str(new_run_folder(self.runs_root(), name)))

    def apply_preset(self, name: str) -> None:
        """Fill the training fields from the preset ``name`` ("recipe" or "best"); the
        tiles' scale and size belong to the data and are left alone."""
        self.apply_config(preset(name), keep_preset=True)

    def apply_config(self, cfg: TrainConfig, *, keep_preset: bool = False) -> None:
        """Show ``cfg``'s settings (data and output folder are left alone; with
        ``keep_preset``, the tiles' scale and size and the test on unseen specimens
        too: they belong to the data and the question asked, not to a preset)."""
        if not keep_preset:
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentText(cfg.preset)
            self.preset_combo.blockSignals(False)
            self.set_tile_scale(cfg.mpp)
            self.tile_spin.setValue(cfg.patch_size or 0)
            self.unseen_check.setChecked(is_crossval(cfg))
            if MIN_FOLDS <= cfg.folds <= MAX_FOLDS:
                self.folds_spin.setValue(cfg.folds)
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

    # --- the mode: a new model from tiles, or the current model fine-tuned --------------

    @property
    def finetuning(self) -> bool:
        """Whether the form describes fine-tuning the current model with the labels."""
        return self.finetune_radio.isChecked()

    def set_finetuning(self, on: bool) -> bool:
        """Choose the mode; fine-tuning only while a model file is loaded (False if not)."""
        if on and not self.finetune_radio.isEnabled():
            return False
        (self.finetune_radio if on else self.train_radio).setChecked(True)
        return True

    def set_current_model(self, path: str | None, info: ModelInfo | None) -> None:
        """The model in the viewer and its file (None: it has none), which fine-tuning
        starts from; without one, fine-tuning is not offered."""
        usable = bool(path) and info is not None
        self.finetune.set_model(path if usable else None, info if usable else None)
        self.finetune_radio.setToolTip(
            f"Fine-tunes the model in use ({Path(path).name}) with the patches labelled on slides"
            if usable and path
            else NO_MODEL_TIP
        )
        self.finetune_radio.setEnabled(usable and self._editable)
        if not usable and self.finetuning and self._editable:
            self.train_radio.setChecked(True)

    def _mode_changed(self) -> None:
        self._show_mode()
        if self.finetuning:
            self.finetune.refresh()  # labels may have been added since
        folder = self.out_folder
        if self.earlier_run is None and folder and not Path(folder).expanduser().exists():
            self.new_output_folder()  # its name says what it holds
        else:
            self.inspect_output()  # fine-tuning refuses a folder of unused patches
        self.changed.emit()
        if self.measure_speeds:
            self._measure_timer.start()

    def _show_mode(self) -> None:
        on = self.finetuning
        for box in self._tile_boxes:
            box.setVisible(not on)
        self.finetune.sources_box.setVisible(on)
        self.finetune.settings_box.setVisible(on)

    def _finetune_changed(self) -> None:
        self.changed.emit()
        if self.finetuning and self.measure_speeds:
            self._measure_timer.start()

    def can_start(self) -> bool:
        """Whether the form describes a new run that can start, the output folder and
        the checks under way aside."""
        if self.finetuning:
            return self.finetune.ready
        return self.dataset_ok and not self.specimen_problem

    @property
    def epochs(self) -> int:
        """The Epochs field: a run's length, and what a finished run is extended to."""
        return self.finetune.epochs if self.finetuning else self.epochs_spin.value()

    @property
    def unseen_specimens(self) -> bool:
        """Whether a new run is a cross-validation by specimen (the check box)."""
        return self.unseen_check.isChecked()

    @property
    def folds(self) -> int:
        return self.folds_spin.value()

    def can_resume(self) -> bool:
        """True when the folder's run can go on: interrupted, or finished and Epochs is
        set above its length (extending it; not offered for a cross-validation, whose
        every fold would have to be extended)."""
        run = self.earlier_run
        if run is None:
            return False
        return not run.finished or (not run.crossval and self.epochs > run.epochs)

    def config(self) -> TrainConfig:
        """The run the form describes; HistoViewerError for a setting that cannot work."""
        if self.finetuning:
            return self.finetune.config(self.out_folder)
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
        if self.unseen_check.isChecked():
            # fold 0: every fold in turn, then the final model (crossval.cross_validate).
            changes.update(split_by="specimen", folds=self.folds_spin.value(), fold=0)
        if self.augment_check.isChecked() != base.augments:
            # On: the "best" preset's augmentation; off: none at all.
            source = PRESETS["best"]() if self.augment_check.isChecked() else preset("recipe")
            for key in ("flips", "rot90", "scale_jitter", "stain_jitter", "color_jitter"):
                changes[key] = getattr(source, key)
        return preset(name, **changes)

    @property
    def device(self) -> str:
        return self.finetune.device if self.finetuning else self.device_combo.currentText()

    @property
    def out_folder(self) -> str:
        return self.out_edit.text().strip()

    def checking(self) -> bool:
        return (
            (self.finetuning and self.finetune.checking())
            or self._checker.is_busy()
            or self._check_timer.isActive()
            or self._prober.is_busy()
            or self._probe_timer.isActive()
        )

    def remember(self) -> None:
        """Save the choices for next time, with the tiles and the run's folder (when a
        run starts)."""
        self.remember_settings()
        if self.finetuning:
            self.finetune.remember()
        else:
            config.set_training_value(self.settings, "data", self.data_edit.text().strip())
        config.set_training_value(self.settings, "last_run", self.out_folder)

    def set_editable(self, on: bool) -> None:
        self._editable = on
        if not on:
            self.stop_measuring()
        self.finetune.set_editable(on)
        self.train_radio.setEnabled(on)
        usable = self.finetune.info is not None
        self.finetune_radio.setEnabled(on and usable)
        if on and not usable and self.finetuning:
            self.train_radio.setChecked(True)  # the model went while a run was going
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
            self.unseen_check,
        ):
            w.setEnabled(on)
        self.folds_spin.setEnabled(on and self.unseen_check.isChecked())

    # --- the dataset check --------------------------------------------------------------

    def _data_edited(self) -> None:
        self.dataset_ok = False
        self.index = None
        self.checked = None
        self._check_timer.start()
        self.changed.emit()

    def check_dataset(self) -> None:
        """List the dataset's class folders and files on a worker thread (no decoding)."""
        self._check_timer.stop()
        path = self.data_edit.text().strip()
        self.dataset_ok = False
        self.index = None
        self.checked = None
        self._show_specimens()
        if not path:
            self._checker.cancel()
            self._show_check("Choose the labelled tiles to train on.", error=False)
            self.changed.emit()
            return
        self._show_check(f"Checking {path}...", error=False)
        self._checker.start(lambda ctx: check_tiles(path), f"use {path} for training")
        self.changed.emit()

    def _on_checked(self, job_id: int, checked: CheckedTiles) -> None:
        index = checked.index
        self.index = index
        self.checked = checked
        self.dataset_ok = True
        counts = [int((index.labels == c).sum()) for c in range(len(index.class_folders))]
        self._counts = counts
        # Tiles that can be trained on: the ones to offer next time.
        config.set_training_value(self.settings, "data", self.data_edit.text().strip())
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
        self._show_specimens()
        self.changed.emit()
        if self.measure_speeds:
            self._measure_timer.start()

    def _on_check_failed(self, job_id: int, failure: JobFailure) -> None:
        self._show_check(sentence(failure.message), error=True)
        self._show_specimens()
        self.changed.emit()

    @property
    def specimen_problem(self) -> str:
        """Why the checked tiles cannot be tested on unseen specimens with the folds
        asked for ("" when they can, when that is not asked, or before the check)."""
        checked = self.checked
        if not self.unseen_check.isChecked() or checked is None:
            return ""
        if checked.unnamed:
            every = len(checked.index.entries)
            share = "these" if checked.unnamed == every else f"{checked.unnamed:,} of these"
            return (
                f"No specimen can be read from {share} file names (e.g. "
                f"'{checked.unnamed_example}'): testing on unseen specimens needs the "
                "specimen in every name, like CRC-Prim-HE-03 (Kather 2016) or TCGA-XX-XXXX."
            )
        names, folds = checked.specimens, self.folds_spin.value()
        if len(names) < 2:
            return (
                f"Every tile comes from one specimen ({names[0] if names else '-'}): "
                "holding specimens out needs tiles of at least two."
            )
        if len(names) < folds:
            return (
                f"{folds} folds need at least {folds} specimens, but these tiles come from "
                f"{len(names)}: set Folds to {len(names)} or fewer."
            )
        return ""

    def _show_specimens(self) -> None:
        label = self.specimen_label
        checked = self.checked
        on = self.unseen_check.isChecked()
        label.setVisible(on and checked is not None)
        if not on or checked is None:
            return
        problem = self.specimen_problem
        if problem:
            label.setText(problem)
            label.setStyleSheet(ERROR_STYLE)
            return
        names, folds = checked.specimens, self.folds_spin.value()
        low, high = len(names) // folds, math.ceil(len(names) / folds)
        each = str(low) if low == high else f"{low} or {high}"
        span = f"{names[0]} to {names[-1]}" if len(names) > 2 else " and ".join(names)
        label.setText(
            f"{len(names)} specimens in the file names ({span}): each of the {folds} folds "
            f"tests {each} of them."
        )
        label.setStyleSheet("")

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
            finetuning = self.finetuning

            def probe(ctx: JobContext) -> EarlierRun | None:
                run = inspect_run(folder)
                if run is None and finetuning:
                    inspect_finetune_folder(folder)
                return run

            self._prober.start(probe, f"read the run in {folder}")
        self.changed.emit()

    def _on_probed(self, job_id: int, run: EarlierRun | None) -> None:
        self.earlier_run = run
        self.run_problem = ""
        if run is not None and self.finetuning:
            try:
                self.finetune.show_run_config(TrainConfig.from_dict(run.config))
            except Exception as exc:  # a checkpoint from another version: show it anyway
                log.warning("settings of %s not shown: %s", run.folder, exc)
        elif run is not None:
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
        self.run_problem = f"{sentence(failure.message)}. Choose another folder."
        self._show_run()
        self.changed.emit()

    def _show_run(self) -> None:
        run = self.earlier_run
        if self.run_problem:
            self.run_label.setText(self.run_problem)
            self.run_label.setStyleSheet(ERROR_STYLE)
        elif run is not None and run.crossval:
            self.run_label.setText(self.crossval_text(run))
            self.run_label.setStyleSheet("font-weight: bold;")
        elif run is not None and run.finished:
            self.run_label.setText(
                f"A finished run of {_epochs(run.epochs)} is in this folder. To extend it, "
                f"set Epochs above {run.epochs} and press Extend; a new run needs another "
                "folder."
            )
            self.run_label.setStyleSheet("font-weight: bold;")
        elif run is not None and run.epoch == 0:
            self.run_label.setText(
                f"A run of {_epochs(run.epochs)} that was stopped before completing its first "
                "epoch is in this folder: Resume starts it again from the first epoch with "
                "its settings (a new run needs another folder)."
            )
            self.run_label.setStyleSheet("font-weight: bold;")
        elif run is not None:
            self.run_label.setText(
                f"An interrupted run was found at epoch {run.epoch} of {run.epochs}: "
                "Resume continues it (a new run needs another folder)."
            )
            self.run_label.setStyleSheet("font-weight: bold;")
        self.run_label.setVisible(bool(self.run_problem) or run is not None)

    @staticmethod
    def crossval_text(run: EarlierRun) -> str:
        """What the cross-validation ``run`` in the output folder is, and what Resume does."""
        folds = run.parts - 1
        if run.finished:
            return (
                f"A finished {folds}-fold cross-validation by specimen and its final model "
                "are in this folder; a new run needs another folder."
            )
        done = run.part_no - 1
        where = (
            f"in {run.part_name} after epoch {run.epoch} of {run.epochs}"
            if run.epoch
            else f"before {run.part_name} completed its first epoch"
        )
        return (
            f"An interrupted {folds}-fold cross-validation by specimen was found {where} "
            f"({done} of {run.parts} trainings finished): Resume continues it (a new run "
            "needs another folder)."
        )

    # --- file choosers (tests set the fields directly) ----------------------------------

    def _choose_out(self) -> None:
        start = self.out_folder or str(self.runs_root())
        if path := QFileDialog.getExistingDirectory(self, "Output Folder", start):
            self.out_edit.setText(path)

    # --- the time estimate --------------------------------------------------------------

    def speed_key(self, cfg: TrainConfig) -> tuple | None:
        """What the training speed depends on (None when the device does not exist)."""
        from histoviewer.device import resolve_device

        try:
            device = resolve_device(cfg.device)
        except HistoViewerError:
            return None
        return (cfg.arch, str(device), cfg.image_size, cfg.patch_size or 0, cfg.batch_size)

    def known_speed(self, cfg: TrainConfig) -> Speed | None:
        """The speed of ``cfg`` seen in a run or measured on this computer, if known."""
        key = self.speed_key(cfg)
        if key is None:
            return None
        if (speed := _SPEEDS.get(key)) is not None:
            return speed
        try:
            train, evaluated = map(
                float, config.training_value(self.settings, _speed_name(key)).split(",")
            )
        except ValueError:
            return None
        return Speed(train, evaluated, "run") if train > 0 and evaluated > 0 else None

    def record_speed(self, cfg: TrainConfig, train: float, evaluated: float | None) -> None:
        """Remember the speed a run of ``cfg`` trained (and validated) at on this computer."""
        key = self.speed_key(cfg)
        if key is None or not train or train <= 0:
            return
        evaluated = evaluated if evaluated and evaluated > 0 else train * EVAL_SPEEDUP
        _SPEEDS[key] = Speed(train, evaluated, "run")
        config.set_training_value(self.settings, _speed_name(key), f"{train!r},{evaluated!r}")
        self._update_estimate()

    def estimate(
        self,
        cfg: TrainConfig | None = None,
        epochs: int | None = None,
        *,
        from_part: int = 1,
        part_epochs_done: int = 0,
    ) -> Estimate | None:
        """About how long ``epochs`` epochs (default: all) of ``cfg`` (default: the form's
        run) take on the tiles checked; None before they are, or for settings that cannot
        work. A cross-validation counts every fold's training and the final model's
        (``from_part`` and ``part_epochs_done``: where a resumed one goes on)."""
        from histoviewer.device import resolve_device

        if not self.estimable():
            return None
        try:
            cfg = cfg or self.config()
            device = resolve_device(cfg.device)
        except HistoViewerError:
            return None
        speed = self.known_speed(cfg) or typical_speed(cfg.arch, device.type, cfg.image_size)
        epochs = cfg.epochs if epochs is None else epochs
        return Estimate.of(
            cfg,
            epochs,
            self.finetune.counts() if self.finetuning else self._counts,
            speed,
            device_place(device),
            from_part=from_part,
            part_epochs_done=part_epochs_done,
        )

    def resume_config(self) -> TrainConfig:
        """The run Resume continues: the earlier run's settings, on the form's device,
        extended to the form's Epochs when it was finished (HistoViewerError if none)."""
        run = self.earlier_run
        if run is None:
            raise HistoViewerError("there is no run to resume in the output folder")
        cfg = TrainConfig.from_dict(run.config).replace(out=run.folder, device=self.device)
        return cfg.replace(epochs=self.epochs) if run.finished else cfg

    def resume_estimate(self) -> Estimate | None:
        """About how long the epochs left to the run Resume continues take."""
        run = self.earlier_run
        if run is None:
            return None
        try:
            cfg = self.resume_config()
        except HistoViewerError:
            return None
        if run.crossval:
            return self.estimate(cfg, from_part=run.part_no, part_epochs_done=run.epoch)
        return self.estimate(cfg, max(0, cfg.epochs - run.epoch))

    def estimable(self) -> bool:
        """Whether the form knows enough of the tiles to estimate a run."""
        if self.finetuning:
            return self.finetune.ready
        return self.dataset_ok and bool(self._counts)

    def _update_estimate(self) -> None:
        finetuning = self.finetuning
        label = self.finetune.estimate_label if finetuning else self.estimate_label
        resuming = self.earlier_run is not None
        if resuming:
            est = self.resume_estimate() if self.can_resume() else None
        else:
            est = self.estimate()
        if est is None:
            if finetuning:
                waiting = "once slides with labels are ticked"
            else:
                waiting = "once the tiles are checked"
            label.setText(
                f"How long the run takes is estimated {waiting}." if not self.estimable() else ""
            )
            label.setVisible(bool(label.text()))
            return
        what = "Resuming: " + est.short[0].lower() + est.short[1:] if resuming else est.short
        text = f"{what}: {est.work} ({est.basis})."
        if finetuning and not resuming:
            patches = self.finetune.labelled_patches()
            text += f" First {patches:,} labelled patches are cut from the slides (quick)."
        if self._measuring is not None and est.speed.basis == "typical":
            text += " Measuring this computer's speed..."
        label.setText(text)
        label.setVisible(True)

    def measure(self) -> None:
        """Measure the training speed of the form's settings (a few batches on a worker
        thread) unless it is known; the estimate then uses it."""
        self._measure_timer.stop()
        if not (self.measure_speeds and self._editable and self.estimable()):
            return
        try:
            cfg = self.resume_config() if self.earlier_run is not None else self.config()
        except HistoViewerError:
            return
        key = self.speed_key(cfg)
        if key is None or key in _SPEEDS or self.known_speed(cfg) is not None:
            return
        if key == self._measuring and self._meter.is_busy():
            return
        self._measuring = key
        self._meter.start(lambda ctx: measure_speed(cfg, ctx), "measure the training speed")
        self._update_estimate()

    def measuring(self) -> bool:
        return self._meter.is_busy()

    def stop_measuring(self) -> None:
        """Stop a measurement and wait for it (at most one batch): a run must not share
        the device, or the random state, with it."""
        self._measure_timer.stop()
        self._meter.shutdown()
        self._measuring = None

    def _on_measured(self, job_id: int, speed: Speed) -> None:
        key, self._measuring = self._measuring, None
        if key is not None:
            _SPEEDS.setdefault(key, speed)
        self._update_estimate()

    def _on_measure_failed(self, job_id: int, failure: JobFailure) -> None:
        key, self._measuring = self._measuring, None
        log.info("the training speed could not be measured: %s", failure.message)
        if key is not None:
            _SPEEDS.setdefault(key, None)  # not again this session: typical speeds it is
        self._update_estimate()

    def shutdown(self) -> None:
        self.finetune.shutdown()
        self._check_timer.stop()
        self._probe_timer.stop()
        self._measure_timer.stop()
        self._checker.shutdown()
        self._prober.shutdown()
        self._meter.shutdown()
