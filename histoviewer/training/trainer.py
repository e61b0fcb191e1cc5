"""fit(): load the tiles, split, train, checkpoint, resume, test and report.

Files written to ``config.out`` (all atomically):

- ``split.csv``: the split used (class, file, split);
- ``last.pt``: resumable checkpoint after every completed epoch (and before the first);
- ``best.safetensors``: the model with the lowest validation loss so far, in the
  release format :func:`histoviewer.model.load_model` reads, rewritten at the end with
  its test metrics;
- ``report.json``, ``curves.png``, ``confusion_matrix.png`` once training is done.

A new run never writes over an earlier one: a folder holding one is refused unless the
caller asks to overwrite it, and then its files are removed before the first new one
is written. Whether the disk has room for the run's files is checked before any tile
is read.

Progress goes to a callback as :class:`TrainEvent` objects (from the calling thread),
and to ``logging``. A :class:`~histoviewer.tasks.CancelToken` stops the run at the
next batch; ``last.pt`` then holds the last completed epoch and ``fit(..., resume=True)``
continues from it, ending exactly where an uninterrupted run would.

Under ``torchrun`` (see :mod:`histoviewer.distributed`) every process runs ``fit`` with
the same config: each trains on its share of every batch (engine.py), all get the same
epoch figures, and only rank 0 evaluates, writes files and reports progress; the
others receive its validation and test results. A cancel token is honoured at epoch
boundaries there (all processes stop together, after saving the epoch). On resume every
process reads ``last.pt``, so ``out`` must be on a file system all nodes share.
"""

from __future__ import annotations

import logging
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histoviewer import distributed
from histoviewer.distributed import DistContext
from histoviewer.errors import DeviceError, HistoViewerError
from histoviewer.fileio import (
    atomic_write_text,
    ensure_writable_dir,
)
from histoviewer.model import Classifier, ModelInfo, build_network, load_model, save_model
from histoviewer.slide.mpp import DEFAULT_MPP
from histoviewer.tasks import Cancelled, CancelToken
from histoviewer.training import report as reporting
from histoviewer.training import run_folder
from histoviewer.training.card import MODEL_CARD_FILE, write_model_card
from histoviewer.training.checkpoint import (
    LAST_FILE,
    load_last,
    rng_state,
    save_last,
    set_rng_state,
)
from histoviewer.training.config import RUNTIME_FIELDS, TrainConfig
from histoviewer.training.dataset import TileDataset, load_tiles
from histoviewer.training.engine import BatchStats, Engine, EpochStats, EvalResult
from histoviewer.training.evaluation import classification_metrics
from histoviewer.training.finetune import (
    align_to_model,
    comparison,
    comparison_lines,
    scores_by_group,
    untrained_classes,
)
from histoviewer.training.run_folder import (
    BEST_FILE,
    CROSSVAL_CONFUSION_FILE,
    CROSSVAL_FILE,
    SPLIT_FILE,
)
from histoviewer.training.split import Split, split_csv_fingerprint, split_csv_text, split_for

log = logging.getLogger(__name__)


@dataclass
class TrainEvent:
    """One progress report. ``kind``: "load" (decoding tiles: ``batch`` of ``batches``
    images), "note" (``message``: something about the data or scale the user should
    read, also in the report's notes), "start", "batch" (``phase`` "train" or "val"),
    "epoch" (an epoch finished; ``history`` has every epoch so far), "test", "done",
    "cancelled". ``epoch`` counts from 1; ``eta_s`` is the estimated time left for the
    whole run. In a cross-validation (:mod:`histoviewer.training.crossval`) ``part``
    names the run under way ("fold 2 of 5", "final model"), the ``part_no``-th of
    ``parts``; a single run leaves them empty."""

    kind: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    phase: str = ""
    loss: float | None = None
    acc: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    lr: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    part: str = ""
    part_no: int = 0
    parts: int = 0


ProgressCallback = Callable[[TrainEvent], None]


