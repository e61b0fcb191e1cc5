"""The train / validation / test split, reproducible from file names alone.

The canonical split (recipe.md) calls scikit-learn's ``train_test_split`` twice on
rows sorted by (class folder, file name without extension): ``test_size=0.2`` of
everything is held out, then ``test_size=0.8`` of the held-out part is the test set
and the rest validation, both stratified by class with ``random_state=2000``. On the
Kather tiles that gives 4000 / 200 / 800 and equals ``split.csv`` of the shared data.

Datasets too small for that (scikit-learn needs every part to hold each class at
least once) fall back to a per-class seeded split that still puts at least one image
of every class in each part; the log says so.

The canonical split is random over tiles, so its test tiles come from the specimens
that are also in training. :func:`make_specimen_split` holds whole specimens out
instead: scikit-learn's ``StratifiedGroupKFold`` deals the specimens into ``folds``
folds with class shares as even as whole specimens allow; fold ``i``'s specimens are
the test set, and a stratified 5 % of the other specimens' tiles is the validation set
(it only picks the best epoch; the test tiles stay unseen).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from histoviewer.errors import DatasetError
from histoviewer.fileio import atomic_write_text
from histoviewer.labels.extract import SLIDE_POSITION, slide_groups
from histoviewer.training.specimens import read_specimens, try_read_specimens

if TYPE_CHECKING:
    from histoviewer.training.config import TrainConfig
    from histoviewer.training.dataset import TileDataset

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Share of the training specimens' tiles that validate a specimen-grouped run.
GROUPED_VAL_SHARE = 0.05


@dataclass(frozen=True)
class Split:
    """``parts[i]`` is the split of row ``i``: 0 train, 1 val, 2 test.

    ``method``: "sklearn" (canonical), "per-class" (small-data fallback), "specimen"
    (fold ``fold`` of ``folds`` held out by specimen) or "per-slide" (a part of every
    slide's labels held out). ``specimens``: the specimen (or slide) of every row where
    the file names carry one, else None.
    """

    parts: np.ndarray
    method: str
    specimens: np.ndarray | None = None
    fold: int = 0
    folds: int = 0

    def indices(self, name: str) -> np.ndarray:
        """Row indices of one split ("train", "val", "test"), or every row for "all"."""
        if name == "all":
            return np.arange(len(self.parts))
        return np.flatnonzero(self.parts == SPLITS.index(name))

    def counts(self) -> dict[str, int]:
        return {name: int((self.parts == i).sum()) for i, name in enumerate(SPLITS)}

    def names(self) -> list[str]:
        return [SPLITS[p] for p in self.parts]

    def specimens_in(self, name: str) -> list[str]:
        """The specimens with tiles in one split, sorted (empty when none are known)."""
        if self.specimens is None:
            return []
        return sorted(set(self.specimens[self.indices(name)].tolist()))

    def specimen_summary(self) -> dict[str, object] | None:
        """The specimens of each split and how many test tiles come from a specimen the
        model trained on (train or validation); None when no specimen is known."""
        if self.specimens is None:
            return None
        seen = set(self.specimens_in("train")) | set(self.specimens_in("val"))
        test = self.specimens[self.indices("test")]
        return {
            **{name: self.specimens_in(name) for name in SPLITS},
            "test_tiles": len(test),
            "test_tiles_from_seen_specimens": int(sum(s in seen for s in test.tolist())),
            "fold": self.fold,
            "folds": self.folds,
        }


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


def make_slide_split(
    labels: Sequence[int] | np.ndarray,
    slides: np.ndarray,
    *,
    holdout: float = 0.2,
    test_share: float = 0.8,
    seed: int = 2000,
) -> Split:
    """Hold out a part of every slide's labels of every class (patches cut by
    ``extract-tiles``; mixed-in tiles count as one more "slide").

    Per (slide, class) with at least 3 patches, ``holdout`` of them (at least 2) are held
    out, ``test_share`` of those (at least 1) for testing and the rest for validation;
    smaller groups stay in training. Raises DatasetError when nothing can be held out.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts = np.zeros(len(labels), dtype=np.int8)
    keys = sorted({(str(s), int(c)) for s, c in zip(slides.tolist(), labels.tolist(), strict=True)})
    for slide, cid in keys:
        members = rng.permutation(np.flatnonzero((slides == slide) & (labels == cid)))
        n = len(members)
        if n < 3:
            continue
        n_hold = min(n - 1, max(2, round(n * holdout)))
        n_test = min(n_hold - 1, max(1, round(n_hold * test_share)))
        parts[members[:n_test]] = 2
        parts[members[n_test:n_hold]] = 1
    if not (parts == 1).any():
        raise DatasetError(
            "too few labelled patches to hold any out for testing: label at least 3 patches "
            "of a class on a slide"
        )
    return Split(parts, "per-slide", np.asarray(slides, dtype=object))


