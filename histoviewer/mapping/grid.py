"""The patch grid: where on a slide each patch of a tissue map lies.

A model sees patches of ``info.patch_size`` pixels at ``info.mpp`` microns per pixel
(150 px at 0.495 um/px in the recipe). On a slide of another resolution the patch
covers the same microns, so its size in level-0 pixels is
``info.patch_size * info.mpp / slide.mpp``. It is read from the pyramid level closest
to the model's resolution (never coarser), and the preprocessing resizes it to the
network's input size. Only whole patches are used: the grid never runs past the
slide's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from histoviewer.errors import SlideError

if TYPE_CHECKING:
    from histoviewer.model import ModelInfo
    from histoviewer.slide import SlideReader


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of a patch grid on one slide.

    ``patch_size`` and ``stride`` are in level-0 pixels; ``origin`` is the level-0
    position of patch (0, 0). Patches are read from pyramid level ``level``
    (downsample ``downsample``) as ``read_size`` x ``read_size`` regions of that
    level. ``stride_model`` is the stride the user asked for, in model pixels.
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

    def __post_init__(self) -> None:
        if self.read_size == 0:
            object.__setattr__(self, "read_size", self.patch_size)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def patch_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a patch in level-0 pixels."""
        return patch_box(self.origin, self.patch_size, self.stride, row, col)

    def read_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of a patch in the pixels of ``level`` (what read_region takes)."""
        x, y, _, _ = self.patch_box(row, col)
        return round(x / self.downsample), round(y / self.downsample)

    def patch_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of the patch containing level-0 point (x, y) whose centre is nearest.

        None when no patch contains the point (outside the grid).
        """
        return patch_at(self.origin, self.patch_size, self.stride, self.rows, self.cols, x, y)


def patch_box(
    origin: tuple[int, int], patch_size: int, stride: int, row: int, col: int
) -> tuple[int, int, int, int]:
    """(x, y, width, height) in level-0 px of patch (row, col) of a grid."""
    return (origin[0] + col * stride, origin[1] + row * stride, patch_size, patch_size)


def patch_at(
    origin: tuple[int, int],
    patch_size: int,
    stride: int,
    rows: int,
    cols: int,
    x: float,
    y: float,
) -> tuple[int, int] | None:
    """The patch holding level-0 point (x, y) with the nearest centre, or None.

    With overlapping patches several contain the point; the squared distance to a
    centre is separable in rows and columns, so the nearest one is found per axis.
    """
    col = _nearest_index(x - origin[0], patch_size, stride, cols)
    row = _nearest_index(y - origin[1], patch_size, stride, rows)
    if row is None or col is None:
        return None
    return row, col


def _nearest_index(pos: float, patch_size: int, stride: int, count: int) -> int | None:
    # Patch i spans [i * stride, i * stride + patch_size).
    if count <= 0 or not math.isfinite(pos):
        return None
    hi = min(math.floor(pos / stride), count - 1)
    lo = max(math.floor((pos - patch_size) / stride) + 1, 0)
    if lo > hi:
        return None
    best = round((pos - patch_size / 2) / stride)
    return min(max(best, lo), hi)


def make_grid(slide: SlideReader, info: ModelInfo, stride: int = 150) -> PatchGrid:
    """The grid of whole patches of ``info``'s scale over ``slide``.

    ``stride`` is in model pixels (at ``info.mpp``): 150 gives the recipe's
    non-overlapping grid, smaller values overlapping patches, larger values gaps.
    Raises SlideError when the slide is smaller than one patch.
    """
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive whole number of pixels, not {stride!r}")
    scale = info.mpp / slide.mpp  # level-0 px per model px
    patch = max(1, round(info.patch_size * scale))
    step = max(1, round(stride * scale))
    width, height = slide.dimensions
    if width < patch or height < patch:
        name = slide.path.name if getattr(slide, "path", None) else "the slide"
        raise SlideError(
            f"{name} is too small to map: it is {width} x {height} px "
            f"({width * slide.mpp:.0f} x {height * slide.mpp:.0f} um at {slide.mpp:g} um/px) "
            f"but one patch is {patch} x {patch} px "
            f"({info.patch_size * info.mpp:.0f} x {info.patch_size * info.mpp:.0f} um)"
        )
    cols = (width - patch) // step + 1
    rows = (height - patch) // step + 1
    level = slide.best_level_for_downsample(scale) if scale > 1 else 0
    downsample = float(slide.level_downsamples[level])
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
    )
