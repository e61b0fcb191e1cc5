"""Deterministic H&E-like pictures, computed from absolute pixel coordinates.

Every pixel is a pure function of its position and the seed, so any region
(or tile, or lower pyramid level) can be made on its own and agrees with its
neighbours: a 100k x 100k slide is written tile by tile without ever existing
in memory. The look: white glass around irregular tissue islands, pink
fibrous stroma (eosin), purple elliptical nuclei (haematoxylin) dense in some
areas and sparse in others, mixed with Beer-Lambert absorbance like real stain.
"""

from __future__ import annotations

import numpy as np

# Absorbance of each stain per unit concentration in R, G, B (tuned by eye to
# typical H&E scans: stroma ~ (235, 160, 200), nuclei ~ (90, 60, 150)).
_OD_EOSIN = np.array([0.16, 0.95, 0.45], np.float32)
_OD_HAEMATOXYLIN = np.array([0.85, 1.00, 0.28], np.float32)
_CELL = 18.0  # nucleus grid spacing in level-0 pixels (~9 µm at 0.495 µm/px)
_BAND_ROWS = 256  # rows made at a time, bounding temporary memory


def he_region(
    x: int, y: int, width: int, height: int, *, downsample: float = 1.0, seed: int = 0
) -> np.ndarray:
    """The (height, width, 3) uint8 RGB region at ``(x, y)`` of a synthetic slide.

    ``x``, ``y`` are in the pixels of a level ``downsample`` times smaller than
    level 0 (pixel ``(i, j)`` samples level-0 position ``((i + 0.5) * ds,
    (j + 0.5) * ds)``), so lower pyramid levels are made directly.
    """
    if width <= 0 or height <= 0:
        return np.zeros((max(height, 0), max(width, 0), 3), np.uint8)
    out = np.empty((height, width, 3), np.uint8)
    xs = ((np.arange(width, dtype=np.float64) + x + 0.5) * downsample).astype(np.float32)
    for top in range(0, height, _BAND_ROWS):
        rows = min(_BAND_ROWS, height - top)
        ys = ((np.arange(rows, dtype=np.float64) + y + top + 0.5) * downsample).astype(np.float32)
        out[top : top + rows] = _render(xs, ys, downsample, seed)
    return out


def synthetic_he(width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """A whole (height, width, 3) uint8 H&E-like image (5000 x 5000 takes ~2 s)."""
    return he_region(0, 0, width, height, seed=seed)


def _render(xs: np.ndarray, ys: np.ndarray, downsample: float, seed: int) -> np.ndarray:
    # Tissue islands: smooth field, soft 8 px edge.
    tissue = _coarse(xs, ys, 16.0, lambda gx, gy: _fbm(gx, gy, 900.0, 3, seed))
    tissue = _smoothstep(0.42, 0.46, tissue)
    # Fibres: noise stretched along x, plus slow variation of staining.
    fibres = _noise(xs, ys, 70.0, 9.0, seed + 11)
    stain = _noise(xs, ys, 260.0, 260.0, seed + 12)
    eosin = tissue * (0.25 + 0.35 * fibres + 0.25 * stain)
    # Fat-like holes: round white gaps inside the tissue.
    holes = _smoothstep(0.74, 0.78, _noise(xs, ys, 55.0, 55.0, seed + 13))
    eosin *= 1.0 - 0.9 * holes
    nuclei = _nuclei(xs, ys, downsample, seed) * tissue * (1.0 - holes)
    haem = 0.06 * tissue + 1.25 * nuclei
    # Colour from a (eosin, haematoxylin) lookup table: far cheaper than exp()
    # per pixel and channel, with steps below one grey level.
    e = np.clip(eosin * np.float32(_LUT_STEPS / _EOSIN_MAX), 0, _LUT_STEPS - 1).astype(np.int32)
    h = np.clip(haem * np.float32(_LUT_STEPS / _HAEM_MAX), 0, _LUT_STEPS - 1).astype(np.int32)
    return np.take(_LUT, e * _LUT_STEPS + h, axis=0)


def _colour_table() -> np.ndarray:
    """RGB of every quantised (eosin, haematoxylin) pair by Beer-Lambert absorbance."""
    e = (np.arange(_LUT_STEPS, dtype=np.float32) + 0.5) * (_EOSIN_MAX / _LUT_STEPS)
    h = (np.arange(_LUT_STEPS, dtype=np.float32) + 0.5) * (_HAEM_MAX / _LUT_STEPS)
    od = e[:, None, None] * _OD_EOSIN + h[None, :, None] * _OD_HAEMATOXYLIN
    od += np.float32(0.03)  # glass is not pure white: a faint absorbance everywhere
    rgb = np.exp(-od) * np.float32(255.0)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)


_LUT_STEPS = 256
_EOSIN_MAX = 1.0
_HAEM_MAX = 1.6
_LUT = _colour_table()


