"""An in-memory slide for tests and demos: no file needed."""

from __future__ import annotations

import hashlib

import numpy as np

from histoviewer.slide.base import SlideReader
from histoviewer.slide.pixels import PixelLayout, check_layout


class ArraySlide(SlideReader):
    """A single-level slide backed by a numpy array.

    ``array`` is (h, w) greyscale, (h, w, 3) RGB or (h, w, 4) RGBA, uint8,
    uint16 (scaled to 8 bits) or bool; it is converted to RGB uint8 once
    (the caller's array is never modified or kept). ``mpp`` is the scale the
    caller vouches for; ``mpp_source`` is "given".
    """

    def __init__(
        self, array: np.ndarray, mpp: float = 0.495, format_name: str = "in-memory"
    ) -> None:
        array = np.asarray(array)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"expected an (h, w), (h, w, 3) or (h, w, 4) array, got {array.shape}")
        samples = 1 if array.ndim == 2 else array.shape[2]
        why = check_layout(
            dtype=array.dtype,
            samples=samples,
            photometric="minisblack" if samples == 1 else "rgb",
            extra_samples=1 if samples == 4 else 0,
        )
        if why:
            raise ValueError(f"the array cannot be shown as a slide: it {why}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"the array is empty: shape {array.shape}")
        if not mpp > 0:
            raise ValueError(f"mpp must be positive, got {mpp}")
        layout = PixelLayout(
            dtype=array.dtype,
            colours=1 if samples == 1 else 3,
            alpha=samples == 4,
            maxvalue=65535 if array.dtype == np.uint16 else 255,
        )
        rgb = layout.to_rgb(array)
        if np.shares_memory(rgb, array):
            rgb = rgb.copy()
        rgb.flags.writeable = False
        self._pixels = rgb
        self.path = None
        self.format_name = format_name
        self.level_dimensions = ((rgb.shape[1], rgb.shape[0]),)
        self.level_downsamples = (1.0,)
        self.mpp = float(mpp)
        self.mpp_source = "given"
        self._digest = hashlib.blake2b(rgb.tobytes(), digest_size=16).hexdigest()

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._pixels[y0:y1, x0:x1].copy()

    def identity(self) -> dict:
        """``path`` None, ``size`` in bytes, ``mtime`` None, ``dimensions`` and the
        pixels' ``digest`` (so two different arrays never share cached results)."""
        return {
            "path": None,
            "size": int(self._pixels.nbytes),
            "mtime": None,
            "dimensions": list(self.dimensions),
            "digest": self._digest,
        }
