"""Model > Train New Model: set up, run, watch, cancel, resume and use a training run.

:class:`TrainingDialog` is non-modal and lives as long as the main window: closing
or hiding it leaves a running job alone, and reopening it shows that job. The run
is :func:`histoviewer.training.fit` in a :class:`~histoviewer.gui.workers.JobRunner`
job; its :class:`~histoviewer.training.TrainEvent` reports arrive as queued
signals and drive the labels, the curves (:mod:`histoviewer.gui.curves`) and the
log. Cancel stops at the next batch and leaves ``last.pt`` with the last completed
epoch, which Resume continues, also after the app was closed or crashed. Errors
(a broken dataset, out of memory, a full disk) are shown in red in the dialog and
in its log; the trainer writes every file atomically, so none is left corrupt.

With "Also test on unseen specimens" the job is
:func:`~histoviewer.training.crossval.cross_validate`: one run per fold, then the final
model. Its events name the part under way ("fold 2 of 5"): the status line shows it,
the progress bar covers all the parts, and the curves start again with each part. The
finished cross-validation's final model is the one "Use this model" loads; the results
show its test figure beside the unseen-specimen figure.

"Fine-tune the current model with my labels" (the form's other mode, for the model the
main window hands over with :meth:`TrainingDialog.set_current_model`) runs
:func:`_finetune_job`: the ticked slides' labels are cut into ``OUT/data`` (status
"Cutting labelled patches 12 / 40"; cancelled or failed, nothing is left there), then
the model is fine-tuned on them. The results then compare the held-out labels (and
tiles) before and after; "Use this model" hands the fine-tuned model to the viewer,
which maps the open slide with it.

A run takes minutes on a GPU and hours on a CPU, so nothing starts one by accident:
no button is the dialog's default (Enter presses none of them), and Start and Resume
first ask, through :meth:`TrainingDialog.ask_start` (which tests replace), whether to
go on, with the form's estimate of how long it will take.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QCloseEvent, QFont, QKeyEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from histoviewer.errors import DeviceError, HistoViewerError
from histoviewer.gui.curves import TrainingCurves
from histoviewer.gui.finetune_form import (
    CutEvent,
    FinetuneRequest,
    cut_labelled_patches,
    forget_patches,
)
from histoviewer.gui.training_form import (
    ERROR_STYLE,
    Estimate,
    TrainingForm,
)
from histoviewer.gui.training_results import ResultsPanel
from histoviewer.gui.widgets import resize_within_screen, sentence
from histoviewer.gui.workers import JobContext, JobFailure, JobRunner
from histoviewer.model import ModelInfo, load_model
from histoviewer.tasks import Cancelled, elapsed_duration, format_duration
from histoviewer.training import BEST_FILE, FitResult, TrainConfig, TrainEvent, fit
from histoviewer.training.checkpoint import LAST_FILE
from histoviewer.training.config import finetune_config
from histoviewer.training.crossval import (
    CrossValResult,
    cross_validate,
    earlier_files,
    is_crossval,
    resume_any_config,
)
from histoviewer.training.finetune import comparison_lines

log = logging.getLogger(__name__)


def _train_job(config: TrainConfig, resume: bool, device: str):
    """The worker-thread function for a new run (``resume`` False) or a resumed one; it
    returns a FitResult, or a CrossValResult for a cross-validation by specimen."""

    def job(ctx: JobContext) -> FitResult | CrossValResult:
        try:
            # epochs: the run's own, or more to extend a finished run. A folder holding a
            # cross-validation resumes as one (its crossval.json's settings).
            cfg = (
                resume_any_config(config.out, device=device, epochs=config.epochs)
                if resume
                else config
            )
            if is_crossval(cfg):
                return cross_validate(cfg, ctx.progress, ctx.cancel, resume=resume)
            return fit(cfg, ctx.progress, ctx.cancel, resume=resume)
        except (MemoryError, RuntimeError) as exc:
            # fit turns CUDA's out-of-memory error into DeviceError; this catches the
            # CPU's RAM and other back ends, with advice that fits training.
            if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
                raise
            raise DeviceError(
                f"the computer ran out of memory training {config.arch} at {config.image_size} "
                f"px with batch size {config.batch_size}; use a smaller batch size or image "
                "size, fewer images per class, or close other programs"
            ) from None

    return job


def _finetune_job(request: FinetuneRequest, config: TrainConfig):
    """The worker-thread function of a new fine-tuning run: cut the labelled patches
    into ``config.data``, then fine-tune the model on them (a FitResult; a cancelled
    one, with nothing trained, when cancelled while cutting)."""

    def job(ctx: JobContext) -> FitResult:
        try:
            cut_labelled_patches(request, config.data, ctx.progress, ctx.cancel)
        except Cancelled:
            return nothing_trained(config)
        try:
            # The model's own settings, read from its file (it must still be there).
            cfg = finetune_config(
                request.model_path,
                config.preset,
                data=config.data,
                out=config.out,
                epochs=config.epochs,
                batch_size=config.batch_size,
                device=config.device,
            )
            result = _train_job(cfg, False, cfg.device)(ctx)
        except BaseException:
            forget_patches(config.out)
            raise
        if result.cancelled:
            forget_patches(config.out)  # kept only where Resume uses them
        return result

    return job


def nothing_trained(config: TrainConfig, out: str | None = None) -> FitResult:
    """The result of a run (in ``out``, default its config's) cancelled before it
    trained anything."""
    return FitResult(
        out or config.out,
        config,
        epochs_done=0,
        history=[],
        best_epoch=0,
        best_val_loss=float("inf"),
        split_counts={},
        cancelled=True,
    )


def training_outcome_text(result: FitResult) -> str:
    """The main window's status message when a run (or one part of a cross-validation
    by specimen) has ended: how, and its figures."""
    fold = result.config.fold
    if result.cancelled and fold:
        return f"Training stopped in fold {fold} of {result.config.folds}; it can be resumed."
    if result.cancelled and result.epochs_done == 0:
        return "Training cancelled before its first epoch ended."
    if result.cancelled:
        return f"Training stopped after epoch {result.epochs_done}; it can be resumed."
    accuracy = (result.test_metrics or {}).get("accuracy", 0.0)
    unseen = (result.report or {}).get("unseen_specimens") or {}
    figures = f"test accuracy {accuracy * 100:.1f} %"
    if "accuracy" in unseen:
        figures += (
            f" on specimens seen in training, {unseen['accuracy'] * 100:.1f} % on specimens "
            "it never saw"
        )
    elif result.config.split_by == "specimen":
        figures += " on specimens it never saw"
    return f"Training finished: {figures}. Model > Train New Model... shows the results."


class TrainingDialog(QDialog):
    """The training dialog of ``parent`` (the main window); ``settings`` remembers choices.

    Signals: ``use_model(Classifier, path)`` when "Use this model" loaded the best
    checkpoint; ``state_changed(str)`` a one-line state for the main window's status
    bar ("" when idle); ``run_finished(FitResult)`` (complete or cancelled; for a
    cross-validation the run that ended it: the final model's, or the part that was
    cancelled, whose ``epochs_done`` are that part's; the whole is in :attr:`crossval`)
    and ``run_failed(str)`` (the message shown).
    """

    use_model = Signal(object, str)
    state_changed = Signal(str)
    run_finished = Signal(object)
    run_failed = Signal(str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train New Model")
        self.setModal(False)
        self.settings = settings
        self.result: FitResult | None = None
        # The cross-validation under way or last ended (None for a single run); its final
        # model's run, or the part that was cancelled, is ``result``.
        self.crossval: CrossValResult | None = None
        self._out: str | None = None  # the folder of the run under way or last finished
        self._epochs = 0
        self._started = 0.0
        self._resumed = False  # whether the run under way continues an earlier one
        self._cutting = False  # whether a fine-tuning run is still cutting its patches
        self._config: TrainConfig | None = None  # the run under way or last started
        # The part of a cross-validation under way: its number (1 to parts), when it
        # started and at which epoch (for the time left in all); notes already logged.
        self._part_no = 0
        self._parts = 0
        self._part_started = 0.0
        self._part_first_epoch = 0
        self._notes_seen: set[str] = set()

        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_event)
        self.runner.succeeded.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)

        self.form = TrainingForm(settings)
        self.form.changed.connect(self._update_buttons)
        self._build()
        self._update_buttons()
        resize_within_screen(self, 1260, 800)

    # --- layout -------------------------------------------------------------------------

    def _build(self) -> None:
        form_scroll = QScrollArea()
        form_scroll.setWidget(self.form)
        form_scroll.setWidgetResizable(True)
        form_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form_scroll.setMinimumWidth(400)

        self.status_label = QLabel("Not started.")
        # A long status (a resumed cross-validation's) wraps rather than widening the
        # dialog past a small screen.
        self.status_label.setWordWrap(True)
        bold = QFont(self.status_label.font())
        bold.setBold(True)
        self.status_label.setFont(bold)
        self.speed_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.curves = TrainingCurves()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.results = ResultsPanel()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.log_view, "Log")
        self.tabs.addTab(self.results, "Test results")

        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.speed_label)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.curves)
        self.right_splitter.addWidget(self.tabs)
        self.right_splitter.setSizes([400, 260])
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(status_row)
        rl.addWidget(self.progress)
        rl.addWidget(self.right_splitter, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(form_scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([420, 820])

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setVisible(False)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start a new run (asks first, with how long it takes)")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(
            "Stop at the next batch; the last completed epoch is kept and can be resumed"
        )
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip(
            "Use the best model of the finished run in the viewer; the open slide is mapped with it"
        )
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("Hide this window; training goes on (Model > Train New Model)")
        self.start_button.clicked.connect(self.start)
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self.use_trained_model)
        self.hide_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.resume_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.hide_button)
        # No default button: a stray Enter (in a field, on a focused button) must not
        # start hours of training. A QDialog makes its push buttons auto-default, and
        # the first one in the focus chain then takes Enter when the dialog shows.
        for b in (
            self.start_button,
            self.resume_button,
            self.cancel_button,
            self.use_button,
            self.hide_button,
        ):
            b.setAutoDefault(False)
            b.setDefault(False)

        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.error_label)
        layout.addLayout(buttons)

    # --- state --------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.runner.is_busy()

    def _update_buttons(self) -> None:
        running = self.is_running()
        form = self.form
        free_folder = form.earlier_run is None and not form.run_problem
        self.start_button.setEnabled(
            not running and form.can_start() and free_folder and not form.checking()
        )
        self.resume_button.setEnabled(not running and form.can_resume())
        run = form.earlier_run
        # enabled once Epochs is above its length (never for a cross-validation)
        extend = run is not None and run.finished and not run.crossval
        self.resume_button.setText(f"Extend to {form.epochs} Epochs" if extend else "Resume")
        self.cancel_button.setEnabled(running)
        finished = self.result is not None and not self.result.cancelled
        self.use_button.setEnabled(not running and finished)
        form.set_editable(not running)

    def show_error(self, text: str) -> None:
        """Show ``text`` in the dialog's red message area and in the log."""
        text = sentence(text)
        self.error_label.setText(text)
        self.error_label.setVisible(True)
        self.log(f"Error: {text}")

    def _clear_error(self) -> None:
        self.error_label.clear()
        self.error_label.setVisible(False)

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def log_text(self) -> str:
        return self.log_view.toPlainText()

    # --- running ------------------------------------------------------------------------

    def start(self) -> int | None:
        """Start a new run with the form's settings; returns the job id (None if refused)."""
        if self.is_running() or not self.start_button.isEnabled():
            return None
        try:
            cfg = self.form.config()
            request = self.form.finetune.request() if self.form.finetuning else None
        except HistoViewerError as exc:
            self.show_error(str(exc))
            return None
        if earlier_files(cfg.out):
            # The folder was free when it was checked; a run (or a cross-validation, with
            # its fold folders) has been written there since. (fit() and cross_validate()
            # would refuse it too, but here the form can offer Resume at once.)
            self.show_error(f"{cfg.out} now holds a training run; choose another folder")
            self.form.inspect_output()
            return None
        estimate = self.form.estimate(cfg)
        if request is not None:
            question = self.finetune_question(cfg, request, estimate)
        else:
            question = self.start_question(cfg, estimate, resume=False)
        if not self.ask_start(question):
            return None
        self.form.remember()
        return self._launch(cfg, resume=False, finetune=request)

    def resume(self) -> int | None:
        """Continue the interrupted run in the output folder from its last completed epoch,
        or extend the finished one there to the form's Epochs."""
        run = self.form.earlier_run
        if self.is_running() or run is None or not self.form.can_resume():
            return None
        try:
            cfg = self.form.resume_config()
        except HistoViewerError as exc:
            self.show_error(f"cannot resume the run in {run.folder}: {exc}")
            return None
        question = self.start_question(cfg, self.form.resume_estimate(), resume=True)
        if not self.ask_start(question):
            return None
        self.form.remember()
        return self._launch(cfg, resume=True)

    def start_question(self, cfg: TrainConfig, estimate: Estimate | None, *, resume: bool) -> str:
        """What Start (``resume`` False) or Resume asks before a run: what will be trained,
        where, and about how long it takes."""
        run = self.form.earlier_run
        if is_crossval(cfg):
            return self.crossval_question(cfg, estimate, resume=resume)
        if resume and run is not None:
            left = cfg.epochs - run.epoch
            verb = "Extend" if run.finished else "Resume"
            what = (
                f"{verb} the run in {run.folder}: {left} more epoch{'s' * (left != 1)} of "
                f"{cfg.epochs} ({cfg.arch}, {cfg.image_size} px, batch {cfg.batch_size})"
            )
        else:
            what = (
                f"Train {cfg.arch} for {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} "
                f"({cfg.image_size} px, batch {cfg.batch_size})"
            )
        if estimate is None:
            where = f"on {cfg.device}"
            time_text = "How long it will take cannot be estimated yet."
        else:
            where = f"on {estimate.where}, {estimate.train_images:,} training tiles an epoch"
            time_text = (
                f"{estimate.short}, plus reading the tiles ({estimate.basis}). The first "
                "epoch shows the real speed."
            )
        return (
            f"{what} {where}?\n\n{time_text}\n\nThe window can be hidden meanwhile. Cancel "
            "stops after the current batch and keeps the last completed epoch."
        )

    def finetune_question(
        self, cfg: TrainConfig, request: FinetuneRequest, estimate: Estimate | None
    ) -> str:
        """What Start asks before fine-tuning the current model with the labels."""
        form = self.form.finetune
        patches = form.labelled_patches()
        slides = len(request.slides)
        what = (
            f"Fine-tune {request.info.name} with {patches:,} labelled patches of {slides} "
            f"slide{'s' * (slides != 1)}"
        )
        if request.tiles:
            what += f" and {sum(form.mixed_counts().values()):,} tiles of {request.tiles}"
        what += (
            f", {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} ({cfg.arch}, {cfg.image_size} px, "
            f"batch {cfg.batch_size})"
        )
        if estimate is None:
            where = f" on {cfg.device}"
            time_text = "How long it will take cannot be estimated yet."
        else:
            where = f" on {estimate.where}"
            time_text = (
                f"{estimate.short}, plus cutting the patches and reading them "
                f"({estimate.basis}). The first epoch shows the real speed."
            )
        return (
            f"{what}{where}?\n\n{time_text}\n\nThe patches are cut into {cfg.data}; a part of "
            "every slide's labels is held out and scored before and after fine-tuning. The "
            "window can be hidden meanwhile. Cancel stops after the current batch and keeps "
            "the last completed epoch."
        )

    def crossval_question(
        self, cfg: TrainConfig, estimate: Estimate | None, *, resume: bool
    ) -> str:
        """What Start or Resume asks before a cross-validation by specimen: K + 1
        trainings (or those left), where, and about how long all of them take."""
        folds, parts = cfg.folds, cfg.folds + 1
        each = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)} each"
        model = f"{cfg.arch}, {cfg.image_size} px, batch {cfg.batch_size}"
        run = self.form.earlier_run
        if resume and run is not None and run.crossval:
            left = parts - run.part_no + 1
            head = (
                f"Resume the {folds}-fold cross-validation by specimen in {run.folder} at "
                f"{run.part_name}"
            )
            tail = f"{left} of {parts} trainings left, {each} ({model})"
        else:
            head = (
                f"Train {cfg.arch} {parts} times, {each} ({cfg.image_size} px, batch "
                f"{cfg.batch_size})"
            )
            tail = (
                f"once for each of {folds} folds, tested on specimens it never saw, then the "
                "final model"
            )
        if estimate is None:
            where = f" on {cfg.device}"
            time_text = "How long it will take cannot be estimated yet."
        else:
            where = (
                f" on {estimate.where} (about {estimate.fold_train_images:,} training tiles "
                f"an epoch in a fold, {estimate.train_images:,} in the final model)"
            )
            trainings = (
                f"all {estimate.trainings} trainings"
                if estimate.trainings > 1
                else "the final model"
            )
            time_text = (
                f"{estimate.short} for {trainings}, plus reading the tiles ({estimate.basis}). "
                "The first epoch shows the real speed."
            )
        return (
            f"{head}{where}: {tail}?\n\n{time_text}\n\nThe window can be hidden meanwhile. "
            "Cancel stops after the current batch and keeps the last completed epoch; Resume "
            "goes on from there, with the folds already finished kept."
        )

    def ask_start(self, text: str) -> bool:
        """Ask whether to start the run ``text`` describes (Start / Cancel, Cancel the
        default). Tests replace this method: a modal box would block them."""
        box = QMessageBox(QMessageBox.Icon.Question, "Start Training?", text, parent=self)
        start = box.addButton("Start", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        box.exec()
        return box.clickedButton() is start

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Enter and Return press no button (QDialog would press the default one).
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()
            return
        super().keyPressEvent(event)

    def _launch(
        self, cfg: TrainConfig, *, resume: bool, finetune: FinetuneRequest | None = None
    ) -> int:
        # A speed measurement must not share the device (or the random state) with the run.
        self.form.stop_measuring()
        self._clear_error()
        self.result = None
        self.crossval = None
        self.results.clear()
        self._out = cfg.out
        self._epochs = cfg.epochs
        self._config = cfg
        self._resumed = resume
        self._started = time.monotonic()
        self._part_no = self._parts = 0
        self._notes_seen = set()
        self.curves.clear(cfg.epochs)
        self.progress.setValue(0)
        self.speed_label.clear()
        verb = "Resuming" if resume else "Starting"
        scale = f"{cfg.tile_mpp:g} µm/px" + (" (assumed)" if cfg.mpp_assumed else "")
        if is_crossval(cfg):
            verb += f" a {cfg.folds}-fold cross-validation by specimen (then the final model):"
        if cfg.init_from:
            verb += f" fine-tuning {Path(cfg.init_from).name}:"
        self.log(
            f"{verb} {cfg.arch} ({cfg.preset}) for {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"{cfg.image_size} px, lr {cfg.lr:g} on {self.form.device}, tiles at {scale}; "
            f"output {cfg.out}"
        )
        self.tabs.setCurrentWidget(self.log_view)
        self._cutting = finetune is not None
        if finetune is not None:
            self.status_label.setText("Cutting the labelled patches...")
            self.log(
                f"Cutting the labels of {len(finetune.slides)} slide(s) into {cfg.data}"
                + (f", mixing in tiles of {finetune.tiles}." if finetune.tiles else ".")
            )
            job = self.runner.start(_finetune_job(finetune, cfg), "fine-tune the model")
        else:
            self.status_label.setText("Reading the tiles...")
            job = self.runner.start(_train_job(cfg, resume, self.form.device), "train the model")
        self._update_buttons()
        self._emit_state(f"Training: starting ({Path(cfg.out).name})")
        return job

    def cancel(self) -> None:
        """Stop at the next batch; ``last.pt`` keeps the last completed epoch."""
        if self.is_running():
            self.status_label.setText("Cancelling after this batch...")
            self.log("Cancel requested.")
            self.runner.request_stop()
            self.cancel_button.setEnabled(False)

    def _emit_state(self, text: str) -> None:
        self.state_changed.emit(text)

    def _on_event(self, job_id: int, e: TrainEvent | CutEvent) -> None:
        if isinstance(e, CutEvent):
            self._on_cut_event(e)
            return
        self._cutting = False
        kind = e.kind
        if e.parts and e.part_no != self._part_no:
            self._begin_part(e)
        # "Fold 2 of 5 · " before what a part of a cross-validation reports; "" for a run.
        part = f"{e.part[:1].upper()}{e.part[1:]} · " if e.part else ""
        if kind == "load":
            self.status_label.setText(f"Reading tiles: {e.batch:,} / {e.batches:,}")
            if e.batches:
                # After cutting labelled patches (0-30), reading them takes 30-50.
                low = 30 if self._config is not None and self._config.init_from else 0
                self.progress.setValue(int(low + (50 - low) * e.batch / e.batches))
        elif kind == "note":
            # Every part of a cross-validation repeats the notes about the tiles: once is
            # enough. Those about its own test specimens differ from part to part.
            if e.message not in self._notes_seen:
                self._notes_seen.add(e.message)
                self.log(f"Note ({e.part}): {e.message}" if e.part else f"Note: {e.message}")
        elif kind == "start":
            self._epochs = e.epochs
            self.curves.set_history(e.history, e.epochs)
            self.log(f"{part}Training started ({e.message}).")
            if e.epoch:
                self.log(f"{part}Continuing after epoch {e.epoch} of {e.epochs}.")
            self._part_started = time.monotonic()
            self._part_first_epoch = e.epoch
            self._set_progress(e.epoch, 0, 1)
        elif kind == "batch":
            phase = "training" if e.phase == "train" else "validating"
            self.status_label.setText(
                f"{part}Epoch {e.epoch} / {e.epochs} · {phase} batch {e.batch} / {e.batches}"
            )
            if e.phase == "train":
                self.curves.add_batch_loss(e.epoch, e.batch, e.batches, e.loss)
                self._set_progress(e.epoch - 1, e.batch, e.batches)
                self._show_speed(e.images_per_s, e.eta_s)
            where = f"{e.part}, " if e.part else ""
            self._emit_state(f"Training: {where}epoch {e.epoch}/{e.epochs}")
        elif kind == "epoch":
            self.curves.set_history(e.history, e.epochs)
            h = e.history[-1] if e.history else {}
            if self._config is not None and e.images_per_s:
                # The real speed: the next estimate of these settings uses it.
                self.form.record_speed(self._config, e.images_per_s, h.get("val_images_per_s"))
            self.log(
                f"{part}Epoch {e.epoch}/{e.epochs}: train loss "
                f"{h.get('train_loss', e.loss):.4f} acc {h.get('train_acc', e.acc):.3f}, "
                f"validation loss {h.get('val_loss', float('nan')):.4f} acc "
                f"{h.get('val_acc', float('nan')):.3f}, {e.images_per_s or 0:.0f} images/s"
            )
            self._set_progress(e.epoch, 0, 1)
            self._show_speed(e.images_per_s, e.eta_s)
        elif kind == "test":
            fold = 0 < e.part_no < e.parts  # a fold's model (the final model is the last part)
            tested = "on the specimens it never saw" if fold else "the best model"
            self.status_label.setText(f"{part}Testing {tested}...")
            what = "accuracy on its unseen specimens" if fold else "accuracy"
            self.log(f"{part}Test {what} {e.acc:.3f} ({e.images_per_s or 0:.0f} images/s).")
        elif kind == "done":
            self.status_label.setText(f"{part}Finished." if e.part_no < e.parts else "Finished.")
        elif kind == "cancelled":
            self.log(f"{part}Cancelled: {e.message}.")

    def _on_cut_event(self, e: CutEvent) -> None:
        """Progress of cutting the labelled patches (the first 30 / 1000 of the bar)."""
        if e.kind == "cut":
            self.status_label.setText(f"Cutting labelled patches {e.done:,} / {e.total:,}")
            if e.total:
                self.progress.setValue(int(30 * e.done / e.total))
            self._emit_state("Fine-tuning: cutting the labelled patches")
        elif e.kind == "mix":
            self.status_label.setText("Mixing in tiles...")
            self.log(f"Mixing in tiles of {e.message}.")
        elif e.kind == "done":
            self._cutting = False
            self.log(f"Cut {e.message}.")

    def _begin_part(self, e: TrainEvent) -> None:
        """A new part of a cross-validation: its curves start empty."""
        self._part_no, self._parts = e.part_no, e.parts
        self.curves.clear(e.epochs)
        self.log(f"{e.part[:1].upper()}{e.part[1:]} ({e.part_no} of {e.parts} trainings).")

    def _set_progress(self, epochs_done: int, batch: int, batches: int) -> None:
        if self._epochs:
            done = min(1.0, (epochs_done + batch / max(1, batches)) / self._epochs)
            if self._parts:
                # Every part of a cross-validation gets an equal share of the bar.
                done = (self._part_no - 1 + done) / self._parts
            self.progress.setValue(int(50 + 950 * min(1.0, done)))

    def _show_speed(self, images_per_s: float | None, eta_s: float | None) -> None:
        parts = []
        if images_per_s:
            parts.append(f"{images_per_s:,.0f} images/s")
        if self._parts and eta_s is not None:
            parts.append(f"{format_duration(eta_s)} left in this part")
            parts.append(f"about {format_duration(self.time_left_in_all(eta_s))} in all")
        else:
            parts.append(f"{format_duration(eta_s)} left")
        self.speed_label.setText(" · ".join(parts))

    def time_left_in_all(self, eta_s: float) -> float:
        """A cross-validation's time left: the part under way's ``eta_s``, and each part
        after it as long as this one is taking in all (the final model's a little
        longer: it trains on somewhat more tiles)."""
        elapsed = time.monotonic() - self._part_started
        epochs_left = max(1, self._epochs - self._part_first_epoch)
        whole_part = (elapsed + eta_s) * self._epochs / epochs_left
        return eta_s + max(0, self._parts - self._part_no) * whole_part

    def cancelled_text(self, result: FitResult) -> str:
        """What a cancelled run left, and what Start or Resume does next."""
        done, epochs = result.epochs_done, result.config.epochs
        if self._cutting:
            return (
                "Cancelled while cutting the labelled patches: nothing was trained or saved. "
                "Start begins afresh."
            )
        if done:
            return f"Cancelled after epoch {done} of {epochs}. Resume continues from there."
        if (Path(result.out) / LAST_FILE).is_file():
            return (
                f"Cancelled before the first of {epochs} epochs was completed. Resume starts "
                "the run again from its first epoch (a new run needs another folder)."
            )
        return (
            "Cancelled while reading the tiles: nothing was trained or saved. Start begins afresh."
        )

    def crossval_cancelled_text(self, crossval: CrossValResult) -> str:
        """What a cancelled cross-validation left, and what Resume continues."""
        cfg = crossval.config
        parts = cfg.folds + 1
        stopped = crossval.final or (crossval.folds[-1] if crossval.folds else None)
        if stopped is None:
            return (
                "Cancelled while reading the tiles: nothing was trained or saved. Start "
                "begins afresh."
            )
        part = "the final model" if crossval.final is not None else f"fold {len(crossval.folds)}"
        finished = len(crossval.folds) - (crossval.final is None)
        when = (
            f"after epoch {stopped.epochs_done} of {cfg.epochs}"
            if stopped.epochs_done
            else "before its first epoch was completed"
        )
        return (
            f"Cancelled in {part} of the {cfg.folds}-fold cross-validation {when} ({finished} "
            f"of {parts} trainings finished). Resume continues from there."
        )

    def finished_text(self, result: FitResult | CrossValResult) -> str:
        """'Finished in 2 h 10 min' (all the run's parts), and the test figures; for a
        cross-validation both figures: the final model's test and the unseen specimens'."""
        crossval = result if isinstance(result, CrossValResult) else None
        run = self.ended_part(crossval) if crossval is not None else result
        part = time.monotonic() - self._started
        runs = [run] if crossval is None else [*crossval.folds, *filter(None, [crossval.final])]
        # Each run counts its own earlier sessions (resumed ones) and reading the tiles;
        # the folds of a cross-validation read them once for all.
        total = max(sum(r.elapsed_s for r in runs), part)
        elapsed = elapsed_duration(total)
        if self._resumed and total - part >= 1:
            elapsed += f" in all ({elapsed_duration(part)} since resuming)"
        metrics = run.test_metrics or {}
        compared = ((run.report or {}).get("fine_tune") or {}).get("compared") or {}
        if "labels" in compared:
            c = compared["labels"]
            return (
                f"Finished in {elapsed}: held-out labels {c['before_accuracy'] * 100:.1f} % "
                f"before fine-tuning, {c['after_accuracy'] * 100:.1f} % after."
            )
        text = f"Finished in {elapsed}: test accuracy {metrics.get('accuracy', 0) * 100:.1f} %"
        if crossval is not None and crossval.summary:
            unseen = crossval.summary["accuracy"] * 100
            return f"{text} on specimens seen in training, {unseen:.1f} % on unseen ones."
        return f"{text}, macro F1 {metrics.get('macro_f1', 0):.3f}."

    def _on_finished(self, job_id: int, outcome: FitResult | CrossValResult) -> None:
        if isinstance(outcome, CrossValResult):
            self.crossval = outcome
            result = self.ended_part(outcome)
        else:
            result = outcome
        self.result = result
        self.curves.set_history(result.history, result.config.epochs)
        if result.cancelled:
            text = (
                self.crossval_cancelled_text(outcome)
                if isinstance(outcome, CrossValResult)
                else self.cancelled_text(result)
            )
            self.status_label.setText(text)
            self.speed_label.clear()
        else:
            metrics = result.test_metrics or {}
            colors = result.dataset.class_colors if result.dataset is not None else None
            report = result.report or {}
            self.results.set_results(
                metrics,
                colors,
                best_epoch=result.best_epoch,
                scale=result.scale,
                notes=result.notes,
                unseen=report.get("unseen_specimens"),
                test_split=report.get("test_split") or "tile",
                test_specimens=(report.get("specimens") or {}).get("test"),
                fine_tune=report.get("fine_tune"),
            )
            self.tabs.setCurrentWidget(self.results)
            # The tables need the room more than the finished curves do (a
            # cross-validation's two figures and per-fold table, or a fine-tuning's
            # before / after table, the more).
            total = sum(self.right_splitter.sizes())
            wide = self.crossval is not None or report.get("fine_tune") is not None
            room = max(330, total - 230) if wide else 330
            self.right_splitter.setSizes([total - room, room])
            self.progress.setValue(1000)
            self.status_label.setText(self.finished_text(outcome))
            self.speed_label.setText(f"best model: epoch {result.best_epoch}")
            if self.crossval is not None:
                self.log(f"Cross-validation by specimen: {self.crossval.crossval_path}.")
            for line in comparison_lines((report.get("fine_tune") or {}).get("compared") or {}):
                self.log(sentence(line) + ".")
            self.log(f"Finished. Best model: {result.best_path}; report in {result.out}.")
        self._emit_state("")
        self._after_run()
        self.run_finished.emit(result)

    @staticmethod
    def ended_part(crossval: CrossValResult) -> FitResult:
        """The run that ended ``crossval``: its final model's, else the last fold's, else
        (stopped while reading the tiles) an empty cancelled one."""
        if crossval.final is not None:
            return crossval.final
        if crossval.folds:
            return crossval.folds[-1]
        return nothing_trained(crossval.config, crossval.out)

    def _on_failed(self, job_id: int, failure: JobFailure) -> None:
        self.status_label.setText("Stopped by an error.")
        self.speed_label.clear()
        self.show_error(failure.message)
        self._emit_state("")
        self._after_run()
        self.run_failed.emit(failure.message)

    def _after_run(self) -> None:
        # A finished run's folder is taken: point the form at a new one. Otherwise look
        # again at the folder, so that a run that was stopped can be resumed.
        if self.result is not None and not self.result.cancelled:
            self.form.new_output_folder()
        else:
            self.form.inspect_output()
        self._update_buttons()

    # --- the model to fine-tune ---------------------------------------------------------

    def set_current_model(self, path: str | None, info: ModelInfo | None) -> None:
        """The model in the viewer (``path``: its file, None when it has none), which
        "Fine-tune the current model with my labels" starts from."""
        self.form.set_current_model(path, info)
        self._update_buttons()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.form.finetuning and not self.is_running():
            self.form.finetune.refresh()  # slides may have been labelled meanwhile

    # --- the result ---------------------------------------------------------------------

    def use_trained_model(self) -> bool:
        """Load the finished run's best checkpoint and hand it to the viewer."""
        if self.result is None or self.result.cancelled:
            return False
        path = Path(self.result.out) / BEST_FILE
        try:
            classifier = load_model(path, device="cpu")
        except HistoViewerError as exc:
            self.show_error(str(exc))
            return False
        self.log(f"Using {path} in the viewer.")
        self.use_model.emit(classifier, str(path))
        return True

    # --- closing ------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing only hides: the run goes on and Model > Train New Model shows it again.
        event.accept()

    def shutdown(self) -> None:
        """Cancel a running job and wait for it (the checkpoint of its last epoch stays)."""
        if self.is_running():
            self.log("Stopping: the application is closing.")
        self.runner.shutdown()
        self.form.shutdown()
