"""The patch grid: where on a slide each patch of a tissue map lies.

A model sees patches of ``info.patch_size`` pixels at ``info.mpp`` microns per pixel
(150 px at 0.495 µm/px in the recipe). On a slide of another resolution the patch
covers the same microns, so its size in level-0 pixels is
``info.patch_size * info.mpp / slide.mpp``. It is read from the pyramid level closest
to the model's resolution (never coarser), and the preprocessing brings it to the
model's own patch scale before the network's input size.

The grid covers the whole slide, edges included. Patches start every ``stride``
pixels; the last column and row, which would run past the slide, are read shifted
inward so that they end at the slide's edge: the network only ever sees real
pixels, never padding. Each patch stands for a *cell*: the part of the slide
nearer to its centre than to any other patch's (stride x stride inside the slide,
the first and last cells reaching the slide's edges). Cells tile the slide without
overlap or overhang, so areas add up to the slide's area, and they are what the
overlay paints, what a click selects and what the GeoJSON export draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from histoviewer.errors import SlideError

if TYPE_CHECKING:
    from histoviewer.model import ModelInfo
    from histoviewer.slide import SlideReader


class GridLayout:
    """The geometry a patch grid and a tissue map share (level-0 pixels).

    Subclasses provide ``rows``, ``cols``, ``patch_size``, ``stride``, ``origin``
    (level-0 position of the grid's top-left corner) and ``extent`` (width and height
    of the area the grid covers from ``origin``; ``(0, 0)`` for maps written before
    edges were mapped, whose grid ends with its last whole patch).
    """

    rows: int
    cols: int
    patch_size: int
    stride: int
    origin: tuple[int, int]
    extent: tuple[int, int]

    @property
    def covered(self) -> tuple[int, int]:
        """Width and height of the area the grid covers, from ``origin``."""
        w, h = self.extent
        if w > 0 and h > 0:
            return int(w), int(h)
        reach = self.patch_size - self.stride
        return (self.cols * self.stride + reach, self.rows * self.stride + reach)

    def patch_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) in level-0 pixels of the patch read for (row, col).

        Patches of the last column and row are shifted inward to end at the edge.
        """
        w, h = self.covered
        x = _start(col, self.stride, self.patch_size, w)
        y = _start(row, self.stride, self.patch_size, h)
        return (self.origin[0] + x, self.origin[1] + y, self.patch_size, self.patch_size)

    def patch_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """int64 level-0 left edges of the columns' patches and top edges of the rows'."""
        w, h = self.covered
        xs = [_start(c, self.stride, self.patch_size, w) for c in range(self.cols)]
        ys = [_start(r, self.stride, self.patch_size, h) for r in range(self.rows)]
        return (
            self.origin[0] + np.asarray(xs, dtype=np.int64),
            self.origin[1] + np.asarray(ys, dtype=np.int64),
        )

    def cell_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 level-0 boundaries of the cells: ``cols + 1`` in x, ``rows + 1`` in y."""
        w, h = self.covered
        ex = _edges(self.cols, self.stride, self.patch_size, w) + self.origin[0]
        ey = _edges(self.rows, self.stride, self.patch_size, h) + self.origin[1]
        return ex, ey

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the level-0 area patch (row, col) stands for."""
        ex, ey = self.cell_edges()
        return float(ex[col]), float(ey[row]), float(ex[col + 1]), float(ey[row + 1])

    def cell_areas(self) -> np.ndarray:
        """float64 (rows, cols): each cell's area in level-0 pixels squared."""
        ex, ey = self.cell_edges()
        return np.outer(np.diff(ey), np.diff(ex))

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 level-0 centres of the cells: ``cols`` in x, ``rows`` in y."""
        ex, ey = self.cell_edges()
        return (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2

    def cells_at(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The column of the cells holding each level-0 ``xs`` and the row of those
        holding each ``ys`` (intp), -1 outside the grid (or NaN): :meth:`patch_at` for
        whole rows and columns of points (pixels of a picture laid over the slide)."""
        ex, ey = self.cell_edges()
        return _cell_index(np.asarray(xs, dtype=np.float64), ex), _cell_index(
            np.asarray(ys, dtype=np.float64), ey
        )

    def patch_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of the cell holding level-0 point (x, y), or None outside the grid.

        Where patches overlap this is the patch whose centre is nearest.
        """
        cols, rows = self.cells_at(np.array([x]), np.array([y]))
        if cols[0] < 0 or rows[0] < 0:
            return None
        return int(rows[0]), int(cols[0])


def _cell_index(coords: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The cell (between ``edges``) holding each coordinate; -1 outside them or NaN."""
    index = np.searchsorted(edges, coords, side="right") - 1
    inside = (coords >= edges[0]) & (coords < edges[-1])
    return np.where(inside, np.minimum(index, len(edges) - 2), -1).astype(np.intp)