@dataclass
class FitResult:
    """What a run produced. ``cancelled`` runs have no test metrics and no report.

    ``scale``: the tiles' and the model's scale (see :func:`scale_summary`); ``notes``:
    sentences the user should read (an assumed scale, resized tiles); ``extensions``:
    each time the run was extended to more epochs, ``{"from_epochs", "to_epochs",
    "after_epoch"}`` (also in last.pt and report.json as ``extended``); ``elapsed_s``:
    the run's wall-clock seconds in all its parts, those before the checkpoint it
    resumed from (``elapsed_s`` in last.pt) included, reading the tiles and testing too.
    """

    out: Path
    config: TrainConfig
    epochs_done: int
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    split_counts: dict[str, int]
    cancelled: bool = False
    test_metrics: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    dataset: TileDataset | None = None
    scale: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extensions: list[dict[str, int]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def best_path(self) -> Path:
        return self.out / BEST_FILE

    @property
    def last_path(self) -> Path:
        return self.out / LAST_FILE


def scale_summary(config: TrainConfig, dataset: TileDataset) -> dict[str, Any]:
    """The tiles' scale and the model's: the patch size and microns per pixel it records.

    A tile resized from S to P pixels keeps its microns, so the model's microns per pixel
    are the tiles' times S / P: mapping then reads patches of the same tissue area.
    """
    mpp = config.tile_mpp * dataset.scale_factor
    return {
        "tile_mpp": config.tile_mpp,
        "mpp_assumed": config.mpp_assumed,
        "tile_size": list(dataset.tile_size),
        "tile_sizes": dict(dataset.size_counts),
        "patch_size": dataset.patch_size,
        "mpp": mpp,
        "patch_microns": dataset.patch_size * mpp,
        "resized": len(dataset.resized),
        "resized_examples": dataset.resized[:10],
    }


def scale_notes(config: TrainConfig, dataset: TileDataset) -> list[str]:
    """What the user must know about the scale of a run, as sentences (may be empty)."""
    notes = []
    if config.mpp_assumed:
        notes.append(
            f"The tiles' scale was not given, so {DEFAULT_MPP:g} µm/px (the Kather 2016 "
            "scale) was assumed: if they were scanned at another scale, maps made with this "
            "model will be wrong in scale. Give their real scale (--mpp; in the app, Tile "
            "scale) and train again."
        )
    notes += [note[0].upper() + note[1:] + "." for note in dataset.notes]
    if dataset.scale_factor != 1.0:
        scale = scale_summary(config, dataset)
        notes.append(
            f"The model's patches are {scale['patch_size']} px at {scale['mpp']:.4g} µm/px: "
            f"the {scale['patch_microns']:.4g} µm of tissue of the "
            f"{dataset.tile_size[0]} x {dataset.tile_size[1]} px tiles at "
            f"{config.tile_mpp:g} µm/px."
        )
    return notes


def specimen_notes(
    split: Split,
    labels: np.ndarray,
    class_names: list[str],
    crossval: dict[str, Any] | None = None,
) -> list[str]:
    """What the user must know about the specimens behind a run's test figure;
    ``crossval``: the unseen-specimen figures reported beside it, if any."""
    summary = split.specimen_summary()
    if summary is None or split.method == "per-slide":
        return []
    if split.method != "specimen":
        shared = summary["test_tiles_from_seen_specimens"]
        if not shared:
            return []
        every = "All" if shared == summary["test_tiles"] else f"{shared:,} of the"
        first = (
            f"{every} {summary['test_tiles']:,} test tiles come from specimens that are also "
            "in training, so the test accuracy says how well the model knows these "
            "specimens and is optimistic for a new patient"
        )
        if crossval is not None:
            return [
                f"{first}; on specimens it never saw, a {crossval['folds']}-fold "
                f"cross-validation by specimen gives {crossval['accuracy'] * 100:.1f} % accuracy."
            ]
        return [
            f"{first}; --split-by specimen (in the app, Also test on unseen specimens) "
            "measures it on specimens held out."
        ]
    test = split.indices("test")
    trained = np.union1d(split.indices("train"), split.indices("val"))
    notes = [
        f"The test tiles are fold {split.fold} of {split.folds}: every tile of the "
        f"specimens {', '.join(summary['test'])}, none of which is in training."
    ]
    untested = [n for i, n in enumerate(class_names) if not np.any(labels[test] == i)]
    untrained = [n for i, n in enumerate(class_names) if not np.any(labels[trained] == i)]
    if untested:
        notes.append(
            f"No test tile is {', '.join(untested)}: this fold cannot test "
            f"{'that class' if len(untested) == 1 else 'those classes'}."
        )
    if untrained:
        notes.append(
            f"No training tile is {', '.join(untrained)}: this fold's model cannot learn "
            f"{'it' if len(untrained) == 1 else 'them'}, and its test tiles of "
            f"{'it' if len(untrained) == 1 else 'them'} count as errors."
        )
    return notes


def resume_config(out: str | Path, **overrides: Any) -> TrainConfig:
    """The config stored in ``out/last.pt`` with ``overrides`` applied (for the CLI, which
    resumes with only the options the user typed)."""
    saved = TrainConfig.from_dict(load_last(Path(out) / LAST_FILE)["config"])
    return saved.replace(out=str(out), **overrides)


def fit(
    config: TrainConfig,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    resume: bool = False,
    dataset: TileDataset | None = None,
    dist: DistContext | None = None,
    overwrite: bool = False,
    crossval: dict[str, Any] | None = None,
) -> FitResult:
    """Run (or, with ``resume``, continue) a training run described by ``config``.

    A new run refuses a folder that holds an earlier one (:func:`earlier_run_files`)
    unless ``overwrite``, which removes that run's files once the tiles are loaded.
    ``resume`` with more ``config.epochs`` than the checkpoint's extends the run: the
    learning-rate schedule becomes that of a run of the new length from the saved
    epoch on, and the report says so (``extended``). Before the tiles are read, the
    disk must have room for the run's files (:func:`estimate_run_bytes`).

    ``dataset``: tiles already loaded from ``config.data`` (skips decoding). With
    ``config.epochs == 0`` only the data is loaded and ``split.csv`` written. Raises
    DatasetError for unusable data, DeviceError for a missing device or GPU memory
    exhaustion, HistoViewerError when ``resume`` finds no compatible checkpoint or the
    batch size does not divide among the processes. A cancelled run returns with
    ``cancelled=True`` instead of raising.

    ``dist``: the process's place in a torchrun job; by default
    :func:`histoviewer.distributed.setup` (joins the job when launched by torchrun,
    else a single process on ``config.device``).

    ``crossval``: the unseen-specimen figures of a cross-validation on the same tiles
    (:func:`histoviewer.training.crossval.unseen_summary`), written beside the test
    figures into the report and the model file.
    """
    run = _Run(config, progress, cancel)
    run.crossval = crossval
    return run.run(resume, dataset, dist, overwrite)


class _Run:
    def __init__(
        self, config: TrainConfig, progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> None:
        if not config.out:
            raise HistoViewerError("no output folder was given for the training run")
        self.config = config
        self.out = Path(config.out).expanduser()
        self.progress = progress
        self.cancel = cancel
        self.history: list[dict[str, Any]] = []
        self.best_val_loss = float("inf")
        self.best_epoch = 0
        self.epoch_seconds: float | None = None
        self.dist = DistContext()
        self.scale: dict[str, Any] = {}
        self.notes: list[str] = []
        self.extensions: list[dict[str, int]] = []
        # Wall-clock time of the run: this part's, from here, plus the earlier parts' up
        # to the checkpoint it resumes from (time spent on a cancelled, unsaved epoch is
        # not in any checkpoint and is lost with that epoch).
        self.started = time.monotonic()
        self.earlier_seconds = 0.0
        self.crossval: dict[str, Any] | None = None
        # Fine-tuning: the model started from, and its scores before training.
        self.start: Classifier | None = None
        self.before: dict[str, Any] | None = None

    @property
    def elapsed_s(self) -> float:
        return self.earlier_seconds + (time.monotonic() - self.started)

    def emit(self, kind: str, **values: Any) -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(TrainEvent(kind, epochs=self.config.epochs, **values))

    # ------------------------------------------------------------------ setup

    def run(
        self,
        resume: bool,
        dataset: TileDataset | None,
        dist: DistContext | None,
        overwrite: bool = False,
    ) -> FitResult:
        if resume and overwrite:
            raise HistoViewerError(
                "--resume continues the run in the output folder and --overwrite replaces "
                "it: give one of them, not both"
            )
        self.dist = dist or distributed.setup(self.config.device)
        if self.dist.is_main:
            ensure_writable_dir(self.out)  # fail now, not after the first epoch
        checkpoint = self._resume_checkpoint() if resume else None
        # Every process looks (the folder is shared, or only rank 0's holds files); only
        # rank 0 removes, after the tiles are loaded, so a failed start keeps the old run.
        earlier = [] if resume else run_folder.refuse_earlier_run(self.out, overwrite)
        if self.dist.is_main:
            run_folder.check_free_space(self.config, resume, earlier)
        cfg = self.config
        processes = self.dist.world_size
        if cfg.batch_size % processes:
            raise HistoViewerError(
                f"the batch size {cfg.batch_size} cannot be shared evenly by {processes} "
                f"processes; use a multiple of {processes} (--batch-size)"
            )
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        device = self.dist.device
        try:
            if dataset is None:
                dataset = load_tiles(
                    cfg.data,
                    **cfg.tile_options(),
                    workers=cfg.workers,
                    cancel=self.cancel,
                    progress=lambda done, total: self.emit(
                        "load", phase="load", batch=done, batches=total
                    ),
                )
        except Cancelled:
            # A resumed run stopped while reading the tiles still has its checkpoint.
            done = 0
            if checkpoint is not None:
                done = int(checkpoint["epoch"])
                self.history = list(checkpoint["history"])
            return self._cancelled_result(done, None, dataset)
        if cfg.init_from:
            self.start = load_model(cfg.init_from)
            dataset = align_to_model(dataset, self.start.info, cfg.init_from)
        split = split_for(cfg, dataset)
        split_text = split_csv_text(dataset.class_folders, dataset.labels, dataset.stems, split)
        self.scale = scale_summary(cfg, dataset)
        self.data_summary = {
            "source": dataset.source,
            "class_folders": dataset.class_folders,
            "class_names": dataset.class_names,
            "images": len(dataset),
            "split_counts": split.counts(),
            "split_method": split.method,
            "specimens": split.specimen_summary(),
            "fingerprint": split_csv_fingerprint(split_text),
            "tile_size": self.scale["tile_size"],
            "patch_size": self.scale["patch_size"],
        }
        if checkpoint is not None:
            self._check_same_data(checkpoint)
        self.notes = (
            scale_notes(cfg, dataset)
            + specimen_notes(split, dataset.labels, dataset.class_names, self.crossval)
            + self._finetune_notes(split, dataset)
        )
        if self.dist.is_main:
            for note in self.notes:
                self.emit("note", message=note)
            if cfg.mpp_assumed:
                log.warning("%s", self.notes[0])
            log.info(
                "tiles of %s at %g µm/px; the model's patches: %d px at %.4g µm/px (%.4g µm)",
                "x".join(map(str, dataset.tile_size)),
                cfg.tile_mpp,
                self.scale["patch_size"],
                self.scale["mpp"],
                self.scale["patch_microns"],
            )
            run_folder.remove_earlier_run(self.out, earlier)
            atomic_write_text(self.out / SPLIT_FILE, split_text)
            log.info("split %s written to %s", split.counts(), self.out / SPLIT_FILE)
        if cfg.epochs == 0:
            return FitResult(
                self.out,
                cfg,
                0,
                [],
                0,
                float("inf"),
                split.counts(),
                dataset=dataset,
                scale=self.scale,
                notes=self.notes,
                extensions=self.extensions,
                elapsed_s=self.elapsed_s,
            )
        try:
            return self._train(device, dataset, split, checkpoint)
        except torch.cuda.OutOfMemoryError:
            raise DeviceError(
                f"the {device.type.upper()} device ran out of memory training {cfg.arch} at "
                f"{cfg.image_size} px with batch size {cfg.batch_size} "
                f"({cfg.batch_size // processes} per process); try a smaller batch "
                "size (--batch-size) or image size"
            ) from None

    def _resume_checkpoint(self) -> dict[str, Any]:
        checkpoint = load_last(self.out / LAST_FILE)
        saved = TrainConfig.from_dict(checkpoint["config"])
        wanted = self.config.epochs
        # More epochs extend the run; fewer would cut a schedule already partly followed.
        extend = wanted > saved.epochs
        diffs = saved.differences(
            self.config.replace(epochs=saved.epochs) if extend else self.config
        )
        diffs = [
            f"{d}, but a run can only be extended" if d.startswith("epochs:") else d for d in diffs
        ]
        if diffs:
            raise HistoViewerError(
                f"cannot resume from {self.out / LAST_FILE}: these settings differ from the "
                f"checkpoint's ({'; '.join(diffs)}); start a new run in another folder instead"
            )
        # How to run may change on resume (another device, more threads); what to train may not.
        runtime = {k: getattr(self.config, k) for k in RUNTIME_FIELDS}
        stated = self.config.mpp  # the assumed scale, now stated: the same scale
        self.config = saved.replace(**runtime)
        if self.config.mpp is None and stated is not None:
            self.config = self.config.replace(mpp=stated)
        self.extensions = [dict(e) for e in checkpoint.get("extensions", [])]
        # Checkpoints from before elapsed_s was stored: their epochs' own seconds.
        earlier = checkpoint.get("elapsed_s")
        if earlier is None:
            earlier = sum(float(h.get("seconds", 0.0)) for h in checkpoint.get("history", []))
        self.earlier_seconds = float(earlier)
        if extend:
            done = int(checkpoint["epoch"])
            self.config = self.config.replace(epochs=wanted)
            self.extensions.append(
                {"from_epochs": saved.epochs, "to_epochs": wanted, "after_epoch": done}
            )
            if self.dist.is_main:
                log.info(
                    "extending the run in %s from %d to %d epochs after epoch %d",
                    self.out,
                    saved.epochs,
                    wanted,
                    done,
                )
        return checkpoint

    def _check_same_data(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("data", {})
        if saved.get("fingerprint") != self.data_summary["fingerprint"]:
            what = []
            for key in ("class_folders", "images", "split_counts"):
                if saved.get(key) != self.data_summary[key]:
                    what.append(f"{key} {saved.get(key)} -> {self.data_summary[key]}")
            raise HistoViewerError(
                f"cannot resume from {self.out / LAST_FILE}: the data in {self.config.data} is "
                f"not what the run was started with ({'; '.join(what) or 'other files'})"
            )
        # The same files at another size would change the model's patch size mid-run.
        for key in ("tile_size", "patch_size"):
            if key in saved and saved[key] != self.data_summary[key]:
                raise HistoViewerError(
                    f"cannot resume from {self.out / LAST_FILE}: the tiles in "
                    f"{self.config.data} are not what the run was started with ({key} "
                    f"{saved[key]} -> {self.data_summary[key]})"
                )

    def _finetune_notes(self, split: Split, dataset: TileDataset) -> list[str]:
        if self.start is None:
            return []
        notes = [f"Fine-tuned from {self.start.info.name} ({self.config.init_from})."]
        untrained = untrained_classes(dataset.labels, split.indices("train"), dataset.class_names)
        if untrained:
            notes.append(
                f"No training tile is {', '.join(untrained)}: the model was not trained on "
                f"{'that class' if len(untrained) == 1 else 'those classes'} and keeps what "
                "it knew."
            )
        if split.method == "per-slide":
            notes.append(
                "The test patches are a part of every slide's labels, held out; neighbouring "
                "patches of one slide look alike, so the figures after fine-tuning are "
                "optimistic for slides the labels did not come from."
            )
        return notes

    def _info(self, dataset: TileDataset) -> ModelInfo:
        cfg = self.config
        if self.start is not None:
            start = self.start.info
            return ModelInfo(
                arch=start.arch,
                class_names=list(start.class_names),
                class_colors=list(start.class_colors),
                input_size=start.input_size,
                patch_size=start.patch_size,
                mpp=start.mpp,
                mean=start.mean,
                std=start.std,
                name=cfg.name or f"{start.name} fine-tuned ({Path(cfg.data).name or 'labels'})",
                training={
                    "config": cfg.to_dict(),
                    "data": self.data_summary,
                    "init_from": {"name": start.name, "fingerprint": self.start.fingerprint},
                },
            )
        name = cfg.name or f"{cfg.arch} {cfg.preset} ({Path(cfg.data).stem or 'tiles'})"
        return ModelInfo(
            arch=cfg.arch,
            class_names=dataset.class_names,
            class_colors=dataset.class_colors,
            input_size=cfg.image_size,
            patch_size=self.scale["patch_size"],
            mpp=self.scale["mpp"],
            name=name,
            training={"config": cfg.to_dict(), "data": self.data_summary},
        )

    # ------------------------------------------------------------------ training

    def _train(
        self,
        device: torch.device,
        dataset: TileDataset,
        split: Split,
        checkpoint: dict[str, Any] | None,
    ) -> FitResult:
        cfg = self.config
        _seed_everything(cfg.seed)
        info = self._info(dataset)
        network = build_network(cfg.arch, dataset.num_classes)
        if self.start is not None and checkpoint is None:
            network.load_state_dict(self.start.network.state_dict())
        images = torch.from_numpy(dataset.images).to(device)
        labels = torch.from_numpy(dataset.labels).to(device)
        train_rows, val_rows, test_rows = (
            torch.from_numpy(split.indices(s)).to(device) for s in ("train", "val", "test")
        )
        engine = Engine(cfg, network, info, device, images, labels, len(train_rows), self.dist)
        start_epoch = 0
        if checkpoint is not None:
            start_epoch = self._restore(engine, checkpoint)
            self.before = checkpoint.get("before")
        else:
            if self.start is not None:
                try:
                    self.before = self._scores(engine, test_rows, dataset)
                except Cancelled:
                    return self._cancelled_result(0, split, dataset)
            self._save_last(engine, 0)
        where = str(device)
        if self.dist.is_distributed:
            where = (
                f"{self.dist.world_size} processes ({self.dist.backend}, {device.type}), "
                f"{cfg.batch_size // self.dist.world_size} images per process and batch"
            )
        if self.dist.is_main:
            log.info(
                "training %s on %s: %s, %d epochs from epoch %d",
                cfg.arch,
                where,
                split.counts(),
                cfg.epochs,
                start_epoch + 1,
            )
        self.emit(
            "start", epoch=start_epoch, history=list(self.history), message=f"training on {where}"
        )
        for epoch in range(start_epoch, cfg.epochs):
            try:
                train, val = self._epoch(engine, epoch, train_rows, val_rows)
            except Cancelled:
                log.info(
                    "cancelled during epoch %d; %s holds epoch %d",
                    epoch + 1,
                    self.out / LAST_FILE,
                    epoch,
                )
                return self._cancelled_result(epoch, split, dataset)
            self._end_epoch(engine, epoch, train, val)
            # Under torchrun all processes must stop at the same point: the end of an
            # epoch that is saved.
            stop = self.cancel is not None and self.cancel.cancelled
            if self.dist.is_distributed and self.dist.any(stop) and epoch + 1 < cfg.epochs:
                if self.dist.is_main:
                    log.info("cancelled; %s holds epoch %d", self.out / LAST_FILE, epoch + 1)
                return self._cancelled_result(epoch + 1, split, dataset)
        return self._finish(engine, split, dataset, test_rows, device)

    def _restore(self, engine: Engine, checkpoint: dict[str, Any]) -> int:
        engine.network.load_state_dict(checkpoint["model"])
        engine.optimizer.load_state_dict(checkpoint["optimizer"])
        # Only the step count is taken from the saved scheduler: its rates are those of the
        # saved length, which differs when the run is extended.
        engine.resume_schedule(int(checkpoint["scheduler"]["last_epoch"]))
        if checkpoint.get("scaler"):
            engine.scaler.load_state_dict(checkpoint["scaler"])
        self.history = list(checkpoint["history"])
        self.best_val_loss = float(checkpoint["best_val_loss"])
        self.best_epoch = int(checkpoint["best_epoch"])
        set_rng_state(checkpoint["rng"])
        epoch = int(checkpoint["epoch"])
        log.info("resuming %s after epoch %d", self.out / LAST_FILE, epoch)
        return epoch

    def _epoch(
        self, engine: Engine, epoch: int, train_rows: torch.Tensor, val_rows: torch.Tensor
    ) -> tuple[EpochStats, EvalResult]:
        cfg = self.config

        def on_batch(stats: BatchStats) -> None:
            per_batch = stats.seconds / max(1, stats.batch)
            left_now = (stats.batches - stats.batch) * per_batch
            per_epoch = self.epoch_seconds or per_batch * stats.batches * 1.1
            later = cfg.epochs - epoch - 1
            eta = left_now + later * per_epoch if stats.phase == "train" else later * per_epoch
            self.emit(
                "batch",
                epoch=epoch + 1,
                batch=stats.batch,
                batches=stats.batches,
                phase=stats.phase,
                loss=stats.loss,
                acc=stats.acc,
                images_per_s=stats.images_per_s,
                eta_s=eta,
                lr=engine.optimizer.param_groups[0]["lr"],
            )

        started = time.perf_counter()
        if not self.dist.is_distributed:
            train = engine.train_one_epoch(epoch, train_rows, on_batch, self.cancel)
            val = engine.evaluate(val_rows, "val", on_batch, self.cancel)
        else:
            report = on_batch if self.dist.is_main else None
            train = engine.train_one_epoch(epoch, train_rows, report)
            # Validation on rank 0 (its weights are everyone's; its BatchNorm statistics
            # are the ones saved), then shared so that every process decides alike.
            val = engine.evaluate(val_rows, "val", report) if self.dist.is_main else None
            val = self.dist.broadcast(val)
        self.epoch_seconds = time.perf_counter() - started
        return train, val

    def _end_epoch(self, engine: Engine, epoch: int, train: EpochStats, val: EvalResult) -> None:
        self.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train.loss,
                "train_acc": train.acc,
                "val_loss": val.loss,
                "val_acc": val.acc,
                "lr": train.lr,
                "seconds": train.seconds + val.seconds,
                "images_per_s": train.images_per_s,
                "val_images_per_s": val.images_per_s,
                "train_images": train.images,
                "processes": self.dist.world_size,
            }
        )
        # NaN never compares smaller: a diverged run keeps its last good model.
        if self.best_epoch == 0 or val.loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val.loss, epoch + 1
            info = engine.info
            info.metrics = {"epoch": epoch + 1, "val_loss": val.loss, "val_accuracy": val.acc}
            if self.dist.is_main:
                save_model(self.out / BEST_FILE, engine.network, info)
        self._save_last(engine, epoch + 1)
        if not self.dist.is_main:
            return
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, %.0f images/s%s",
            epoch + 1,
            self.config.epochs,
            train.loss,
            train.acc,
            val.loss,
            val.acc,
            train.images_per_s,
            " (best)" if self.best_epoch == epoch + 1 else "",
        )
        left = (self.config.epochs - epoch - 1) * (self.epoch_seconds or 0.0)
        self.emit(
            "epoch",
            epoch=epoch + 1,
            loss=train.loss,
            acc=train.acc,
            images_per_s=train.images_per_s,
            eta_s=left,
            lr=train.lr,
            history=list(self.history),
        )

    def _save_last(self, engine: Engine, epochs_done: int) -> None:
        if not self.dist.is_main:
            return
        save_last(
            self.out / LAST_FILE,
            {
                "model": engine.network.state_dict(),
                "info": engine.info.to_dict(),
                "optimizer": engine.optimizer.state_dict(),
                "scheduler": engine.scheduler.state_dict(),
                "scaler": engine.scaler.state_dict() if engine.scaler.is_enabled() else {},
                "epoch": epochs_done,
                "config": self.config.to_dict(),
                "history": list(self.history),
                "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch,
                "data": self.data_summary,
                "rng": rng_state(),
                "processes": self.dist.world_size,
                "extensions": self.extensions,
                "elapsed_s": self.elapsed_s,
                "before": self.before,
            },
        )

    def _scores(self, engine: Engine, rows: torch.Tensor, dataset: TileDataset) -> dict[str, Any]:
        """The network's scores on ``rows``, labels and mixed-in tiles apart."""
        cancel = None if self.dist.is_distributed else self.cancel
        result = engine.evaluate(rows, "test", None, cancel)
        return self._group_scores(result, rows, dataset)

    @staticmethod
    def _group_scores(
        result: EvalResult, rows: torch.Tensor, dataset: TileDataset
    ) -> dict[str, Any]:
        stems = [dataset.stems[i] for i in rows.cpu().tolist()]
        return scores_by_group(result.y_true, result.y_pred, stems, dataset.class_names)

    # ------------------------------------------------------------------ the end

    def _finish(
        self,
        engine: Engine,
        split: Split,
        dataset: TileDataset,
        test_rows: torch.Tensor,
        device: torch.device,
    ) -> FitResult:
        cfg = self.config
        outcome = None
        if self.dist.is_main:
            outcome = self._test_and_report(engine, split, dataset, test_rows, device)
        # The other processes wait here for rank 0's test results, so that none exits
        # (and none is reported finished) before the report is written.
        outcome = self.dist.broadcast(outcome)
        if outcome is None:
            return self._cancelled_result(cfg.epochs, split, dataset)
        metrics, report = outcome
        return FitResult(
            self.out,
            cfg,
            cfg.epochs,
            self.history,
            self.best_epoch,
            self.best_val_loss,
            split.counts(),
            test_metrics=metrics,
            report=report,
            dataset=dataset,
            scale=self.scale,
            notes=self.notes,
            extensions=self.extensions,
            elapsed_s=self.elapsed_s,
        )

    def _test_and_report(
        self,
        engine: Engine,
        split: Split,
        dataset: TileDataset,
        test_rows: torch.Tensor,
        device: torch.device,
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Test the best model, write it with its metrics and the report (rank 0 only);
        None when cancelled."""
        cfg = self.config
        best = load_model(self.out / BEST_FILE)
        engine.network.load_state_dict(best.network.state_dict())
        cancel = None if self.dist.is_distributed else self.cancel
        try:
            test = engine.evaluate(test_rows, "test", None, cancel)
        except Cancelled:
            return None
        metrics = classification_metrics(test.y_true, test.y_pred, dataset.class_names)
        info = engine.info
        specimens = split.specimen_summary()
        info.metrics = {
            "epoch": self.best_epoch,
            "val_loss": self.best_val_loss,
            "test_accuracy": metrics["accuracy"],
            "test_macro_f1": metrics["macro_f1"],
            "test_images": metrics["n"],
            "per_class_f1": {r["name"]: r["f1"] for r in metrics["per_class"]},
            # "tile": random over tiles (specimens shared with training); "specimen": the
            # test specimens were never seen in training.
            "test_split": cfg.split_by,
        }
        if specimens is not None:
            info.metrics["test_specimens"] = specimens["test"]
            info.metrics["test_tiles_from_seen_specimens"] = specimens[
                "test_tiles_from_seen_specimens"
            ]
        if self.crossval is not None:
            info.metrics.update(
                {
                    "unseen_accuracy": self.crossval["accuracy"],
                    "unseen_macro_f1": self.crossval["macro_f1"],
                    "unseen_images": self.crossval["n"],
                    "unseen_folds": self.crossval["folds"],
                    "unseen_specimens": len(self.crossval["specimens"]),
                }
            )
        fine_tune = None
        if self.start is not None:
            after = self._group_scores(test, test_rows, dataset)
            compared = comparison(self.before or {}, after)
            fine_tune = {
                "init_from": cfg.init_from,
                "start_model": {
                    "name": self.start.info.name,
                    "fingerprint": self.start.fingerprint,
                },
                "before": self.before,
                "after": after,
                "compared": compared,
                "untrained_classes": untrained_classes(
                    dataset.labels, split.indices("train"), dataset.class_names
                ),
            }
            info.metrics["fine_tune"] = compared
            for line in comparison_lines(compared):
                log.info("%s", line)
        save_model(self.out / BEST_FILE, engine.network, info)
        self.emit(
            "test",
            epoch=cfg.epochs,
            loss=test.loss,
            acc=test.acc,
            images_per_s=test.images_per_s,
            history=list(self.history),
        )
        train_rates = [h["images_per_s"] for h in self.history]
        report = {
            "config": cfg.to_dict(),
            "data": {**self.data_summary, "skipped": [s.to_dict() for s in dataset.skipped]},
            "scale": self.scale,
            "notes": self.notes,
            # Each extension to more epochs: from which length to which, after which epoch.
            "extended": self.extensions,
            "split_counts": split.counts(),
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "test": metrics,
            "test_accuracy": metrics["accuracy"],
            "test_macro_f1": metrics["macro_f1"],
            "test_split": cfg.split_by,
            "specimens": specimens,
            # The cross-validation by specimen on the same tiles, when one was run.
            "unseen_specimens": self.crossval,
            # Fine-tuning from a model: scores of the held-out labels before and after.
            "fine_tune": fine_tune,
            "timings": {
                "train_images_per_s": float(np.median(train_rates)) if train_rates else None,
                "eval_images_per_s": test.images_per_s,
                "train_seconds": float(sum(h["seconds"] for h in self.history)),
                "test_seconds": test.seconds,
                # All the run's parts (resumed ones too), reading the tiles included.
                "elapsed_seconds": self.elapsed_s,
            },
            "device": _device_name(device),
            "processes": self.dist.world_size,
            "distributed": {
                "backend": self.dist.backend,
                "images_per_process_and_batch": cfg.batch_size // self.dist.world_size,
                "sync_batchnorm": bool(cfg.sync_batchnorm and self.dist.is_distributed),
            }
            if self.dist.is_distributed
            else None,
            "amp": str(engine.amp_dtype).replace("torch.", "") if engine.amp_dtype else "float32",
            "files": {
                "best": BEST_FILE,
                "last": LAST_FILE,
                "split": SPLIT_FILE,
                "curves": reporting.CURVES_FILE,
                "confusion": reporting.CONFUSION_FILE,
                "card": MODEL_CARD_FILE,
            },
        }
        if self.crossval is not None:
            report["files"]["crossval"] = CROSSVAL_FILE
            report["files"]["crossval_confusion"] = CROSSVAL_CONFUSION_FILE
        reporting.write_report(self.out / reporting.REPORT_FILE, report)
        write_model_card(self.out, report)
        reporting.plot_curves(self.history, self.out / reporting.CURVES_FILE)
        reporting.plot_confusion(
            metrics["confusion_matrix"], dataset.class_names, self.out / reporting.CONFUSION_FILE
        )
        log.info(
            "test accuracy %.4f, macro F1 %.4f; report in %s",
            metrics["accuracy"],
            metrics["macro_f1"],
            self.out / reporting.REPORT_FILE,
        )
        self.emit("done", epoch=cfg.epochs, acc=metrics["accuracy"], history=list(self.history))
        return metrics, report

    def _cancelled_result(
        self, epochs_done: int, split: Split | None, dataset: TileDataset | None
    ) -> FitResult:
        last = self.out / LAST_FILE
        if epochs_done:
            message = f"{last} holds epoch {epochs_done}; resuming continues after it"
        elif last.is_file():
            message = (
                f"no epoch was completed; resuming from {last} starts again at the first "
                "epoch with the same settings"
            )
        else:
            message = "no epoch was completed and nothing was saved; a new run starts afresh"
        self.emit("cancelled", epoch=epochs_done, history=list(self.history), message=message)
        return FitResult(
            self.out,
            self.config,
            epochs_done,
            self.history,
            self.best_epoch,
            self.best_val_loss,
            split.counts() if split else {},
            cancelled=True,
            dataset=dataset,
            scale=self.scale,
            notes=self.notes,
            extensions=self.extensions,
            elapsed_s=self.elapsed_s,
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return (
        f"{device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)"
    )
