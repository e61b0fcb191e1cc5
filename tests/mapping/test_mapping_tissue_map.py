"""TissueMap statistics and its .npz file: round trip and refusal of bad files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from mapping_support import COLORS, NAMES, sample_map

from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import (
    PENDING,
    TissueMap,
    TissueMapError,
)


def test_new_map_is_pending_and_nan():
    tmap = TissueMap.empty(PatchGrid(2, 3, 150, 75, stride_model=75), NAMES, COLORS, mpp=0.495)
    assert tmap.probs.shape == (2, 3, 3) and tmap.probs.dtype == np.float32
    assert np.isnan(tmap.probs).all()
    assert (tmap.state == PENDING).all() and tmap.state.dtype == np.uint8
    assert (tmap.labels == -1).all()
    assert tmap.fractions() == {"tumor": 0.0, "stroma": 0.0, "empty": 0.0}
    assert not tmap.complete and tmap.stride_model == 75


def test_labels_counts_fractions_areas():
    tmap = sample_map()
    labels = tmap.labels
    assert labels[0].tolist() == [0, 0, 0, 0]
    assert labels[1].tolist() == [1, 1, 1, -1]
    assert labels[2].tolist() == [2, -1, -1, -1]
    assert tmap.counts() == {"tumor": 4, "stroma": 3, "empty": 1}
    assert tmap.fractions() == pytest.approx({"tumor": 0.5, "stroma": 0.375, "empty": 0.125})
    # 150 px at 0.5 um/px = 75 um = 0.075 mm; one patch = 0.005625 mm2.
    assert tmap.cell_areas_mm2() == pytest.approx(np.full((3, 4), 0.075**2))
    assert tmap.areas_mm2()["tumor"] == pytest.approx(4 * 0.075**2)
    assert tmap.classified_area_mm2 == pytest.approx(8 * 0.075**2)
    assert (tmap.classified_count, tmap.background_count, tmap.pending_count) == (8, 1, 3)


def test_uncertainty_is_the_normalised_entropy_or_one_minus_the_margin():
    tmap = sample_map()
    tmap.probs[0, 1] = [1.0, 0.0, 0.0]
    tmap.probs[0, 2] = [1 / 3, 1 / 3, 1 / 3]
    doubt = tmap.uncertainty()
    assert doubt.dtype == np.float32 and doubt.shape == (3, 4)
    assert doubt[0, 1] == pytest.approx(0.0) and doubt[0, 2] == pytest.approx(1.0)
    assert doubt[0, 0] == pytest.approx(0.72985, abs=1e-5)  # (0.7, 0.2, 0.1)
    assert np.isnan(doubt[1, 3]) and np.isnan(doubt[2, 3])  # background, pending
    margin = tmap.uncertainty("margin")
    assert margin[0, 0] == pytest.approx(1 - (0.7 - 0.2))
    assert margin[0, 1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown uncertainty"):
        tmap.uncertainty("spread")


def test_geometry_helpers_follow_the_grid():
    tmap = sample_map()
    assert tmap.patch_box(2, 3) == (450, 300, 150, 150)
    assert tmap.patch_at(460, 310) == (2, 3)
    assert tmap.patch_at(601, 10) is None


def test_save_load_round_trip(tmp_path):
    tmap = sample_map()
    path = tmp_path / "map.npz"
    tmap.save(path)
    loaded = TissueMap.load(path)
    np.testing.assert_array_equal(loaded.probs, tmap.probs)  # NaN positions too
    np.testing.assert_array_equal(loaded.state, tmap.state)
    assert loaded.class_names == NAMES
    assert loaded.class_colors == COLORS
    assert (loaded.patch_size, loaded.stride, loaded.origin, loaded.mpp) == (150, 150, (0, 0), 0.5)
    assert loaded.slide == tmap.slide and loaded.model == tmap.model
    assert loaded.elapsed == 1.25 and loaded.complete is False
    # No pickled objects in the file: loading with pickles disabled sees every array.
    with np.load(path, allow_pickle=False) as data:
        assert {"probs", "state", "metadata"} <= set(data.files)
        meta = json.loads(str(data["metadata"]))
    assert meta["format"] == "histoviewer.tissuemap" and meta["version"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "map.npz"
    sample_map().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TissueMapError, match="damaged"):
        TissueMap.load(path)


def test_garbage_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "map.npz"
    path.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(TissueMapError, match=str(path.name)):
        TissueMap.load(path)
    with pytest.raises(TissueMapError, match="does not exist"):
        TissueMap.load(tmp_path / "missing.npz")


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["metadata"]))
    for key, value in changes.items():
        if key in arrays:
            arrays[key] = value
        else:
            meta[key] = value
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_unknown_version_is_refused(tmp_path):
    path = tmp_path / "map.npz"
    sample_map().save(path)
    _rewrite(path, version=99)
    with pytest.raises(TissueMapError, match="version 99"):
        TissueMap.load(path)


def test_inconsistent_arrays_are_refused(tmp_path):
    path = tmp_path / "map.npz"
    sample_map().save(path)
    _rewrite(path, state=np.zeros((2, 2), np.uint8))
    with pytest.raises(TissueMapError, match="do not match"):
        TissueMap.load(path)
    sample_map().save(path)
    _rewrite(path, state=np.full((3, 4), 7, np.uint8))
    with pytest.raises(TissueMapError, match="do not match"):
        TissueMap.load(path)


def test_other_npz_is_not_a_map(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, probs=np.zeros(3))
    with pytest.raises(TissueMapError, match="not a HistoViewer tissue map"):
        TissueMap.load(path)
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as zf:
        zf.writestr("metadata.npy", b"\x93NUMPY garbage")
    with pytest.raises(TissueMapError):
        TissueMap.load(tmp_path / "z.npz")
