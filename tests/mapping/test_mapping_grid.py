"""Patch grid geometry: sizes, strides, other resolutions, point lookup."""

from __future__ import annotations

import numpy as np
import pytest
from mapping_support import PyramidSlide

from histoviewer.errors import SlideError
from histoviewer.mapping.grid import PatchGrid, make_grid
from histoviewer.model import ModelInfo
from histoviewer.slide import ArraySlide, SlideReader


class SizeOnly(SlideReader):
    """Geometry without pixels: grids of big slides cost nothing."""

    def __init__(self, width: int, height: int, mpp: float = 0.495) -> None:
        self.level_dimensions = ((width, height),)
        self.level_downsamples = (1.0,)
        self.mpp = mpp


INFO = ModelInfo.recipe()


def test_recipe_grid_on_a_5000_px_slide_is_33_by_33():
    grid = make_grid(SizeOnly(5000, 5000), INFO)
    assert (grid.rows, grid.cols, grid.count) == (33, 33, 1089)
    assert (grid.patch_size, grid.stride, grid.level, grid.read_size) == (150, 150, 0, 150)
    # Whole patches only: the last one ends inside the slide.
    x, y, w, h = grid.patch_box(32, 32)
    assert (x, y, w, h) == (4800, 4800, 150, 150)
    assert x + w <= 5000


def test_overlapping_stride_gives_more_patches_that_overlap():
    grid = make_grid(SizeOnly(5000, 3000), INFO, stride=75)
    assert grid.cols == (5000 - 150) // 75 + 1 == 65
    assert grid.rows == (3000 - 150) // 75 + 1 == 39
    assert grid.patch_box(0, 1) == (75, 0, 150, 150)
    assert grid.stride_model == 75


def test_stride_larger_than_a_patch_leaves_gaps():
    grid = make_grid(SizeOnly(5000, 5000), INFO, stride=1500)
    assert (grid.rows, grid.cols) == (4, 4)
    assert grid.patch_box(1, 3) == (4500, 1500, 150, 150)


@pytest.mark.parametrize("stride", [0, -5, 1.5])
def test_bad_stride_is_refused(stride):
    with pytest.raises(ValueError, match="stride"):
        make_grid(SizeOnly(1000, 1000), INFO, stride=stride)


def test_finer_slide_reads_the_same_microns_from_a_lower_level():
    # 0.2475 um/px is exactly twice the model's resolution: a patch is 300 level-0 px,
    # read as 150 px from level 1 (downsample 2).
    slide = PyramidSlide(np.full((2000, 3000, 3), 200, np.uint8), mpp=0.2475, levels=3)
    grid = make_grid(slide, INFO)
    assert (grid.patch_size, grid.stride) == (300, 300)
    assert (grid.level, grid.downsample, grid.read_size) == (1, 2.0, 150)
    assert (grid.rows, grid.cols) == (6, 10)
    assert grid.read_origin(2, 3) == (450, 300)
    # Same microns: 300 px * 0.2475 um/px == 150 px * 0.495 um/px.
    assert grid.patch_size * slide.mpp == pytest.approx(INFO.patch_microns)


def test_a_bit_finer_slide_reads_level_0_and_lets_preprocess_resize():
    slide = PyramidSlide(np.full((1000, 1000, 3), 200, np.uint8), mpp=0.3, levels=2)
    grid = make_grid(slide, INFO)
    assert grid.patch_size == round(150 * 0.495 / 0.3) == 248
    assert (grid.level, grid.read_size) == (0, 248)


def test_coarser_slide_uses_fewer_level_0_pixels_per_patch():
    grid = make_grid(SizeOnly(1000, 1000, mpp=0.99), INFO)
    assert (grid.patch_size, grid.stride, grid.level, grid.read_size) == (75, 75, 0, 75)
    assert grid.cols == (1000 - 75) // 75 + 1


def test_slide_smaller_than_a_patch_names_both_sizes():
    slide = ArraySlide(np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(SlideError) as info:
        make_grid(slide, INFO)
    message = str(info.value)
    assert "120 x 100 px" in message and "150 x 150 px" in message
    assert "59 x 50 um" in message and "74 x 74 um" in message


@pytest.mark.parametrize("stride", [150, 75, 40, 200])
def test_patch_at_finds_the_nearest_containing_patch(stride):
    grid = PatchGrid(rows=5, cols=7, patch_size=150, stride=stride, origin=(10, 20))
    rng = np.random.default_rng(stride)
    width = 10 + (grid.cols - 1) * stride + 150
    height = 20 + (grid.rows - 1) * stride + 150
    for x, y in rng.uniform(-50, [width + 50, height + 50], size=(400, 2)):
        best, best_dist = None, None
        for r in range(grid.rows):
            for c in range(grid.cols):
                bx, by, w, h = grid.patch_box(r, c)
                if bx <= x < bx + w and by <= y < by + h:
                    d = (x - bx - w / 2) ** 2 + (y - by - h / 2) ** 2
                    if best_dist is None or d < best_dist - 1e-9:
                        best, best_dist = (r, c), d
        found = grid.patch_at(x, y)
        if best is None:
            assert found is None
        else:
            bx, by, w, h = grid.patch_box(*found)
            assert bx <= x < bx + w and by <= y < by + h
            d = (x - bx - w / 2) ** 2 + (y - by - h / 2) ** 2
            assert d == pytest.approx(best_dist)


def test_patch_at_edges():
    grid = make_grid(SizeOnly(5000, 5000), INFO)
    assert grid.patch_at(0, 0) == (0, 0)
    assert grid.patch_at(149.9, 0) == (0, 0)
    assert grid.patch_at(150, 0) == (0, 1)
    assert grid.patch_at(4949.9, 4949.9) == (32, 32)
    assert grid.patch_at(4950, 10) is None  # the strip past the last whole patch
    assert grid.patch_at(-0.1, 10) is None
    assert grid.patch_at(float("nan"), 10) is None
