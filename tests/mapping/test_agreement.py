"""A map against the true classes of the demo slide: overall and per-class agreement."""

from __future__ import annotations

import numpy as np
import pytest

from histoviewer.classes import class_colors, class_names
from histoviewer.errors import SlideError
from histoviewer.mapping.agreement import (
    agreement_text,
    class_agreement_rows,
    compare_with_truth,
    model_agreement_text,
)
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.slide.demo_slide import DemoTruth

NAMES = class_names()
T, S, E = NAMES.index("tumor"), NAMES.index("stroma"), NAMES.index("empty")
#: 3 x 4 cells: 5 tumour, 4 stroma, 3 empty glass.
TRUTH = DemoTruth(
    grid=np.array([[E, T, T, E], [S, T, T, S], [S, T, S, E]], dtype=np.int16),
    class_names=tuple(NAMES),
)


def map_of(
    labels: np.ndarray,
    *,
    names: list[str] = NAMES,
    patch: int = 150,
    extent: tuple[int, int] | None = None,
) -> TissueMap:
    """A map whose every cell is classified as ``labels`` says (-1: pending, -2: skipped
    as background), on a slide of ``extent`` (default: the grid's size)."""
    rows, cols = labels.shape
    extent = extent or (cols * patch, rows * patch)
    grid = PatchGrid(rows=rows, cols=cols, patch_size=patch, stride=patch, extent=extent)
    tmap = TissueMap.empty(grid, names, class_colors()[: len(names)], mpp=0.495)
    for (r, c), label in np.ndenumerate(labels):
        if label == -2:
            tmap.state[r, c] = BACKGROUND
        elif label >= 0:
            probs = np.full(len(names), 0.02, np.float32)
            probs[label] = 0.9
            tmap.probs[r, c] = probs
            tmap.state[r, c] = CLASSIFIED
    return tmap


def test_a_map_equal_to_the_truth_agrees_fully():
    result = compare_with_truth(map_of(TRUTH.grid), TRUTH)
    assert (result.agreed, result.compared, result.total, result.background) == (12, 12, 12, 0)
    assert result.fraction == 1.0
    assert agreement_text(result) == "Agreement with the true classes: 100.0 % (12 of 12 patches)"
    per_class = {c.name: (c.agreed, c.compared) for c in result.classes}
    assert per_class["tumor"] == (5, 5) and per_class["stroma"] == (4, 4)
    assert per_class["lympho"] == (0, 0)


def test_known_mistakes_give_the_exact_figures():
    labels = TRUTH.grid.astype(int).copy()
    labels[0, 1] = S  # a tumour cell called stroma
    labels[1, 0] = T  # a stroma cell called tumour
    labels[0, 0] = -2  # glass skipped as background: agrees with "empty"
    labels[1, 2] = -2  # a tumour cell skipped as background: a disagreement
    labels[2, 2] = -1  # a stroma cell not classified yet: not compared
    result = compare_with_truth(map_of(labels), TRUTH)
    assert (result.agreed, result.compared, result.total, result.background) == (8, 11, 12, 2)
    assert result.fraction == pytest.approx(8 / 11)
    assert agreement_text(result) == "Agreement with the true classes: 72.7 % (8 of 11 patches)"
    per_class = {c.name: (c.agreed, c.compared) for c in result.classes}
    assert per_class["tumor"] == (3, 5)
    assert per_class["stroma"] == (2, 3)
    assert per_class["empty"] == (3, 3)
    # The classifier alone: 7 of its 9 patches right; 1 tissue patch lost as glass.
    assert (result.classified, result.model_agreed, result.skipped_tissue) == (9, 7, 1)
    assert model_agreement_text(result) == (
        "On the 9 patches the model classified: 77.8 % (7). 1 tissue patch was skipped as glass."
    )
    assert class_agreement_rows(result) == [
        ("Tumour epithelium", "60.0 %", "3 of 5"),
        ("Simple stroma", "66.7 %", "2 of 3"),
        ("Empty (no tissue)", "100.0 %", "3 of 3"),
    ]


def test_a_map_with_nothing_classified_yet_says_so():
    result = compare_with_truth(map_of(np.full(TRUTH.grid.shape, -1)), TRUTH)
    assert (result.compared, result.fraction) == (0, None)
    assert agreement_text(result) == "Agreement with the true classes: – (no patch classified yet)"


def test_classes_are_matched_by_name_not_by_position():
    reordered = list(reversed(NAMES))
    labels = np.vectorize(lambda i: reordered.index(NAMES[i]))(TRUTH.grid)
    result = compare_with_truth(map_of(labels, names=reordered), TRUTH)
    assert result.agreed == 12
    # A model without the truth's classes never agrees on them.
    other = ["tumor", "stroma"]
    labels = np.where(TRUTH.grid == S, 1, 0)
    result = compare_with_truth(map_of(labels, names=other), TRUTH)
    assert (result.agreed, result.compared) == (9, 12)  # 5 tumour + 4 stroma


@pytest.mark.parametrize(
    ("tmap", "message"),
    [
        (map_of(np.zeros((3, 5), int)), "the slide is 750 x 450 px but the true classes describe"),
        (
            map_of(np.zeros((5, 6), int), patch=100, extent=(600, 450)),
            "the map's patches are 100 px every 100 px, the true classes are given per 150 px",
        ),
    ],
)
def test_a_truth_whose_grid_does_not_match_the_map_is_a_clear_error(tmap, message):
    with pytest.raises(SlideError, match=message) as info:
        compare_with_truth(tmap, TRUTH)
    assert "cannot be compared with the true classes" in str(info.value)
    assert "stride of 150 px" in str(info.value)


def test_a_map_saved_before_extents_is_compared_by_its_grid():
    tmap = map_of(TRUTH.grid)
    tmap.extent = (0, 0)
    assert compare_with_truth(tmap, TRUTH).agreed == 12
    small = map_of(np.zeros((2, 4), int))
    small.extent = (0, 0)
    with pytest.raises(SlideError, match="4 x 2 patches, the true classes 4 x 3 cells"):
        compare_with_truth(small, TRUTH)
