"""Specimens from file names, folds by specimen, and scores that skip classes with no tiles."""

from __future__ import annotations

import numpy as np
import pytest

from histoviewer.errors import DatasetError, HistoViewerError
from histoviewer.training import TrainConfig, classification_metrics, format_metrics
from histoviewer.training.evaluation import metrics_from_confusion
from histoviewer.training.specimens import read_specimens
from histoviewer.training.split import (
    GROUPED_VAL_SHARE,
    fold_test_rows,
    make_specimen_split,
    split_csv_text,
)

KATHER = [
    "10009_CRC-Prim-HE-03_009.tif_Row_301_Col_151",
    "10062_CRC-Prim-HE-02_003b.tif_Row_1_Col_301",
    "100B0_CRC-Prim-HE-09_009.tif_Row_1_Col_301",
]


def test_kather_and_tcga_names_carry_their_specimen():
    assert read_specimens(KATHER).tolist() == ["CRC-Prim-HE-03", "CRC-Prim-HE-02", "CRC-Prim-HE-09"]
    tcga = ["TCGA-A6-2671-01Z-00-DX1_1024_2048", "TCGA-AA-3530-01Z_0_0"]
    assert read_specimens(tcga).tolist() == ["TCGA-A6-2671", "TCGA-AA-3530"]


def test_a_pattern_reads_other_names_by_its_first_group_or_whole_match():
    stems = ["patientA_tile3", "patientB_tile1", "patientA_tile9"]
    assert read_specimens(stems, r"patient(\w)_").tolist() == ["A", "B", "A"]
    assert read_specimens(stems, r"patient\w").tolist() == ["patientA", "patientB", "patientA"]


def test_names_without_a_specimen_are_refused_with_an_example_and_the_option():
    with pytest.raises(DatasetError) as caught:
        read_specimens(["tile_001", "tile_002"], source="/data/tiles")
    message = str(caught.value)
    assert "from the file names in /data/tiles" in message
    assert "'tile_001'" in message and "--group-pattern" in message
    with pytest.raises(DatasetError, match=r"from 1 of the 4 file names .*'stray'"):
        read_specimens([*KATHER, "stray"])
    with pytest.raises(DatasetError, match=r"one specimen .*CRC-Prim-HE-03.* at least two"):
        read_specimens([KATHER[0], KATHER[0]])
    with pytest.raises(DatasetError, match="not a regular expression"):
        read_specimens(KATHER, "(")


def test_the_config_checks_the_specimen_settings():
    with pytest.raises(HistoViewerError, match="split_by"):
        TrainConfig(split_by="slide")
    with pytest.raises(HistoViewerError, match="fold=2: a fold is held out only"):
        TrainConfig(fold=2)
    with pytest.raises(HistoViewerError, match="fold=6"):
        TrainConfig(split_by="specimen", folds=5, fold=6)
    with pytest.raises(HistoViewerError, match="folds=1"):
        TrainConfig(split_by="specimen", folds=1)
    with pytest.raises(HistoViewerError, match="group_pattern"):
        TrainConfig(split_by="specimen", group_pattern="[")


def _dataset(specimens: int = 12, seed: int = 0):
    """Three classes; each specimen has its own class mix and size, one class is rare."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for s in range(specimens):
        counts = rng.integers(5, 40, size=3)
        counts[2] = counts[2] if s % 3 == 0 else 0  # class 2 only in every third specimen
        for c, n in enumerate(counts):
            labels += [c] * int(n)
            groups += [f"S{s:02d}"] * int(n)
    return np.asarray(labels), np.asarray(groups, dtype=object)


def test_folds_never_share_a_specimen_and_cover_every_tile_once():
    labels, groups = _dataset()
    folds = fold_test_rows(labels, groups, 4, seed=7)
    assert len(folds) == 4
    covered = np.concatenate(folds)
    assert sorted(covered.tolist()) == list(range(len(labels)))
    specimens = [set(groups[rows].tolist()) for rows in folds]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not specimens[i] & specimens[j]
    assert fold_test_rows(labels, groups, 4, seed=7)[2].tolist() == folds[2].tolist()


def test_folds_are_stratified_a_rare_class_is_tested_in_every_fold():
    # The rare class lives in 4 of 12 specimens; 4 folds must each get one of them
    # (dealing specimens by size alone, as GroupKFold does, misses it in some).
    for data_seed in range(5):
        labels, groups = _dataset(specimens=12, seed=data_seed)
        overall = np.bincount(labels, minlength=3) / len(labels)
        for seed in range(3):
            folds = fold_test_rows(labels, groups, 4, seed=seed)
            assert all((labels[rows] == 2).any() for rows in folds)
            shares = [np.bincount(labels[rows], minlength=3) / len(rows) for rows in folds]
            assert max(np.abs(share - overall).max() for share in shares) < 0.2


def test_more_folds_than_specimens_is_refused_by_name():
    labels, groups = _dataset(specimens=3)
    with pytest.raises(DatasetError, match=r"4 folds need at least 4 specimens.*--folds 3"):
        fold_test_rows(labels, groups, 4, seed=0)


def test_a_fold_split_tests_its_specimens_and_validates_on_the_others():
    labels, groups = _dataset()
    split = make_specimen_split(labels, groups, folds=4, fold=3, seed=11)
    test_specimens = set(split.specimens_in("test"))
    assert test_specimens == set(groups[fold_test_rows(labels, groups, 4, 11)[2]].tolist())
    trained = set(split.specimens_in("train")) | set(split.specimens_in("val"))
    assert not test_specimens & trained
    val = split.indices("val")
    rest = np.flatnonzero(split.parts != 2)
    assert abs(len(val) - GROUPED_VAL_SHARE * len(rest)) <= 3
    # Every class the training specimens hold more than once is validated.
    for c in set(labels[rest].tolist()):
        if (labels[rest] == c).sum() > 1:
            assert (labels[val] == c).any()
    summary = split.specimen_summary()
    assert summary["test_tiles_from_seen_specimens"] == 0 and summary["fold"] == 3
    text = split_csv_text(["a", "b", "c"], labels, [f"t{i}" for i in range(len(labels))], split)
    header, first = text.splitlines()[:2]
    assert header == "class,file,split,specimen" and first.endswith(f",{groups[0]}")
    with pytest.raises(DatasetError, match="fold 5 does not exist"):
        make_specimen_split(labels, groups, folds=4, fold=5)


def test_a_class_with_no_tiles_is_not_scored():
    names = ["tumor", "stroma", "empty"]
    metrics = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1], names)
    empty = metrics["per_class"][2]
    assert empty["support"] == 0
    assert empty["precision"] is None and empty["recall"] is None and empty["f1"] is None
    assert metrics["untested"] == ["empty"]
    # Macro F1 over the two classes with tiles: tumor 2/3, stroma 1.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    # Its wrong predictions still count in its column.
    assert metrics["confusion_matrix"][0][2] == 1
    line = next(row for row in format_metrics(metrics).splitlines() if row.startswith("empty"))
    assert "0.0000" not in line and "no tiles: not scored" in line


def test_pooled_scores_from_a_summed_confusion_matrix_equal_the_pooled_predictions():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]
    true = rng.integers(0, 3, 200)  # "d" never occurs
    pred = np.where(rng.random(200) < 0.7, true, rng.integers(0, 4, 200))
    direct = classification_metrics(true, pred, names)
    halves = [
        classification_metrics(true[s], pred[s], names) for s in (slice(0, 90), slice(90, None))
    ]
    summed = np.add(*[np.asarray(h["confusion_matrix"]) for h in halves])
    assert metrics_from_confusion(summed.tolist(), names) == direct
