"""Plain pictures (PNG, JPEG) read with Pillow.

These formats cannot be read piecewise, so the whole picture is decoded once,
on the first read, and kept as RGB.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from histoviewer.errors import SlideError
from histoviewer.slide import mpp as mpp_
from histoviewer.slide.base import SlideReader
from histoviewer.slide.pixels import PixelLayout


class ImageSlide(SlideReader):
    """A single-level slide from a PNG or JPEG file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pixels: np.ndarray | None = None
        with warnings.catch_warnings():
            # Pillow's "decompression bomb" guard targets web uploads; slides are big.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(self.path) as image:
                    self.format_name = image.format or "image"
                    size, mode, info = image.size, image.mode, dict(image.info)
            except Image.DecompressionBombError:
                # Beyond ~180 Mpx a single-block picture needs gigabytes to decode;
                # such scans belong in a tiled TIFF, which is read piecewise.
                raise SlideError(
                    f"{self.path} cannot be opened: the picture is too large to decode in one "
                    "piece; save it as a tiled pyramid TIFF instead"
                ) from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise SlideError(
                    f"{self.path} cannot be opened: it is not a readable image ({exc})"
                ) from None
        width, height = size
        if width == 0 or height == 0:
            raise SlideError(f"{self.path} cannot be opened: its image is empty (0 pixels)")
        if mode in ("F", "I") or (mode.startswith("I;") and mode not in ("I;16", "I;16B")):
            raise SlideError(
                f"{self.path} cannot be opened: it holds {mode} data (floating-point or 32-bit), "
                "not a brightfield picture"
            )
        self.level_dimensions = ((width, height),)
        self.level_downsamples = (1.0,)
        dpi = info.get("dpi")
        candidate = None
        if dpi and float(dpi[0]) > 0:
            candidate = 25400.0 / float(dpi[0])
        candidates = [(candidate, mpp_.IMAGE_RESOLUTION)] if candidate else []
        self.mpp, self.mpp_source = mpp_.choose_mpp(self.path, candidates)
        self.mpp_note = mpp_.assumed_because(candidates)

    def _load(self) -> np.ndarray:
        with self._lock:
            if self._closed:
                raise SlideError(f"{self.path} was closed and can no longer be read")
            if self._pixels is None:
                self._pixels = self._decode()
            return self._pixels

    def _decode(self) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(self.path) as image:
                    image.load()
                    return _to_rgb(image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise SlideError(
                f"{self.path} is damaged: its pixels cannot be decoded ({exc})"
            ) from None

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._load()[y0:y1, x0:x1].copy()

    def _close(self) -> None:
        with self._lock:
            self._pixels = None


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode we accept as (h, w, 3) uint8 RGB; transparency over white."""
    mode = image.mode
    if mode in ("I;16", "I;16B"):
        grey = np.asarray(image, dtype=np.uint16)
        return PixelLayout(dtype=np.dtype(np.uint16), colours=1, maxvalue=65535).to_rgb(grey)
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        rgba = np.asarray(image)
        return PixelLayout(dtype=np.dtype(np.uint8), colours=3, alpha=True).to_rgb(rgba)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr
    return np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