def _start(index: int, stride: int, patch: int, length: int) -> int:
    # The last patches are shifted inward so that they end at the edge.
    return max(0, min(index * stride, length - patch))


def _edges(count: int, stride: int, patch: int, length: int) -> np.ndarray:
    # Between neighbours, halfway between their (unshifted) centres; the outer cells
    # reach the edges of the covered area.
    inner = np.arange(1, count, dtype=np.float64) * stride + (patch - stride) / 2
    return np.clip(np.concatenate(([0.0], inner, [float(length)])), 0.0, float(length))


def patches_across(length: int, patch: int, stride: int) -> int:
    """How many patches cover ``length`` pixels (``length >= patch``).

    With ``stride <= patch`` every pixel lies in some patch; with gaps (``stride >
    patch``) every pixel lies in some cell. The last patch may be shifted inward.
    """
    if stride <= patch:
        return max(1, -(-(length - patch) // stride) + 1)
    return max(1, -(-(2 * length - patch - stride) // (2 * stride)) + 1)


@dataclass(frozen=True)
class PatchGrid(GridLayout):
    """Geometry of a patch grid on one slide.

    ``patch_size`` and ``stride`` are in level-0 pixels; ``origin`` is the level-0
    position of patch (0, 0) and ``extent`` the size of the area covered (the slide).
    Patches are read from pyramid level ``level`` (downsample ``downsample``) as
    ``read_size`` x ``read_size`` regions of that level. ``stride_model`` is the
    stride the user asked for, in model pixels.
    """

    rows: int
    cols: int
    patch_size: int
    stride: int
    level: int = 0
    downsample: float = 1.0
    read_size: int = 0
    origin: tuple[int, int] = (0, 0)
    stride_model: int = 150
    extent: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.read_size == 0:
            object.__setattr__(self, "read_size", self.patch_size)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def read_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of a patch in the pixels of ``level`` (what read_region takes)."""
        x, y, _, _ = self.patch_box(row, col)
        return round(x / self.downsample), round(y / self.downsample)


def slide_patch(slide: SlideReader, info: ModelInfo) -> tuple[int, int, float]:
    """(side, level, downsample): one model patch's side in the slide's level-0 pixels,
    and the pyramid level it is read from (the closest to the model's scale, never
    coarser) with that level's downsample."""
    scale = info.mpp / slide.mpp  # level-0 px per model px
    side = max(1, round(info.patch_size * scale))
    level = slide.best_level_for_downsample(scale) if scale > 1 else 0
    return side, level, float(slide.level_downsamples[level])


def make_grid(slide: SlideReader, info: ModelInfo, stride: int | None = None) -> PatchGrid:
    """The grid of patches of ``info``'s scale over the whole of ``slide``.

    ``stride`` is in model pixels (at ``info.mpp``): None (or the model's patch size,
    150 for the recipe) gives non-overlapping patches, smaller values overlapping
    patches, larger values gaps. Raises SlideError when the slide is smaller than one
    patch.
    """
    if stride is None:
        stride = info.patch_size
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive whole number of pixels, not {stride!r}")
    patch, level, downsample = slide_patch(slide, info)
    step = max(1, round(stride * info.mpp / slide.mpp))
    width, height = slide.dimensions
    if width < patch or height < patch:
        name = slide.path.name if getattr(slide, "path", None) else "the slide"
        raise SlideError(
            f"{name} is too small to map: it is {width} x {height} px "
            f"({width * slide.mpp:.0f} x {height * slide.mpp:.0f} µm at {slide.mpp:g} µm/px) "
            f"but one patch is {patch} x {patch} px "
            f"({info.patch_size * info.mpp:.0f} x {info.patch_size * info.mpp:.0f} µm)"
        )
    cols = patches_across(width, patch, step)
    rows = patches_across(height, patch, step)
    read_size = max(1, round(patch / downsample))
    return PatchGrid(
        rows=rows,
        cols=cols,
        patch_size=patch,
        stride=step,
        level=level,
        downsample=downsample,
        read_size=read_size,
        origin=(0, 0),
        stride_model=stride,
        extent=(width, height),
    )
