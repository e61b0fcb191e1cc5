"""Telling tissue from empty glass, so that mapping can skip the glass.

Empty glass in a bright-field scan is bright and nearly grey; H&E tissue, however
pale, is tinted pink or purple, and dense tissue is darker. A pixel of a low-resolution
thumbnail counts as tissue when its saturation exceeds a threshold (Otsu's threshold
on the slide's own saturation histogram, kept within a safe band) or when it is
clearly darker than glass. Each patch then gets the fraction of its area that is
tissue; patches below ``min_tissue`` are background and are never read at full
resolution nor classified.

The band and the low default ``min_tissue`` err on the side of tissue: adipose
tissue, mostly white with thin pink membranes, must stay tissue. A patch lying wholly
inside a fat cell shows no tissue at all (about one in seven Kather ADIPOSE tiles looks
like glass); such a patch is still classified when its four neighbours are tissue.
Grid borders count as background for that rule, so glass along the slide edge is
skipped.

A fluorescence scan is the other way round: its background is black and its tissue
glows. When most of the thumbnail is black and bright glass does not outnumber dim
glow (:func:`histoviewer.slide.stain.is_dark_background`, the test the stain check
uses), a pixel is tissue when its brightest channel reaches
:data:`~histoviewer.slide.stain.BLACK_LEVEL`; saturation means nothing there.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from histoviewer.slide.stain import BLACK_LEVEL, is_dark_background

if TYPE_CHECKING:
    from histoviewer.mapping.grid import PatchGrid
    from histoviewer.slide import SlideReader

log = logging.getLogger(__name__)

#: Patches with less tissue than this fraction of their area are background.
DEFAULT_MIN_TISSUE = 0.05
# Saturation threshold band: below 0.04 sensor noise on glass would count as tissue;
# above 0.08 pale eosin-stained stroma (saturation ~0.12-0.15) could be lost.
_SAT_MIN, _SAT_MAX = 0.04, 0.08
# Anything darker than this (max channel, 0-1) is not glass, whatever its colour.
_DARK = 0.75
# Thumbnail pixels per patch side: enough to measure a fraction, small enough to be fast.
_PIXELS_PER_PATCH = 32
_MAX_THUMBNAIL = 4096


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """bool (H, W): True where an RGB uint8 image (H, W, 3) shows tissue, not background.

    Background is bright glass on a brightfield image and black on a dark-background
    (fluorescence) image; the image as a whole decides which.
    """
    rgb = np.asarray(image)[..., :3]
    # Max and min on uint8 first: no float copy of a (up to 4096 px) RGB thumbnail.
    vmax = rgb.max(axis=-1)
    if is_dark_background(rgb):
        return vmax >= BLACK_LEVEL
    vmin = rgb.min(axis=-1)
    sat = (vmax - vmin).astype(np.float32) / np.maximum(vmax, 1).astype(np.float32)
    threshold = min(max(otsu_threshold(sat), _SAT_MIN), _SAT_MAX)
    return (sat >= threshold) | (vmax <= round(_DARK * 255))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (0.0 for a constant input)."""
    hist, edges = np.histogram(np.asarray(values).ravel(), bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1e-12)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    between[(weight0 == 0) | (weight1 == 0)] = -1
    idx = int(np.argmax(between))
    return float(edges[idx + 1]) if between[idx] > 0 else 0.0


def thumbnail_size(slide: SlideReader, grid: PatchGrid) -> int:
    """Longest side of a thumbnail giving about 32 pixels per patch side."""
    longest = max(slide.dimensions)
    per_px = _PIXELS_PER_PATCH / grid.patch_size
    return int(min(max(math.ceil(longest * per_px), 64), _MAX_THUMBNAIL, max(longest, 1)))


def tissue_fractions(
    slide: SlideReader, grid: PatchGrid, *, thumbnail: np.ndarray | None = None
) -> np.ndarray:
    """float32 (rows, cols): the tissue fraction of each patch of ``grid``.

    Computed once from a thumbnail of the whole slide (read here unless given).
    """
    if thumbnail is None:
        thumbnail = slide.thumbnail(thumbnail_size(slide, grid))
    mask = tissue_mask(thumbnail)
    width, height = slide.dimensions
    sx = mask.shape[1] / width
    sy = mask.shape[0] / height
    # Summed-area table: the tissue count of any box in O(1).
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    x0, y0 = grid.patch_starts()
    cx0, cx1 = _box_edges(x0, grid.patch_size, sx, mask.shape[1])
    cy0, cy1 = _box_edges(y0, grid.patch_size, sy, mask.shape[0])
    inside = (
        table[cy1[:, None], cx1[None, :]]
        - table[cy0[:, None], cx1[None, :]]
        - table[cy1[:, None], cx0[None, :]]
        + table[cy0[:, None], cx0[None, :]]
    )
    area = (cy1 - cy0)[:, None] * (cx1 - cx0)[None, :]
    return (inside / area).astype(np.float32)


def _box_edges(start: np.ndarray, size: int, scale: float, limit: int) -> tuple[np.ndarray, ...]:
    lo = np.round(start * scale).astype(np.int64)
    hi = np.round((start + size) * scale).astype(np.int64)
    # Downscaling blurs tissue a pixel or so into the glass beside it; where a patch
    # spans enough pixels, its outer ring is left out so that the blur does not count.
    if size * scale >= 6:
        lo, hi = lo + 1, hi - 1
    lo = np.clip(lo, 0, limit - 1)
    hi = np.maximum(np.clip(hi, 1, limit), lo + 1)
    return lo, hi


def drop_isolated(background: np.ndarray) -> np.ndarray:
    """``background`` without patches whose four neighbours are all tissue.

    A patch-sized hole inside tissue is usually the inside of a fat cell or a gland
    lumen, not glass; classifying it costs little and keeps adipose tissue whole.
    """
    padded = np.pad(background, 1, constant_values=True)
    neighbour = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return background & neighbour


def background_patches(
    slide: SlideReader, grid: PatchGrid, *, min_tissue: float = DEFAULT_MIN_TISSUE
) -> np.ndarray:
    """bool (rows, cols): True for patches that are (nearly) empty glass."""
    fractions = tissue_fractions(slide, grid)
    background = drop_isolated(fractions < min_tissue)
    log.info(
        "background: %d of %d patches below %.0f %% tissue",
        int(background.sum()),
        background.size,
        100 * min_tissue,
    )
    return background
