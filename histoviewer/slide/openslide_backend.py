"""Optional OpenSlide backend for formats tifffile and Pillow cannot read (MRXS, SCN, ...).

Installed with the ``openslide`` extra (openslide-python + openslide-bin).
Nothing here is imported unless :func:`available` says the module exists.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from histoviewer.errors import SlideError
from histoviewer.slide import mpp as mpp_
from histoviewer.slide.base import SlideReader
from histoviewer.slide.pixels import PixelLayout

logger = logging.getLogger(__name__)

#: Extensions only OpenSlide opens (tifffile reads .svs, .ndpi, .tif itself).
OPENSLIDE_EXTENSIONS = (".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
MPP_SOURCE = "OpenSlide MPP"
# openslide-python un-premultiplies its RGBA; alpha is 0 where nothing was scanned.
_RGBA = PixelLayout(dtype=np.dtype(np.uint8), colours=3, alpha=True)

# OpenSlide takes a region's corner in level-0 pixels X and paints the level from
# X / downsample. Where the downsample is not whole that is a fraction, and cairo
# interpolates between stored pixels; it copies them unchanged only when the
# fraction is within about 1/256 px of a whole pixel (measured with OpenSlide
# 4.0.1; cairo itself treats less than 1/512 px as whole). So a read starts at an
# "aligned" level pixel, one that a whole X hits this closely, at or before the
# wanted one, and the pixels before the wanted ones are cropped.
_ALIGNED_WITHIN = 1 / 1024
# How far back an aligned start may lie, bounding the extra pixels read. Aligned
# pixels come every 512 / downsample pixels on average, but downsamples a hair
# off a whole number (e.g. 4.0001) have them in clusters thousands of pixels
# apart; between clusters the read starts at the nearest X instead: shifted by
# under 1 / (2 x downsample) px and interpolated, as OpenSlide's own callers get.
_MAX_ALIGN_SLACK = 512
# OpenSlide splits larger reads at level-0 positions it truncates to whole
# numbers, which would break the alignment: no read here is larger.
_MAX_READ = 4096


def available() -> bool:
    """Whether openslide-python is installed (its library is loaded only when used)."""
    return importlib.util.find_spec("openslide") is not None


def detect(path: str | os.PathLike) -> str | None:
    """OpenSlide's vendor name for ``path``, or None when it cannot read it."""
    try:
        import openslide

        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # a missing shared library is as good as no OpenSlide
        return None


class OpenSlideSlide(SlideReader):
    """A slide read through the OpenSlide C library (thread-safe itself)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import openslide

        self.path = Path(path)
        self._aligned_cache: dict[tuple[int, int], np.ndarray] = {}
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except Exception as exc:
            raise SlideError(f"{self.path} cannot be opened by OpenSlide: {exc}") from None
        props = self._osr.properties
        vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "slide")
        self.format_name = f"{vendor} (OpenSlide)"
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        try:
            value = float(props.get(openslide.PROPERTY_NAME_MPP_X, ""))
        except ValueError:
            value = None
        candidates = [(value, MPP_SOURCE)] if value else []
        self.mpp, self.mpp_source = mpp_.choose_mpp(self.path, candidates)
        self.mpp_note = mpp_.assumed_because(candidates)

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The stored pixels of the level: reads start at aligned pixels (see above)."""
        rows = self._spans(level, 1, y0, y1)
        cols = self._spans(level, 0, x0, x1)
        if len(rows) == 1 and len(cols) == 1:
            (ry, _, _), (rx, _, _) = rows[0], cols[0]
            rgba = self._read_rgba(level, rx, ry, x1 - rx, y1 - ry)
            return _RGBA.to_rgb(rgba[y0 - ry :, x0 - rx :])
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for ry, top, bottom in rows:
            for rx, left, right in cols:
                rgba = self._read_rgba(level, rx, ry, right - rx, bottom - ry)
                out[top - y0 : bottom - y0, left - x0 : right - x0] = _RGBA.to_rgb(
                    rgba[top - ry :, left - rx :]
                )
        return out

    def _read_rgba(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """OpenSlide's (h, w, 4) RGBA from level pixel (x, y), via the nearest level-0 pixel."""
        ds = self.level_downsamples[level]
        try:
            image = self._osr.read_region((round(x * ds), round(y * ds)), level, (w, h))
        except Exception as exc:
            raise SlideError(f"{self.path} is damaged: OpenSlide cannot read it ({exc})") from None
        return np.asarray(image)

    def _spans(self, level: int, axis: int, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Reads covering [start, stop) along ``axis`` (0 = x, 1 = y) of ``level``.

        Each is ``(origin, first, end)``: read from ``origin`` (aligned where
        possible) to ``end``, keep the pixels from ``first``; at most ``_MAX_READ``.
        """
        aligned = self._aligned(level, axis)
        spans = []
        pos = start
        while pos < stop:
            origin = pos
            if aligned is not None:
                i = int(np.searchsorted(aligned, pos, side="right")) - 1
                if i >= 0 and pos - int(aligned[i]) <= _MAX_ALIGN_SLACK:
                    origin = int(aligned[i])
                else:
                    logger.debug("%s: level %d read at a sub-pixel offset", self.path, level)
            end = min(stop, origin + _MAX_READ)
            spans.append((origin, pos, end))
            pos = end
        return spans

    def _aligned(self, level: int, axis: int) -> np.ndarray | None:
        """Sorted aligned pixel positions along ``axis`` of ``level``; None if all are."""
        ds = self.level_downsamples[level]
        if ds == round(ds):
            return None
        key = (level, axis)
        if key not in self._aligned_cache:  # a race computes it twice, harmlessly
            positions = np.arange(self.level_dimensions[level][axis], dtype=np.float64)
            level0 = np.rint(positions * ds)  # the X each position is read from
            offset = np.abs(level0 / ds - positions)  # what OpenSlide computes, in doubles
            self._aligned_cache[key] = np.flatnonzero(offset < _ALIGNED_WITHIN)
        return self._aligned_cache[key]

    def _close(self) -> None:
        self._osr.close()
