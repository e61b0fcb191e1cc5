"""The train / validation / test split, reproducible from file names alone.

The canonical split (recipe.md) calls scikit-learn's ``train_test_split`` twice on
rows sorted by (class folder, file name without extension): ``test_size=0.2`` of
everything is held out, then ``test_size=0.8`` of the held-out part is the test set
and the rest validation, both stratified by class with ``random_state=2000``. On the
Kather tiles that gives 4000 / 200 / 800 and equals ``split.csv`` of the shared data.

Datasets too small for that (scikit-learn needs every part to hold each class at
least once) fall back to a per-class seeded split that still puts at least one image
of every class in each part; the log says so.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from histoviewer.errors import DatasetError
from histoviewer.fileio import atomic_write_text

if TYPE_CHECKING:
    from histoviewer.training.config import TrainConfig
    from histoviewer.training.dataset import TileDataset

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """``parts[i]`` is the split of row ``i``: 0 train, 1 val, 2 test."""

    parts: np.ndarray
    method: str  # "sklearn" (canonical) or "per-class" (small-data fallback)

    def indices(self, name: str) -> np.ndarray:
        """Row indices of one split ("train", "val", "test"), or every row for "all"."""
        if name == "all":
            return np.arange(len(self.parts))
        return np.flatnonzero(self.parts == SPLITS.index(name))

    def counts(self) -> dict[str, int]:
        return {name: int((self.parts == i).sum()) for i, name in enumerate(SPLITS)}

    def names(self) -> list[str]:
        return [SPLITS[p] for p in self.parts]


def make_split(
    labels: Sequence[int] | np.ndarray,
    *,
    holdout: float = 0.2,
    test_share: float = 0.8,
    seed: int = 2000,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Split rows (already in canonical order) into train / val / test, stratified by label.

    ``holdout``: fraction of all rows held out from training; ``test_share``: fraction
    of the held-out rows that form the test set (the rest is validation). Raises
    DatasetError when a class has fewer than three images (one per part).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not (0.0 < holdout < 1.0 and 0.0 < test_share < 1.0):
        raise DatasetError(
            f"the split fractions must lie strictly between 0 and 1 (held out {holdout}, "
            f"test share {test_share})"
        )
    counts = np.bincount(labels)
    for cid, count in enumerate(counts):
        if 0 < count < 3:
            name = class_names[cid] if class_names is not None else str(cid)
            raise DatasetError(
                f"the class {name} has only {count} image(s); every class needs at least 3 "
                "(one each for training, validation and test)"
            )
    from sklearn.model_selection import train_test_split  # 1-2 s to import: only when used

    rows = np.arange(len(labels))
    try:
        _train, rest = train_test_split(rows, test_size=holdout, stratify=labels, random_state=seed)
        val, test = train_test_split(
            rest, test_size=test_share, stratify=labels[rest], random_state=seed
        )
        parts = np.zeros(len(labels), dtype=np.int8)
        parts[val] = 1
        parts[test] = 2
        present = np.unique(labels)
        if all(np.isin(present, labels[parts == p]).all() for p in (0, 1, 2)):
            return Split(parts, "sklearn")
    except ValueError as exc:
        log.info("scikit-learn cannot split this dataset (%s)", exc)
    log.warning(
        "the dataset (%d images) is too small for the canonical stratified split; using a "
        "per-class split with at least one image of every class in each part",
        len(labels),
    )
    return Split(_per_class_split(labels, holdout, test_share, seed), "per-class")


def _per_class_split(
    labels: np.ndarray, holdout: float, test_share: float, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = np.zeros(len(labels), dtype=np.int8)
    for cid in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cid))
        n = len(members)
        n_hold = min(n - 1, max(2, round(n * holdout)))
        n_test = min(n_hold - 1, max(1, round(n_hold * test_share)))
        parts[members[:n_test]] = 2
        parts[members[n_test:n_hold]] = 1
    return parts


def split_csv_text(
    class_folders: Sequence[str], labels: np.ndarray, stems: Sequence[str], split: Split
) -> str:
    """The split as CSV text: header ``class,file,split``, one row per image, ``\\n`` endings."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", "file", "split"])
    for label, stem, part in zip(labels, stems, split.parts, strict=True):
        writer.writerow([class_folders[int(label)], stem, SPLITS[int(part)]])
    return out.getvalue()


def write_split_csv(
    path: str | os.PathLike,
    class_folders: Sequence[str],
    labels: np.ndarray,
    stems: Sequence[str],
    split: Split,
) -> None:
    """Write :func:`split_csv_text` atomically to ``path``."""
    atomic_write_text(path, split_csv_text(class_folders, labels, stems, split))


def split_for(config: TrainConfig, dataset: TileDataset) -> Split:
    """The split a run with ``config`` uses on ``dataset``; evaluation rebuilds it this way."""
    return make_split(
        dataset.labels,
        holdout=config.holdout,
        test_share=config.test_share,
        seed=config.split_seed,
        class_names=dataset.class_folders,
    )
