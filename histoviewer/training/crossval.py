"""Cross-validation by specimen: the accuracy to expect on a patient the model never saw.

    histoviewer train DATA --out DIR --split-by specimen [--folds 5] [--no-final]

The canonical split is random over tiles, so its test tiles share specimens (and on
Kather 2016 nearly always source images) with the training tiles. Here the specimens,
read from the file names (:mod:`histoviewer.training.specimens`), are dealt into
``folds`` class-stratified folds (scikit-learn's ``StratifiedGroupKFold``; no specimen
in two folds). For each fold a complete run is trained in ``DIR/fold-N`` (its own
``best.safetensors``, ``report.json``, ...) whose test set is that fold's specimens.
Their test predictions are pooled (every tile predicted once, by a model that never
saw its specimen) into ``DIR/crossval.json`` and ``DIR/crossval_confusion.png``, with
each fold's figures and the classes it could not test. Then, unless ``final`` is off,
the model to use is trained on the canonical split in ``DIR`` itself: its report,
model file and results show its test figure and the unseen-specimen figure side by
side.

Long and resumable: ``crossval.json`` is written first (its ``config``, the fold
specimens, ``"status": "running"``); every fold is an ordinary run, so ``resume``
continues the fold that was stopped and skips finished ones.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from histoviewer import distributed
from histoviewer.distributed import DistContext
from histoviewer.errors import HistoViewerError
from histoviewer.fileio import ensure_writable_dir
from histoviewer.model.describe import TILE_SPLIT_MEANING, UNSEEN_MEANING
from histoviewer.tasks import Cancelled, CancelToken
from histoviewer.training import report as reporting
from histoviewer.training import run_folder
from histoviewer.training.checkpoint import LAST_FILE
from histoviewer.training.config import TrainConfig
from histoviewer.training.dataset import TileDataset, load_tiles
from histoviewer.training.evaluation import metrics_from_confusion
from histoviewer.training.run_folder import CROSSVAL_CONFUSION_FILE, CROSSVAL_FILE, SPLIT_FILE
from histoviewer.training.specimens import read_specimens
from histoviewer.training.split import fold_test_rows
from histoviewer.training.trainer import FitResult, TrainEvent, fit, resume_config

log = logging.getLogger(__name__)


def fold_folder(out: str | Path, fold: int) -> Path:
    return Path(out) / f"fold-{fold}"


@dataclass
class CrossValResult:
    """What :func:`cross_validate` produced. ``summary``: the content of crossval.json
    (None until every fold is done); ``final``: the final model's run (None with
    ``final`` off or when stopped before it); ``message``: for a cancelled one, what
    resuming will do."""

    out: Path
    config: TrainConfig
    folds: list[FitResult] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    final: FitResult | None = None
    cancelled: bool = False
    message: str = ""

    @property
    def crossval_path(self) -> Path:
        return self.out / CROSSVAL_FILE


def is_crossval(config: TrainConfig) -> bool:
    """Whether ``config`` asks for the whole cross-validation (not one held-out fold)."""
    return config.split_by == "specimen" and config.fold == 0


def saved_config(out: str | Path) -> TrainConfig | None:
    """The config of the cross-validation in ``out`` (from crossval.json), or None."""
    path = Path(out).expanduser() / CROSSVAL_FILE
    if not path.is_file():
        return None
    data = reporting.read_report(path)
    return TrainConfig.from_dict(data["config"])


def resume_any_config(out: str | Path, **overrides: Any) -> TrainConfig:
    """The config to resume ``out`` with: its cross-validation's when it holds one, else
    its run's (:func:`~histoviewer.training.trainer.resume_config`); ``overrides``
    (what the user typed) applied."""
    saved = saved_config(out)
    if saved is None:
        return resume_config(out, **overrides)
    return saved.replace(out=str(out), **overrides)


def cross_validate(
    config: TrainConfig,
    progress: Callable[[TrainEvent], None] | None = None,
    cancel: CancelToken | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    final: bool = True,
    dataset: TileDataset | None = None,
    dist: DistContext | None = None,
) -> CrossValResult:
    """Run (or, with ``resume``, continue) the cross-validation ``config`` describes
    (``split_by="specimen"``, ``fold=0``). See the module docstring for the files.

    Raises DatasetError when the file names carry no specimen or there are fewer
    specimens than folds, HistoViewerError when ``config.out`` holds an earlier run or
    cross-validation (unless ``overwrite``, which removes it once the tiles are loaded)
    or when there is nothing to resume.
    """
    if not is_crossval(config):
        raise HistoViewerError("cross-validation needs the split by specimen and no fold given")
    if config.epochs < 1:
        raise HistoViewerError(
            "cross-validation trains a model per fold: give at least 1 epoch (--epochs)"
        )
    if resume and overwrite:
        raise HistoViewerError(
            "--resume continues the cross-validation in the output folder and --overwrite "
            "replaces it: give one of them, not both"
        )
    dist = dist or distributed.setup(config.device)
    out = Path(config.out).expanduser()
    if dist.is_main:
        ensure_writable_dir(out)
    earlier = earlier_files(out)
    if resume and not (out / CROSSVAL_FILE).is_file():
        raise HistoViewerError(
            f"there is no cross-validation to resume in {out} (no {CROSSVAL_FILE}); start one "
            "without --resume"
        )
    if earlier and not resume and not overwrite:
        raise HistoViewerError(
            f"{out} already holds a training run or cross-validation "
            f"({', '.join(sorted({_shown(out, p) for p in earlier}))}); continue it with "
            "--resume (in the app, Resume), use a new folder, or replace it with --overwrite"
        )
    with _each_warning_once():
        return _cross_validate(
            config, progress, cancel, resume, earlier if overwrite else [], final, dataset, dist
        )


def _cross_validate(
    config: TrainConfig,
    progress: Callable[[TrainEvent], None] | None,
    cancel: CancelToken | None,
    resume: bool,
    replaced: list[Path],
    final: bool,
    dataset: TileDataset | None,
    dist: DistContext,
) -> CrossValResult:
    """:func:`cross_validate` once its arguments are checked; ``replaced``: the earlier
    files ``overwrite`` removes once the tiles are loaded."""
    out = Path(config.out).expanduser()
    emit = _Emitter(progress, config.folds + int(final), dist)
    result = CrossValResult(out, config)
    if dataset is None:
        try:
            dataset = load_tiles(
                config.data,
                **config.tile_options(),
                workers=config.workers,
                cancel=cancel,
                progress=lambda done, total: emit(
                    TrainEvent("load", phase="load", batch=done, batches=total)
                ),
            )
        except Cancelled:
            result.cancelled = True
            result.message = "stopped while reading the tiles; nothing of this run was lost"
            return result
    specimens = read_specimens(dataset.stems, config.group_pattern, source=dataset.source)
    plan = fold_plan(dataset, specimens, config)
    if dist.is_main:
        _remove(out, replaced)
        saved = saved_config(out) if resume else None
        # A resumed one with more epochs is being extended: if it stops again, the next
        # resume must extend the folds not yet extended, so the new length is saved now.
        if saved is None or saved.epochs != config.epochs:
            reporting.write_report(out / CROSSVAL_FILE, _started(config, plan))
    for fold in range(1, config.folds + 1):
        part = f"fold {fold} of {config.folds}"
        run_config = config.replace(
            fold=fold,
            out=str(fold_folder(out, fold)),
            name=config.name and f"{config.name} ({part})",
        )
        fold_resume = resume and (fold_folder(out, fold) / LAST_FILE).is_file()
        done = fit(
            run_config,
            emit.part(part, fold),
            cancel,
            resume=fold_resume,
            dataset=dataset,
            dist=dist,
        )
        result.folds.append(done)
        if done.cancelled:
            result.cancelled = True
            result.message = f"stopped in {part}; resuming continues it"
            return result
    summary = unseen_summary(config, plan, result.folds, dataset.class_names)
    result.summary = summary
    if dist.is_main:
        reporting.write_report(out / CROSSVAL_FILE, summary)
        reporting.plot_confusion(
            summary["confusion_matrix"],
            dataset.class_names,
            out / CROSSVAL_CONFUSION_FILE,
            title=f"Unseen specimens ({config.folds}-fold cross-validation)",
        )
        log.info(
            "unseen specimens (%d folds): accuracy %.4f, macro F1 %.4f; in %s",
            config.folds,
            summary["accuracy"],
            summary["macro_f1"],
            out / CROSSVAL_FILE,
        )
    if not final:
        return result
    final_config = config.replace(split_by="tile", fold=0)
    done = fit(
        final_config,
        emit.part("final model", config.folds + 1),
        cancel,
        resume=resume and (out / LAST_FILE).is_file(),
        dataset=dataset,
        dist=dist,
        crossval=summary,
    )
    result.final = done
    if done.cancelled:
        result.cancelled = True
        result.message = "stopped in the final model's training; resuming continues it"
    return result


def fold_plan(
    dataset: TileDataset, specimens: np.ndarray, config: TrainConfig
) -> list[dict[str, Any]]:
    """Each fold's test specimens and tiles, the classes it cannot test or train, and
    those its model learns from a single specimen."""
    labels = dataset.labels
    names = dataset.class_names
    plan = []
    folds = fold_test_rows(labels, specimens, config.folds, config.split_seed)
    for number, test in enumerate(folds, start=1):
        held = np.zeros(len(labels), dtype=bool)
        held[test] = True
        plan.append(
            {
                "fold": number,
                "test_specimens": sorted(set(specimens[test].tolist())),
                "test_tiles": len(test),
                "untested": [n for i, n in enumerate(names) if not np.any(labels[held] == i)],
                "untrained": [n for i, n in enumerate(names) if not np.any(labels[~held] == i)],
                # Classes the fold's model learns from one specimen only: its figures on
                # them say more about that specimen than about the class.
                "one_training_specimen": [
                    n
                    for i, n in enumerate(names)
                    if len(set(specimens[~held & (labels == i)].tolist())) == 1
                ],
            }
        )
    return plan


def unseen_summary(
    config: TrainConfig,
    plan: list[dict[str, Any]],
    folds: list[FitResult],
    class_names: list[str],
) -> dict[str, Any]:
    """The pooled and per-fold unseen-specimen figures (crossval.json)."""
    n = len(class_names)
    pooled = np.zeros((n, n), dtype=np.int64)
    per_fold = []
    for entry, run in zip(plan, folds, strict=True):
        metrics = run.test_metrics or {}
        pooled += np.asarray(metrics["confusion_matrix"], dtype=np.int64)
        per_fold.append(
            {
                **entry,
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "best_epoch": run.best_epoch,
                "model": str(Path(fold_folder("", entry["fold"])) / run_folder.BEST_FILE),
            }
        )
    metrics = metrics_from_confusion(pooled.tolist(), class_names)
    accuracies = [f["accuracy"] for f in per_fold]
    return {
        "status": "finished",
        "meaning": UNSEEN_MEANING,
        **metrics,
        "folds": config.folds,
        "specimens": sorted({s for f in plan for s in f["test_specimens"]}),
        "fold_accuracy_mean": float(np.mean(accuracies)),
        "fold_accuracy_sd": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "per_fold": per_fold,
        "group_pattern": config.group_pattern,
        "split_seed": config.split_seed,
        "config": config.to_dict(),
    }


def format_unseen(summary: dict[str, Any]) -> str:
    """The cross-validation's headline and one line per fold, for the terminal."""
    lines = [
        f"unseen specimens ({summary['folds']}-fold cross-validation by specimen): accuracy "
        f"{summary['accuracy']:.4f}, macro F1 {summary['macro_f1']:.4f} on {summary['n']:,} "
        f"tiles; per fold {summary['fold_accuracy_mean']:.4f} ± {summary['fold_accuracy_sd']:.4f}"
    ]
    for fold in summary["per_fold"]:
        line = (
            f"  fold {fold['fold']}: {', '.join(fold['test_specimens'])}: accuracy "
            f"{fold['accuracy']:.4f} on {fold['test_tiles']:,} tiles"
        )
        if fold["untested"]:
            line += f"; cannot test {', '.join(fold['untested'])}"
        if fold["untrained"]:
            line += f"; never trained on {', '.join(fold['untrained'])}"
        if fold.get("one_training_specimen"):
            line += f"; learnt from one specimen only: {', '.join(fold['one_training_specimen'])}"
        lines.append(line)
    return "\n".join(lines)


