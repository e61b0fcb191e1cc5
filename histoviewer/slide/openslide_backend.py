"""Optional OpenSlide backend for formats tifffile and Pillow cannot read (MRXS, SCN, ...).

Installed with the ``openslide`` extra (openslide-python + openslide-bin).
Nothing here is imported unless :func:`available` says the module exists.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from histoviewer.errors import SlideError
from histoviewer.slide import mpp as mpp_
from histoviewer.slide.base import SlideReader
from histoviewer.slide.pixels import PixelLayout

#: Extensions only OpenSlide opens (tifffile reads .svs, .ndpi, .tif itself).
OPENSLIDE_EXTENSIONS = (".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
MPP_SOURCE = "OpenSlide MPP"
# openslide-python un-premultiplies its RGBA; alpha is 0 where nothing was scanned.
_RGBA = PixelLayout(dtype=np.dtype(np.uint8), colours=3, alpha=True)


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
        self.mpp, self.mpp_source = mpp_.choose_mpp(
            self.path, [(value, MPP_SOURCE)] if value else []
        )

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        try:
            image = self._osr.read_region(
                (round(x0 * ds), round(y0 * ds)), level, (x1 - x0, y1 - y0)
            )
        except Exception as exc:
            raise SlideError(f"{self.path} is damaged: OpenSlide cannot read it ({exc})") from None
        return _RGBA.to_rgb(np.asarray(image))

    def _close(self) -> None:
        self._osr.close()
