"""Test-set metrics (scikit-learn) and evaluating a saved model on a labelled dataset."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from histoviewer.device import autocast_dtype
from histoviewer.errors import DatasetError, HistoViewerError
from histoviewer.model import Classifier, load_model
from histoviewer.tasks import CancelToken
from histoviewer.training.config import TrainConfig
from histoviewer.training.dataset import TileDataset, load_tiles
from histoviewer.training.specimens import read_specimens
from histoviewer.training.split import (
    SPLITS,
    Split,
    split_csv_fingerprint,
    split_csv_text,
    split_for,
)

log = logging.getLogger(__name__)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision / recall / F1 / support and the confusion
    matrix (rows: true class, columns: predicted), as plain JSON-safe values.

    A class with no tile here is not scored: its precision, recall and F1 are None
    (its wrong predictions still show in the matrix's column) and it is listed in
    ``untested``; macro F1 averages the classes that have tiles.
    """
    labels = list(range(len(class_names)))
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        raise DatasetError("there are no images to evaluate")
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = [i for i in labels if support[i] > 0]
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro over the classes present: a class absent from this split has no F1.
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "class_names": list(class_names),
        "per_class": [
            {
                "name": name,
                "precision": float(precision[i]) if support[i] else None,
                "recall": float(recall[i]) if support[i] else None,
                "f1": float(f1[i]) if support[i] else None,
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "untested": [name for i, name in enumerate(class_names) if not support[i]],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def metrics_from_confusion(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str]
) -> dict[str, Any]:
    """:func:`classification_metrics` of the predictions a confusion matrix counts (every
    figure it gives depends on the counts alone): pooling several test sets is summing
    their matrices."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    true = np.repeat(np.repeat(np.arange(n), n), counts.ravel())
    pred = np.repeat(np.tile(np.arange(n), n), counts.ravel())
    return classification_metrics(true, pred, class_names)


def _score(value: float | None, width: int) -> str:
    return f"{value:{width}.4f}" if value is not None else f"{'-':>{width}}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of :func:`classification_metrics` output for the terminal."""
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [
        f"accuracy  {metrics['accuracy']:.4f}   macro F1  {metrics['macro_f1']:.4f}   "
        f"({metrics['n']} images)",
        "",
        f"{'class':<{width}}  precision  recall      f1  support",
    ]
    for row in metrics["per_class"]:
        lines.append(
            f"{row['name']:<{width}}  {_score(row['precision'], 9)}  "
            f"{_score(row['recall'], 6)}  {_score(row['f1'], 6)}  {row['support']:7d}"
            + ("  (no tiles: not scored)" if not row["support"] else "")
        )
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    cell = max(5, *(len(str(v)) + 1 for r in metrics["confusion_matrix"] for v in r))
    short = [n[: cell - 1] for n in names]
    lines.append(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


def evaluate_model(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str = "test",
    split_by: str = "tile",
    group_pattern: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    robustness: bool = False,
) -> dict[str, Any]:
    """Evaluate a model file on one split ("train", "val", "test" or "all") of a dataset.

    The tiles are loaded and split with the settings the model was trained with (its
    metadata's training config: patch size rule, split seed, fractions, per-class limit),
    so "test" means the images it never saw. Tiles of another size than the model's
    patches are scored all the same, with a warning. Dataset classes are matched to the
    model's classes by name; a class the model does not know raises DatasetError.
    ``split_by="specimen"`` scores every tile of the specimens the model never saw
    (``split`` is then ignored): those with no tile in its training or validation set,
    as its metadata records them (or as the rebuilt split gives them when ``data`` is
    its training data). ``group_pattern`` reads the specimens from the file names
    (default: the model's, else Kather 2016 and TCGA names). DatasetError when no
    specimen can be read; HistoViewerError when the model saw every specimen of ``data``
    (no unseen-specimen figure can come from it) or it is unknown which it saw.

    ``robustness=True`` also scores the same tiles, decoded once, under each condition
    of :mod:`histoviewer.training.robustness` (symmetries, JPEG, blur, stain shifts),
    under the key ``robustness`` (:func:`~histoviewer.training.robustness.robustness_report`).
    ``progress(done, total)`` counts images scored, over every pass.

    Returns :func:`classification_metrics` plus ``split``, ``model``, ``data``,
    ``device``, ``seconds``, ``images_per_s`` and, by specimen, ``specimens`` (those
    tested).
    """
    if split not in (*SPLITS, "all"):
        raise HistoViewerError(f"unknown split '{split}' (use train, val, test or all)")
    if split_by not in ("tile", "specimen"):
        raise HistoViewerError(f"unknown split mode '{split_by}' (use tile or specimen)")
    classifier = load_model(checkpoint, device=device)
    info = classifier.info
    trained = _training_config(info.training, info.patch_size)
    dataset = load_tiles(
        data,
        **trained.tile_options(),
        workers=workers,
        cancel=cancel,
    )
    if dataset.patch_size != info.patch_size:
        log.warning(
            "the tiles of %s are %d px, but the model %s was trained on %d px patches "
            "(%.4g µm); unless these tiles show the same area of tissue, the scores say "
            "little about its maps",
            dataset.source,
            dataset.patch_size,
            checkpoint,
            info.patch_size,
            info.patch_microns,
        )
    mapping = []
    for folder, name in zip(dataset.class_folders, dataset.class_names, strict=True):
        if name not in info.class_names:
            raise DatasetError(
                f"the class folder {folder} of {dataset.source} is class '{name}', which the "
                f"model {checkpoint} does not know (its classes: {', '.join(info.class_names)})"
            )
        mapping.append(info.class_names.index(name))
    parts = split_for(trained, dataset)
    rows = parts.indices(split)
    tested: list[str] | None = None
    if trained.split_by == "specimen" and split == "test":
        tested = parts.specimens_in("test")  # the fold it was tested on: never seen
    if split_by == "specimen":
        rows, tested = _unseen_rows(
            checkpoint, info.training, info.metrics, dataset, parts, group_pattern, trained
        )
    y_true = np.asarray(mapping, dtype=np.int64)[dataset.labels[rows]]
    passes = 1
    if robustness:
        from histoviewer.training.robustness import CONDITIONS

        passes = len(CONDITIONS)  # the clean pass below is the first of them
    n = len(rows)

    def clean_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done, passes * n)

    start = time.perf_counter()
    y_pred = predict(
        classifier,
        dataset.images,
        rows,
        batch_size=batch_size,
        progress=clean_progress,
        cancel=cancel,
    )
    seconds = time.perf_counter() - start
    metrics = classification_metrics(y_true, y_pred, info.class_names)
    metrics.update(
        split=split if tested is None else "unseen specimens",
        specimens=tested,
        model=str(checkpoint),
        data=dataset.source,
        device=str(classifier.device),
        seconds=seconds,
        images_per_s=len(rows) / seconds if seconds > 0 else 0.0,
        skipped=[s.to_dict() for s in dataset.skipped],
    )
    if robustness:
        from histoviewer.training.robustness import robustness_report

        def condition_progress(done: int, total: int) -> None:
            if progress is not None:
                progress(n + done, n + total)

        metrics["robustness"] = robustness_report(
            classifier,
            dataset.images,
            rows,
            y_true,
            clean_pred=y_pred,
            batch_size=batch_size,
            progress=condition_progress,
            cancel=cancel,
        )
    return metrics


def predict(
    classifier: Classifier,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    batch_size: int = 128,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """The predicted class (index into the model's classes) of ``images[rows]``, uint8
    (N, H, W, 3), scored in batches of ``batch_size``.

    ``transform`` changes each uint8 NHWC batch, already on the model's device, before
    the model's usual preprocessing (the robustness conditions); ``progress(done,
    total)`` is called after each batch, in images.
    """
    dtype = autocast_dtype(classifier.device)
    preds = []
    for lo in range(0, len(rows), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = torch.from_numpy(images[rows[lo : lo + batch_size]]).to(classifier.device)
        if transform is not None:
            batch = transform(batch)
        probs = classifier.probabilities(batch, autocast_dtype=dtype)
        preds.append(probs.argmax(1).cpu().numpy())
        if progress is not None:
            progress(min(len(rows), lo + batch_size), len(rows))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def _unseen_rows(
    checkpoint: str | os.PathLike,
    training: dict[str, Any],
    recorded_metrics: dict[str, Any],
    dataset: TileDataset,
    parts: Split,
    group_pattern: str | None,
    trained: TrainConfig,
) -> tuple[np.ndarray, list[str]]:
    """The rows of the specimens of ``dataset`` the model never saw, and those specimens."""
    pattern = group_pattern if group_pattern is not None else trained.group_pattern
    specimens = read_specimens(dataset.stems, pattern, source=dataset.source)
    data = training.get("data") if isinstance(training, dict) else None
    data = data if isinstance(data, dict) else {}
    recorded = data.get("specimens")
    if isinstance(recorded, dict) and isinstance(recorded.get("train"), list):
        seen = set(recorded["train"]) | set(recorded.get("val") or [])
    elif data.get("fingerprint") and data["fingerprint"] == split_fingerprint(dataset, parts):
        # The same tiles, split the same way: the rebuilt training rows are exact.
        seen = set(specimens[np.union1d(parts.indices("train"), parts.indices("val"))].tolist())
    else:
        raise HistoViewerError(
            f"cannot tell which specimens the model {checkpoint} was trained on: it does not "
            f"record them and {dataset.source} is not the data it was trained on; score it "
            "with --split all on tiles of patients it never saw"
        )
    names = sorted(set(specimens.tolist()))
    unseen = [s for s in names if s not in seen]
    if not unseen:
        known = (
            f"it records {_percent_text(recorded_metrics.get('unseen_accuracy'))} on unseen "
            f"specimens from a {recorded_metrics.get('unseen_folds', 'k')}-fold "
            "cross-validation by specimen"
            if recorded_metrics.get("unseen_accuracy") is not None
            else f"to measure it, run: histoviewer train {dataset.source} --out DIR "
            "--split-by specimen"
        )
        raise HistoViewerError(
            f"the model {checkpoint} was trained on tiles of every specimen in "
            f"{dataset.source} ({len(names)}: {_span(names)}), so these tiles cannot give "
            f"an unseen-specimen figure; {known}"
        )
    rows = np.flatnonzero(np.isin(specimens, unseen))
    return rows, unseen


def _span(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"


def _percent_text(value: Any) -> str:
    return f"{value * 100:.1f} % accuracy" if isinstance(value, (int, float)) else "a figure"


def split_fingerprint(dataset: TileDataset, parts: Split) -> str:
    """The fingerprint a run records for its data (see :func:`split_csv_fingerprint`)."""
    text = split_csv_text(dataset.class_folders, dataset.labels, dataset.stems, parts)
    return split_csv_fingerprint(text)


def _training_config(training: dict[str, Any], patch_size: int) -> TrainConfig:
    """The tile and split settings a model was trained with. A model that does not say
    (one trained elsewhere) gets the recipe's split and its tiles resized to its
    ``patch_size``."""
    keys = (
        "patch_size",
        "limit_per_class",
        "split_seed",
        "holdout",
        "test_share",
        "split_by",
        "group_pattern",
        "folds",
        "fold",
    )
    config = training.get("config", training) if isinstance(training, dict) else {}
    values = {k: config[k] for k in keys if isinstance(config, dict) and k in config}
    values.setdefault("patch_size", patch_size)
    try:
        return TrainConfig(**values)
    except (HistoViewerError, TypeError):
        log.warning("the model's training settings are unusable; using the recipe's split")
        return TrainConfig(patch_size=patch_size if patch_size >= 8 else None)