class _Once(logging.Filter):
    """Passes a warning only the first time: every part of a cross-validation reads the
    same tiles and would repeat the same warnings (an assumed scale, a small class)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


@contextlib.contextmanager
def _each_warning_once() -> Iterator[None]:
    once = _Once()
    loggers = [logging.getLogger(f"histoviewer.training.{name}") for name in ("trainer", "split")]
    for logger in loggers:
        logger.addFilter(once)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(once)


def side_by_side(report: dict[str, Any]) -> list[str]:
    """The final model's two figures, each with what it means (the terminal's last
    lines); empty when the report has no cross-validation beside its test figure."""
    unseen = report.get("unseen_specimens")
    if not unseen:
        return []
    test = report["test"]
    return [
        f"test split (specimens seen in training): accuracy {test['accuracy'] * 100:.1f} %, "
        f"macro F1 {test['macro_f1']:.3f} on {test['n']:,} tiles. {TILE_SPLIT_MEANING}",
        f"unseen specimens ({unseen['folds']}-fold): accuracy {unseen['accuracy'] * 100:.1f} "
        f"%, macro F1 {unseen['macro_f1']:.3f} on {unseen['n']:,} tiles. {UNSEEN_MEANING}",
    ]


def _started(config: TrainConfig, plan: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "running", "config": config.to_dict(), "per_fold": plan}


class _Emitter:
    """Progress events of every part, labelled with the part under way."""

    def __init__(
        self, progress: Callable[[TrainEvent], None] | None, parts: int, dist: DistContext
    ) -> None:
        self.progress = progress if dist.is_main else None
        self.parts = parts

    def __call__(self, event: TrainEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def part(self, name: str, number: int) -> Callable[[TrainEvent], None]:
        def forward(event: TrainEvent) -> None:
            self(replace(event, part=name, part_no=number, parts=self.parts))

        return forward


def earlier_files(out: str | Path) -> list[Path]:
    """What an earlier run or cross-validation left in ``out``: its run files, its
    crossval files and its fold folders' run files (a fold folder without any, itself)."""
    out = Path(out).expanduser()
    found = run_folder.earlier_run_files(out)
    found += [out / n for n in (CROSSVAL_FILE, CROSSVAL_CONFUSION_FILE) if (out / n).is_file()]
    for folder in sorted(out.glob("fold-*")):
        if folder.is_dir() and folder.name[5:].isdigit():
            found += run_folder.earlier_run_files(folder) or [folder]
    return found


def _shown(out: Path, path: Path) -> str:
    relative = path.relative_to(out)
    return str(relative.parts[0]) + ("/" if len(relative.parts) > 1 or path.is_dir() else "")


def _remove(out: Path, earlier: list[Path]) -> None:
    """``--overwrite``: remove the earlier run's and folds' files; a fold folder goes
    too once empty (a file of the user's in it stays, and so does the folder)."""
    files = [p for p in earlier if p.is_file()]
    for folder in sorted({p.parent for p in files} | {p for p in earlier if p.is_dir()}):
        in_folder = [p for p in files if p.parent == folder]
        if folder != out:
            in_folder += [folder / SPLIT_FILE] if (folder / SPLIT_FILE).is_file() else []
        run_folder.remove_earlier_run(folder, in_folder)
        if folder != out:
            with contextlib.suppress(OSError):
                folder.rmdir()
