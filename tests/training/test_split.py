"""The canonical split, from file names alone, against the shared split.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoviewer.errors import DatasetError
from histoviewer.training import list_tiles, make_split
from histoviewer.training.split import split_csv_text


def test_split_equals_shared_split_csv(kather_dir):
    reference = (Path(kather_dir) / "split.csv").read_text(encoding="utf-8")
    index = list_tiles(Path(kather_dir) / "tiles")
    split = make_split(index.labels)
    assert split.method == "sklearn"
    assert split.counts() == {"train": 4000, "val": 200, "test": 800}
    assert split_csv_text(index.class_folders, index.labels, index.stems, split) == reference


def test_jpeg_zip_with_wrapper_folder_gives_the_same_split(kather_dir):
    reference = (Path(kather_dir) / "split.csv").read_text(encoding="utf-8")
    index = list_tiles(Path(kather_dir) / "tiles-jpeg90.zip")
    assert index.source.endswith("tiles-jpeg90.zip:Kather_texture_2016_image_tiles_5000")
    split = make_split(index.labels)
    assert split_csv_text(index.class_folders, index.labels, index.stems, split) == reference


def test_other_seed_and_ratios_are_options():
    labels = np.repeat(np.arange(8), 625)
    base = make_split(labels)
    other = make_split(labels, seed=7)
    assert other.counts() == base.counts()
    assert not np.array_equal(other.parts, base.parts)
    wide = make_split(labels, holdout=0.5, test_share=0.5)
    assert wide.counts() == {"train": 2500, "val": 1250, "test": 1250}
    for part in ("train", "val", "test"):  # stratified: equal shares per class
        counts = np.bincount(labels[base.indices(part)], minlength=8)
        assert counts.max() - counts.min() <= 1


def test_small_data_still_puts_every_class_in_every_part():
    labels = np.repeat(np.arange(4), 5)  # too small for scikit-learn's stratified split
    split = make_split(labels, seed=3)
    assert split.method == "per-class"
    for part in ("train", "val", "test"):
        assert set(labels[split.indices(part)]) == {0, 1, 2, 3}
    assert np.array_equal(make_split(labels, seed=3).parts, split.parts)
    assert len(split.indices("all")) == 20


def test_a_class_with_fewer_than_three_images_is_named():
    with pytest.raises(DatasetError, match="class 02_STROMA has only 2 image"):
        make_split([0, 0, 0, 1, 1], class_names=["01_TUMOR", "02_STROMA"])
