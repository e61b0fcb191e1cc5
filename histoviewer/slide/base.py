"""The reader interface every slide backend implements."""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from histoviewer.errors import SlideError

log = logging.getLogger(__name__)

# A region larger than this is a caller's bug (it would need gigabytes), not a
# request a viewer or the mapper ever makes.
MAX_REGION_PIXELS = 2**28
# Rows read at a time while building a thumbnail, so memory stays bounded.
_THUMBNAIL_BAND_PIXELS = 2**23


class SlideReader:
    """A whole-slide image: its levels, scale and pixels.

    Subclasses set the attributes in ``__init__`` and implement
    :meth:`_read` (an in-bounds region) and, if they hold resources,
    :meth:`_close`. All public methods are safe to call from several threads
    at once, :meth:`close` included: it waits for reads in progress, so
    :meth:`_close` never frees what a :meth:`_read` is still using.

    Attributes:
        path: the file, or ``None`` for in-memory slides.
        format_name: e.g. "Aperio SVS", "OME-TIFF", "TIFF (strips)", "PNG".
        level_dimensions: ``(width, height)`` per level, level 0 largest.
        level_downsamples: level 0 pixels per level pixel, per level (1.0 first).
        mpp: microns per pixel at level 0.
        mpp_source: where ``mpp`` came from ("Aperio MPP", "OME PhysicalSizeX",
            "NDPI/TIFF resolution", "image resolution", "OpenSlide MPP",
            "given", or "assumed" when it is the 0.495 default).
        mpp_note: why the scale is assumed ("its file records no scale"), else "".
    """

    path: Path | None = None
    format_name: str = ""
    level_dimensions: tuple[tuple[int, int], ...] = ()
    level_downsamples: tuple[float, ...] = ()
    mpp: float = 0.495
    mpp_source: str = "assumed"
    mpp_note: str = ""
    _file_scale: tuple[float, str, str] | None = None  # kept by the first set_mpp
    _lifetime: threading.Condition
    _readers: int
    _closed: bool
    _released: bool

    def __new__(cls, *args: object, **kwargs: object) -> SlideReader:
        # Set up here rather than in __init__, which subclasses need not call:
        # every backend gets the lifetime bookkeeping without having to opt in.
        self = super().__new__(cls)
        self._lifetime = threading.Condition()
        self._readers = 0  # reads in progress
        self._closed = False  # no new reads once True
        self._released = False  # _close() has run
        return self

    # -- geometry -------------------------------------------------------------

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def file_scale(self) -> tuple[float, str, str]:
        """``(mpp, mpp_source, mpp_note)`` as the slide's file gave them, whatever
        :meth:`set_mpp` has set since."""
        return self._file_scale or (self.mpp, self.mpp_source, self.mpp_note)

    def set_mpp(self, mpp: float, source: str) -> None:
        """Use ``mpp`` (microns per level-0 pixel) as the slide's scale from now on.

        For a scale a person knows better than the file (a missing or wrong value);
        ``source`` says who gave it (e.g. ``mpp.GIVEN_CLI``). Overriding a value the
        file does record, by more than 5 %, is logged as a warning; :meth:`reset_mpp`
        goes back to the file's. Raises ValueError for a value no microscope scan has
        (outside 0.05-40 µm/px).
        """
        from histoviewer.slide import mpp as mpp_

        if not mpp_.plausible(mpp):
            raise ValueError(
                f"{mpp!r} µm/px is not a plausible slide scale (expected 0.05 to 40 µm/px)"
            )
        file_mpp, file_source, _ = self._file_scale = self.file_scale
        if file_source != mpp_.ASSUMED and abs(mpp / file_mpp - 1) > 0.05:
            log.warning(
                "%s: its file says %g µm/px (%s); using %g µm/px (%s) instead",
                self._name(),
                file_mpp,
                file_source,
                mpp,
                source,
            )
        self.mpp, self.mpp_source, self.mpp_note = float(mpp), source, ""

    def reset_mpp(self) -> None:
        """Use the scale the slide's file gives again (undoes :meth:`set_mpp`)."""
        self.mpp, self.mpp_source, self.mpp_note = self.file_scale

    def best_level_for_downsample(self, downsample: float) -> int:
        """The smallest level that still has at least the detail of ``downsample``.

        That is the last level whose downsample does not exceed ``downsample``
        (with 1 % slack for rounded level sizes); level 0 for values below 1.
        """
        best = 0
        for index, level_ds in enumerate(self.level_downsamples):
            if level_ds <= downsample * 1.01:
                best = index
        return best

    def _downsamples_from_dimensions(self) -> tuple[float, ...]:
        """Downsamples as OpenSlide computes them: the mean of both axes' ratios."""
        w0, h0 = self.level_dimensions[0]
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions)

    # -- pixels ----------------------------------------------------------------

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels of the ``w`` x ``h`` region at ``(x, y)`` of ``level``.

        ``x`` and ``y`` are in that level's own pixel coordinates. Returns an
        (h, w, 3) uint8 RGB C-contiguous array that the caller may modify;
        parts outside the image are white. Raises :class:`SlideError` when the
        file is damaged or closed, ``ValueError`` for a bad level or size.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} does not exist (the slide has {self.level_count})")
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w < 0 or h < 0:
            raise ValueError(f"region size must not be negative, got {w} x {h}")
        if w * h > MAX_REGION_PIXELS:
            raise ValueError(f"region {w} x {h} is too large to read at once")
        with self._lifetime:
            if self._closed:
                raise SlideError(f"{self._name()} was closed and can no longer be read")
            self._readers += 1
        try:
            return self._read_counted(level, x, y, w, h)
        finally:
            with self._lifetime:
                self._readers -= 1
                if self._readers == 0:
                    self._lifetime.notify_all()

    def _read_counted(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``read_region`` once its arguments are checked and the read is counted."""
        width, height = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x0 >= x1 or y0 >= y1:
            return np.full((h, w, 3), 255, np.uint8)
        inner = self._read(level, x0, y0, x1, y1)
        if (x0, y0, x1, y1) == (x, y, x + w, y + h):
            if inner.flags.c_contiguous and inner.flags.writeable:
                return inner
            return inner.copy()
        out = np.full((h, w, 3), 255, np.uint8)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = inner
        return out

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The in-bounds region [x0, x1) x [y0, y1) of ``level`` as (h, w, 3) uint8."""
        raise NotImplementedError

    def thumbnail(self, max_size: int = 512) -> np.ndarray:
        """The whole slide shrunk to fit ``max_size`` x ``max_size``, aspect kept.

        Reads the smallest level with enough detail, band by band, so that even
        a single-level gigapixel slide is never held in memory at once.
        """
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        w0, h0 = self.dimensions
        scale = min(max_size / w0, max_size / h0, 1.0)
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = self.best_level_for_downsample(1.0 / scale)
        lw, lh = self.level_dimensions[level]
        factor = max(1, math.floor(min(lw / tw, lh / th)))
        # Box-reduce by an integer factor band by band; bands are multiples of
        # the factor so that no output row straddles two bands.
        band = max(factor, (_THUMBNAIL_BAND_PIXELS // max(lw, 1)) // factor * factor)
        parts = []
        for top in range(0, lh, band):
            rows = self.read_region(level, 0, top, lw, min(band, lh - top))
            image = Image.fromarray(rows)
            parts.append(np.asarray(image.reduce(factor) if factor > 1 else image))
        reduced = np.concatenate(parts, axis=0)
        if reduced.shape[:2] != (th, tw):
            resized = Image.fromarray(reduced).resize((tw, th), Image.Resampling.LANCZOS)
            reduced = np.asarray(resized)
        return np.ascontiguousarray(reduced, dtype=np.uint8)

    # -- identity and lifetime -------------------------------------------------

    def identity(self) -> dict:
        """What identifies this slide's pixels, for keying caches and results.

        Keys: ``path`` (absolute, str), ``size`` (bytes), ``mtime`` (seconds),
        ``dimensions`` ([width, height]); all JSON-safe.
        """
        assert self.path is not None
        try:
            stat = os.stat(self.path)
            size, mtime = stat.st_size, stat.st_mtime
        except OSError:
            size, mtime = None, None
        return {
            "path": str(self.path.resolve()),
            "size": size,
            "mtime": mtime,
            "dimensions": list(self.dimensions),
        }

    def close(self) -> None:
        """Release the file; later reads raise :class:`SlideError`. Idempotent.

        Safe while other threads read: reads that have started finish first
        (close blocks until then, a few milliseconds), reads that start later
        raise the "was closed" :class:`SlideError`. When close returns, the
        file is released. Never call it from inside a read of this reader.
        """
        with self._lifetime:
            if self._closed:
                while not self._released:  # another thread is closing it
                    self._lifetime.wait()
                return
            self._closed = True
            while self._readers:
                self._lifetime.wait()
        try:
            self._close()
        finally:
            with self._lifetime:
                self._released = True
                self._lifetime.notify_all()

    def _close(self) -> None:
        """Free the backend's resources; called once, when no read is in progress."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _name(self) -> str:
        return str(self.path) if self.path is not None else f"the {self.format_name} slide"

    def __repr__(self) -> str:
        w, h = self.dimensions if self.level_dimensions else (0, 0)
        return (
            f"<{type(self).__name__} {self._name()!s} {self.format_name} {w}x{h} "
            f"levels={self.level_count} mpp={self.mpp:g} ({self.mpp_source})>"
        )
