"""Fine-tuning a trained model (``train --init-from MODEL``): its classes, its weights,
and the held-out labels scored before and after.

The tiles' class folders are matched to the model's classes by name (see
:func:`histoviewer.labels.store.match_class`), so a dataset that covers only some of
them keeps all of the model's outputs; a class with no tiles is simply not trained on
and the report says so. A folder naming a class the model does not know is refused
by name. Rows whose file names carry a slide position (tiles cut by
``extract-tiles``) are the *labels*; other rows are *tiles* mixed in. Both are scored
separately, with the starting model and with the fine-tuned one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from histoviewer.errors import DatasetError
from histoviewer.labels.extract import TILES_GROUP, class_folder, slide_groups
from histoviewer.labels.store import match_class
from histoviewer.model import ModelInfo
from histoviewer.training.dataset import TileDataset
from histoviewer.training.evaluation import classification_metrics


def align_to_model(dataset: TileDataset, info: ModelInfo, model: str = "the model") -> TileDataset:
    """``dataset`` relabelled with the model's class ids, names and colours.

    Raises DatasetError naming every class folder the model has no class for.
    """
    names = list(info.class_names)
    ids, unknown = [], []
    for folder, name in zip(dataset.class_folders, dataset.class_names, strict=True):
        cid = match_class(name, names)
        if cid is None:
            cid = match_class(folder, names)
        if cid is None:
            unknown.append(folder)
        ids.append(cid)
    if unknown:
        raise DatasetError(
            f"{dataset.source} holds classes {model} does not know: {', '.join(unknown)}; "
            f"its classes are {', '.join(names)} (rename or remove those folders)"
        )
    mapping = np.asarray(ids, dtype=np.int64)
    return replace(
        dataset,
        class_folders=[class_folder(i, n) for i, n in enumerate(names)],
        class_names=names,
        class_colors=list(info.class_colors),
        labels=mapping[dataset.labels] if len(dataset.labels) else dataset.labels,
    )


def untrained_classes(labels: np.ndarray, train_rows: np.ndarray, names: list[str]) -> list[str]:
    """The classes with no training tile (the network keeps what it knew of them)."""
    counts = np.bincount(labels[train_rows], minlength=len(names))
    return [n for n, c in zip(names, counts, strict=True) if c == 0]


def scores_by_group(
    y_true: np.ndarray, y_pred: np.ndarray, stems: list[str], class_names: list[str]
) -> dict[str, Any]:
    """Metrics of the labelled slide patches ("labels") and of the mixed-in tiles
    ("tiles") among the rows scored; a group with no row is left out."""
    groups = slide_groups(stems)
    out: dict[str, Any] = {}
    for key, mask in (("labels", groups != TILES_GROUP), ("tiles", groups == TILES_GROUP)):
        if mask.any():
            out[key] = classification_metrics(y_true[mask], y_pred[mask], class_names)
    return out


def comparison(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{group: {n, before_accuracy, after_accuracy, before_macro_f1, after_macro_f1}}``."""
    out = {}
    for key, new in after.items():
        old = before.get(key)
        if old is None:
            continue
        out[key] = {
            "n": new["n"],
            "before_accuracy": old["accuracy"],
            "after_accuracy": new["accuracy"],
            "before_macro_f1": old["macro_f1"],
            "after_macro_f1": new["macro_f1"],
        }
    return out


def comparison_lines(compared: dict[str, Any]) -> list[str]:
    """One sentence per group, for the terminal, the notes and the app."""
    what = {
        "labels": "held-out labelled patches",
        "tiles": "held-out tiles mixed in",
    }
    lines = []
    for key, c in compared.items():
        lines.append(
            f"{what.get(key, key)} ({c['n']}): accuracy {100 * c['before_accuracy']:.1f} % "
            f"before fine-tuning, {100 * c['after_accuracy']:.1f} % after"
        )
    return lines