def fold_test_rows(
    labels: np.ndarray, specimens: np.ndarray, folds: int, seed: int
) -> list[np.ndarray]:
    """The test rows of each of ``folds`` specimen-grouped, class-stratified folds.

    No specimen is in two folds. Raises DatasetError when there are fewer specimens
    than folds.
    """
    names = sorted(set(specimens.tolist()))
    if not isinstance(folds, int) or folds < 2:
        raise DatasetError(f"cross-validation needs at least 2 folds, not {folds}")
    if folds > len(names):
        raise DatasetError(
            f"{folds} folds need at least {folds} specimens, but the tiles come from "
            f"{len(names)} ({', '.join(names)}); use --folds {len(names)} or fewer"
        )
    from sklearn.model_selection import StratifiedGroupKFold

    codes = np.searchsorted(np.asarray(names, dtype=object), specimens)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = np.arange(len(labels))
    with warnings.catch_warnings():
        # "The least populated class has only N members": rare classes are expected here;
        # the report says per fold which classes it cannot test.
        warnings.simplefilter("ignore", UserWarning)
        return [np.sort(test) for _train, test in splitter.split(rows, labels, codes)]


def make_specimen_split(
    labels: Sequence[int] | np.ndarray,
    specimens: np.ndarray,
    *,
    folds: int,
    fold: int,
    seed: int = 2000,
) -> Split:
    """Hold out the specimens of fold ``fold`` (1 to ``folds``) as the test set.

    The validation set is a class-stratified :data:`GROUPED_VAL_SHARE` of the other
    specimens' tiles (it chooses the best epoch; the test specimens stay unseen).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not isinstance(fold, int) or not 1 <= fold <= folds:
        raise DatasetError(f"fold {fold} does not exist: the folds are numbered 1 to {folds}")
    test = fold_test_rows(labels, specimens, folds, seed)[fold - 1]
    parts = np.zeros(len(labels), dtype=np.int8)
    parts[test] = 2
    rest = np.flatnonzero(parts == 0)
    parts[_validation_rows(labels, rest, seed)] = 1
    return Split(parts, "specimen", specimens, fold, folds)


def _validation_rows(labels: np.ndarray, rest: np.ndarray, seed: int) -> np.ndarray:
    """A stratified share of ``rest``; per class where scikit-learn cannot (tiny data).
    A class with a single tile in ``rest`` keeps it for training."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[rest])
    wanted = set(np.flatnonzero(counts > 1).tolist())
    try:
        _train, val = train_test_split(
            rest, test_size=GROUPED_VAL_SHARE, stratify=labels[rest], random_state=seed
        )
        if wanted <= set(labels[val].tolist()):
            return np.sort(val)
    except ValueError:
        pass
    rng = np.random.default_rng(seed)
    val = []
    for cid in np.unique(labels[rest]):
        members = rng.permutation(rest[labels[rest] == cid])
        if len(members) > 1:
            val.extend(members[: max(1, round(len(members) * GROUPED_VAL_SHARE))].tolist())
    return np.asarray(sorted(val), dtype=np.int64)


def split_csv_text(
    class_folders: Sequence[str], labels: np.ndarray, stems: Sequence[str], split: Split
) -> str:
    """The split as CSV text: header ``class,file,split`` (and ``specimen`` for a split
    by specimen), one row per image, ``\\n`` endings."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    grouped = split.method in ("specimen", "per-slide") and split.specimens is not None
    writer.writerow(["class", "file", "split", *(["specimen"] if grouped else [])])
    for row, (label, stem, part) in enumerate(zip(labels, stems, split.parts, strict=True)):
        extra = [split.specimens[row]] if grouped else []
        writer.writerow([class_folders[int(label)], stem, SPLITS[int(part)], *extra])
    return out.getvalue()


def split_csv_fingerprint(text: str) -> str:
    """The SHA-256 of a split's CSV text: a run records it as its data's fingerprint, so
    that resuming and evaluating can tell the same tiles, split the same way."""
    return hashlib.sha256(text.encode()).hexdigest()


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
    """The split a run with ``config`` uses on ``dataset``; evaluation rebuilds it this way.

    ``config.split_by == "specimen"`` holds out fold ``config.fold`` of ``config.folds``
    (the file names must carry a specimen); patches cut from slides by ``extract-tiles``
    (their names carry the slide and position) hold out a part of every slide's labels
    (:func:`make_slide_split`); otherwise the canonical split, which records the
    specimens too where the names carry them.
    """
    if config.split_by == "specimen":
        if not config.fold:
            raise DatasetError(
                "a run split by specimen holds out one fold: give which (1 to "
                f"{config.folds}), or run the whole cross-validation"
            )
        specimens = read_specimens(dataset.stems, config.group_pattern, source=dataset.source)
        return make_specimen_split(
            dataset.labels,
            specimens,
            folds=config.folds,
            fold=config.fold,
            seed=config.split_seed,
        )
    if any(SLIDE_POSITION.match(stem) for stem in dataset.stems):
        return make_slide_split(
            dataset.labels,
            slide_groups(dataset.stems),
            holdout=config.holdout,
            test_share=config.test_share,
            seed=config.split_seed,
        )
    split = make_split(
        dataset.labels,
        holdout=config.holdout,
        test_share=config.test_share,
        seed=config.split_seed,
        class_names=dataset.class_folders,
    )
    return replace(split, specimens=try_read_specimens(dataset.stems, config.group_pattern))
