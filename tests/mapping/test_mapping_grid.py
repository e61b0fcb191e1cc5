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


def test_recipe_grid_covers_a_5000_px_slide_to_its_edges():
    grid = make_grid(SizeOnly(5000, 5000), INFO)
    # 33 whole patches reach 4950 px; a 34th, shifted inward, covers the last 50 px.
    assert (grid.rows, grid.cols, grid.count) == (34, 34, 1156)
    assert (grid.patch_size, grid.stride, grid.level, grid.read_size) == (150, 150, 0, 150)
    assert grid.patch_box(32, 32) == (4800, 4800, 150, 150)
    assert grid.patch_box(33, 33) == (4850, 4850, 150, 150)  # ends at the edge
    assert grid.patch_box(33, 0) == (0, 4850, 150, 150)
    # Its cell is only what the 33rd patch left: the last 50 px.
    assert grid.cell_box(33, 33) == (4950, 4950, 5000, 5000)
    assert grid.cell_box(0, 0) == (0, 0, 150, 150)


def test_an_exact_fit_needs_no_shifted_patch():
    grid = make_grid(SizeOnly(4950, 3000), INFO)
    assert (grid.rows, grid.cols) == (20, 33)
    assert grid.patch_box(19, 32) == (4800, 2850, 150, 150)


@pytest.mark.parametrize(
    ("width", "height", "stride"),
    [(5000, 3000, 150), (5000, 3000, 75), (1234, 777, 40), (5000, 5000, 200), (999, 1501, 1500)],
)
def test_cells_tile_the_slide_and_patches_stay_on_it(width, height, stride):
    grid = make_grid(SizeOnly(width, height), INFO, stride=stride)
    ex, ey = grid.cell_edges()
    assert (ex[0], ex[-1], ey[0], ey[-1]) == (0, width, 0, height)
    assert np.all(np.diff(ex) > 0) and np.all(np.diff(ey) > 0)
    # Areas add up to the slide, nothing counted twice, nothing past the edge.
    assert grid.cell_areas().sum() == pytest.approx(width * height)
    xs, ys = grid.patch_starts()
    assert xs.min() >= 0 and xs.max() + grid.patch_size <= width
    assert ys.min() >= 0 and ys.max() + grid.patch_size <= height
    if stride <= 150:
        # Every pixel of the slide is seen by some patch.
        assert xs[-1] + grid.patch_size == width and ys[-1] + grid.patch_size == height
        assert np.all(np.diff(xs) <= grid.patch_size)
    for r in range(grid.rows):
        x0, y0, x1, y1 = grid.cell_box(r, grid.cols - 1)
        assert x0 < x1 == width and 0 <= y0 < y1 <= height


def test_overlapping_stride_gives_more_patches_that_overlap():
    grid = make_grid(SizeOnly(5000, 3000), INFO, stride=75)
    assert grid.cols == -(-(5000 - 150) // 75) + 1 == 66
    assert grid.rows == (3000 - 150) // 75 + 1 == 39  # an exact fit
    assert grid.patch_box(0, 1) == (75, 0, 150, 150)
    assert grid.patch_box(0, 65) == (4850, 0, 150, 150)
    assert grid.stride_model == 75
    # Cells are stride x stride around each patch's centre; the outer ones reach the edge.
    assert grid.cell_box(1, 1) == (112.5, 112.5, 187.5, 187.5)
    assert grid.cell_box(0, 0) == (0, 0, 112.5, 112.5)


def test_stride_larger_than_a_patch_leaves_gaps_but_cells_stay_on_the_slide():
    grid = make_grid(SizeOnly(5000, 5000), INFO, stride=1500)
    assert (grid.rows, grid.cols) == (4, 4)
    assert grid.patch_box(1, 3) == (4500, 1500, 150, 150)
    # A patch stands for its stride x stride cell, cut at the slide's edge.
    assert grid.cell_box(1, 3) == (3825, 825, 5000, 2325)
    assert grid.cell_areas().sum() == pytest.approx(5000 * 5000)


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
    assert (grid.rows, grid.cols) == (7, 10)  # 2000 = 6 x 300 + 200: a shifted 7th row
    assert grid.read_origin(2, 3) == (450, 300)
    assert grid.read_origin(6, 9) == (1350, 850)  # (3000 - 300) / 2, (2000 - 300) / 2
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
    assert grid.cols == -(-(1000 - 75) // 75) + 1 == 14


def test_slide_smaller_than_a_patch_names_both_sizes():
    slide = ArraySlide(np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(SlideError) as info:
        make_grid(slide, INFO)
    message = str(info.value)
    assert "120 x 100 px" in message and "150 x 150 px" in message
    assert "59 x 50 µm" in message and "74 x 74 µm" in message


@pytest.mark.parametrize("stride", [150, 75, 40])
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
    assert grid.patch_at(4950, 10) == (0, 33)  # the strip the shifted patch covers
    assert grid.patch_at(4999.9, 4999.9) == (33, 33)
    assert grid.patch_at(5000, 10) is None
    assert grid.patch_at(-0.1, 10) is None
    assert grid.patch_at(float("nan"), 10) is None


def test_patch_at_in_a_gapped_grid_selects_the_cell():
    grid = make_grid(SizeOnly(1000, 1000), INFO, stride=300)
    # Patches at 0, 300, 600, 850 (shifted); cells split halfway between centres.
    assert grid.patch_at(200, 10) == (0, 0)  # in the gap, nearer patch 0's centre
    assert grid.patch_at(240, 10) == (0, 1)
    assert grid.patch_at(999, 999) == (3, 3)