def _nuclei(xs: np.ndarray, ys: np.ndarray, downsample: float, seed: int) -> np.ndarray:
    """Nucleus density in [0, 1]: one jittered ellipse per grid cell, if present."""
    cx = np.floor(xs / _CELL).astype(np.int64)
    cy = np.floor(ys / _CELL).astype(np.int64)
    ux, uy = np.unique(cx), np.unique(cy)
    # Per-cell parameters on the (small) grid of cells the region touches.
    centres_x = ((ux + 0.5) * _CELL).astype(np.float32)
    centres_y = ((uy + 0.5) * _CELL).astype(np.float32)
    density = _fbm(centres_x, centres_y, 380.0, 2, seed + 21)
    chance = 0.12 + 0.85 * _smoothstep(0.40, 0.68, density)
    gx, gy = np.meshgrid(ux, uy)
    present = _hash01(gx, gy, seed + 22) < chance
    jx = (0.3 + 0.4 * _hash01(gx, gy, seed + 23)) * _CELL
    jy = (0.3 + 0.4 * _hash01(gx, gy, seed + 24)) * _CELL
    # Radii kept inside the cell: only a pixel's own cell is drawn.
    rx = np.minimum(3.0 + 4.0 * _hash01(gx, gy, seed + 25), np.minimum(jx, _CELL - jx) - 0.5)
    ry = np.minimum(rx * (0.6 + 0.5 * _hash01(gx, gy, seed + 26)), np.minimum(jy, _CELL - jy) - 0.5)
    ix, iy = np.searchsorted(ux, cx), np.searchsorted(uy, cy)

    def per_pixel(grid: np.ndarray) -> np.ndarray:
        return grid[iy][:, ix]

    dx = (xs - (cx * _CELL).astype(np.float32))[None, :] - per_pixel(jx)
    dy = (ys - (cy * _CELL).astype(np.float32))[:, None] - per_pixel(jy)
    dist = (dx / per_pixel(rx)) ** 2 + (dy / per_pixel(ry)) ** 2
    # Soft edge about one pixel wide at this level's scale.
    edge = max(1.0, float(downsample)) * 0.35
    inside = np.clip((1.0 - dist) / edge + 0.5, 0.0, 1.0)
    return (inside * per_pixel(present)).astype(np.float32)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (integer hash, no state)."""
    h = (np.asarray(ix, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x8DA6B343)
    h ^= (np.asarray(iy, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0xD8163841)
    h ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 2**24)


def _noise(xs: np.ndarray, ys: np.ndarray, period_x: float, period_y: float, seed: int):
    """Smooth value noise in [0, 1] on the grid xs x ys (separable interpolation)."""
    u, v = xs / np.float32(period_x), ys / np.float32(period_y)
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    gx, gy = np.meshgrid(np.arange(i.min(), i.max() + 2), np.arange(j.min(), j.max() + 2))
    return _interpolate(_hash01(gx, gy, seed), u, v, smooth=True)


def _coarse(xs: np.ndarray, ys: np.ndarray, step: float, field) -> np.ndarray:
    """``field`` evaluated every ``step`` level-0 pixels and interpolated between.

    The coarse points are absolute multiples of ``step``, so separately made
    regions still agree; worth it for slow fields made of several octaves.
    """
    u, v = xs / np.float32(step), ys / np.float32(step)
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    gx = (np.arange(i.min(), i.max() + 2) * step).astype(np.float32)
    gy = (np.arange(j.min(), j.max() + 2) * step).astype(np.float32)
    return _interpolate(field(gx, gy), u, v, smooth=False)


def _interpolate(values: np.ndarray, u: np.ndarray, v: np.ndarray, *, smooth: bool) -> np.ndarray:
    """Bilinear (or smoothstep) interpolation of lattice ``values`` starting at floor(u/v)."""
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fx, fy = (u - i).astype(np.float32), (v - j).astype(np.float32)
    if smooth:
        fx, fy = _fade(fx), _fade(fy)
    i, j = i - i.min(), j - j.min()
    # Interpolate along x for every lattice row, then along y.
    a = values[:, i]
    along_x = a + (values[:, i + 1] - a) * fx[None, :]
    top = along_x[j]
    return top + (along_x[j + 1] - top) * fy[:, None]


def _fbm(xs: np.ndarray, ys: np.ndarray, period: float, octaves: int, seed: int) -> np.ndarray:
    """Fractal noise: octaves of halving period and weight, normalised to [0, 1]."""
    total = np.zeros((len(ys), len(xs)), np.float32)
    weight, norm = 1.0, 0.0
    for k in range(octaves):
        p = period / 2**k
        total += np.float32(weight) * _noise(xs, ys, p, p, seed + 101 * k)
        norm += weight
        weight *= 0.5
    return total / np.float32(norm)


def _fade(t: np.ndarray) -> np.ndarray:
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _smoothstep(lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    return _fade(np.clip((t - lo) / (hi - lo), 0.0, 1.0))
