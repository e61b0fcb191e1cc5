"""Patch labels of a slide: the set, undo data, the per-slide files, cells of a map."""

import json

import pytest

from histoviewer.labels import LabelError, LabelSet, LabelStore, PatchLabel
from histoviewer.labels.store import cell_box, cell_labels, match_class, slide_key
from histoviewer.mapping.grid import PatchGrid
from histoviewer.viewer_state import ViewerState

SLIDE = {"path": "/slides/a.svs", "size": 1234, "mtime": 5.0, "dimensions": [600, 450]}


def test_set_returns_what_it_replaced_and_apply_restores_it():
    labels = LabelSet(SLIDE)
    assert labels.set([(0, 0, 150), (150, 0, 150)], "tumor") == {
        (0, 0, 150): None,
        (150, 0, 150): None,
    }
    before = labels.set([(150, 0, 150)], "stroma")
    assert before == {(150, 0, 150): "tumor"}
    assert labels.counts() == {"stroma": 1, "tumor": 1}
    labels.apply(before)
    assert labels.get((150, 0, 150)) == "tumor"
    labels.set([(0, 0, 150)], None)
    assert [lab.box for lab in labels] == [(150, 0, 150)]


def test_match_class_accepts_folder_names_labels_and_any_case():
    names = ["tumor", "stroma", "empty"]
    assert match_class("Tumor", names) == 0
    assert match_class("02_STROMA", names) == 1
    assert match_class("Tumour epithelium", names) == 0
    assert match_class("necrosis", names) is None


def test_store_round_trip_and_key_ignores_mtime(tmp_path):
    store = LabelStore(tmp_path)
    labels = LabelSet(SLIDE, colors={"tumor": (213, 94, 0)})
    labels.set([(0, 0, 150), (300, 150, 150)], "tumor")
    path = store.save(labels)
    assert json.loads(path.read_text())["labels"][0] == {
        "x": 0,
        "y": 0,
        "size": 150,
        "class": "tumor",
    }
    touched = {**SLIDE, "mtime": 99.0}
    back = store.load(touched)
    assert [lab.box for lab in back] == [(0, 0, 150), (300, 150, 150)]
    assert back.colors == {"tumor": (213, 94, 0)}
    other = {**SLIDE, "size": 999}
    assert slide_key(other) != slide_key(SLIDE) and len(store.load(other)) == 0
    [stored] = store.slides()
    assert (stored.slide_path, stored.count, stored.counts) == ("/slides/a.svs", 2, {"tumor": 2})


def test_an_empty_set_removes_the_file(tmp_path):
    store = LabelStore(tmp_path)
    labels = LabelSet(SLIDE)
    labels.set([(0, 0, 150)], "tumor")
    path = store.save(labels)
    labels.clear()
    store.save(labels)
    assert not path.exists()


def test_a_damaged_file_is_kept_aside_and_reported(tmp_path):
    store = LabelStore(tmp_path)
    path = store.path_for(SLIDE)
    path.write_text('{"format": "histoviewer.labels", "version": 1, "labels": [{"x": 1}]}')
    with pytest.raises(LabelError, match=r"could not be read.*kept as"):
        store.load(SLIDE)
    assert not path.exists()
    [aside] = tmp_path.glob("*.damaged-*.json")
    assert '"x": 1' in aside.read_text()
    assert len(store.load(SLIDE)) == 0  # starts afresh; the damaged copy stays


def test_cells_of_a_map_follow_the_label_centres():
    grid = PatchGrid(rows=3, cols=4, patch_size=150, stride=150, extent=(600, 450))
    labels = LabelSet(SLIDE)
    labels.set([cell_box(grid, 1, 2)], "stroma")
    labels.set([cell_box(grid, 2, 3)], "necrosis")  # not a class of this model
    labels.set([PatchLabel(0, 0, 300, "tumor").box], "tumor")  # a coarser model's patch
    assert cell_box(grid, 1, 2) == (300, 150, 150)
    assert cell_labels(labels, grid, ["tumor", "stroma"]) == {(1, 2): 1, (1, 1): 0}


def test_viewer_state_label_changes_undo_and_redo():
    state = ViewerState()
    state.set_slide(object())  # stands for a slide reader
    seen = []
    state.labels_changed.connect(seen.append)
    assert not state.label_boxes([(0, 0, 150)], "tumor")  # no labels loaded
    state.set_labels(LabelSet(SLIDE))
    assert state.label_boxes([(0, 0, 150), (150, 0, 150)], "tumor")
    assert not state.label_boxes([(0, 0, 150)], "tumor")  # nothing changed: no undo step
    assert state.label_boxes([(0, 0, 150)], "stroma")
    assert state.undo_labels() and state.labels.get((0, 0, 150)) == "tumor"
    assert state.undo_labels() and len(state.labels) == 0
    assert not state.undo_labels()
    assert state.redo_labels() and len(state.labels) == 2
    assert state.can_redo_labels
    state.label_boxes([(300, 0, 150)], "tumor")
    assert not state.can_redo_labels  # a new change drops what was undone
    state.set_slide(None)  # closing the slide drops its labels and their history
    assert state.labels is None and not state.can_undo_labels
    assert len(seen) == 8
