"""What the slide view draws: a display pyramid, its background loader and tile cache.

The display pyramid is the slide's own levels plus, past the coarsest one,
"virtual" levels at 2x steps down to a few hundred pixels, so a zoomed-out view
never reads more pixels than it shows. Virtual levels are built once in memory
in the background by streaming the coarsest level band by band (a one-level
5000 x 5000 strip TIFF costs one pass and ~25 MB); where that level is too big
to stream, virtual tiles are read on demand and box-reduced, up to
:data:`ONDEMAND_MAX_FACTOR`.

:class:`TileLoader` reads tiles on a private ``QThreadPool``; results come back
to the GUI thread through queued signals, tagged with a generation id that each
new slide bumps, so nothing from a previous slide is ever drawn. Tiles that left
the view before a worker picked them up are skipped. Only the GUI thread
touches :class:`PixmapCache` and the pixmaps in it.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PySide6.QtCore import QObject, QRectF, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

from histoviewer.slide.base import SlideReader
from histoviewer.slide.tilecache import ByteLRUCache

log = logging.getLogger(__name__)

#: Tile edge in pixels of the level it comes from (256-512 screen px when drawn).
TILE_SIZE = 512
#: Virtual levels are added until the whole slide fits in this many pixels.
MIN_LEVEL_SIZE = 256
#: Largest source level (pixels) whose virtual levels are built in memory.
BUILD_LIMIT_PIXELS = 120_000_000
#: Largest box-reduction factor of a virtual tile read on demand (4096 px reads).
ONDEMAND_MAX_FACTOR = 8
#: Pixels read at a time while building virtual levels.
BAND_PIXELS = 8_000_000
#: Longest side of the thumbnail the overview and the loading fallback show.
THUMBNAIL_SIZE = 1024
#: Default byte bound of the tile cache.
DEFAULT_CACHE_BYTES = 256 * 2**20


class LevelState(enum.Enum):
    """Whether a display level's tiles can be read now."""

    READY = "ready"  # a slide level, a built virtual level or an on-demand one
    PENDING = "pending"  # a virtual level still being built in the background
    UNAVAILABLE = "unavailable"  # too costly to read; the thumbnail stands in


class TileKey(NamedTuple):
    """A tile of one slide (``generation``) at one display level."""

    generation: int
    level: int
    col: int
    row: int


@dataclass(eq=False)
class DisplayLevel:
    """One level of the display pyramid.

    ``source`` is the slide level it is read from and ``factor`` how many
    source pixels (per axis) make one of its pixels (1 for the slide's own
    levels). ``scale_x``/``scale_y`` are level-0 pixels per pixel of this
    level. ``array`` holds a built virtual level (read-only once set).
    """

    index: int
    width: int
    height: int
    scale_x: float
    scale_y: float
    source: int
    factor: int = 1
    state: LevelState = LevelState.READY
    array: np.ndarray | None = field(default=None, repr=False)

    @property
    def downsample(self) -> float:
        return (self.scale_x + self.scale_y) / 2.0

    @property
    def grid(self) -> tuple[int, int]:
        """``(cols, rows)`` of tiles."""
        return math.ceil(self.width / TILE_SIZE), math.ceil(self.height / TILE_SIZE)

    def tile_box(self, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of a tile in this level's pixels (edge tiles are smaller)."""
        x, y = col * TILE_SIZE, row * TILE_SIZE
        return x, y, min(TILE_SIZE, self.width - x), min(TILE_SIZE, self.height - y)

    def tile_rect(self, col: int, row: int) -> QRectF:
        """A tile's area in level-0 pixels."""
        x, y, w, h = self.tile_box(col, row)
        sx, sy = self.scale_x, self.scale_y
        return QRectF(x * sx, y * sy, w * sx, h * sy)

    def tiles_in(self, rect: QRectF) -> list[tuple[int, int]]:
        """``(col, row)`` of the tiles that overlap ``rect`` (level-0 pixels)."""
        cols, rows = self.grid
        span_x, span_y = TILE_SIZE * self.scale_x, TILE_SIZE * self.scale_y
        c0 = max(0, math.floor(rect.left() / span_x))
        r0 = max(0, math.floor(rect.top() / span_y))
        c1 = min(cols - 1, math.ceil(rect.right() / span_x) - 1)
        r1 = min(rows - 1, math.ceil(rect.bottom() / span_y) - 1)
        return [(c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def read_tile(self, reader: SlideReader, col: int, row: int) -> np.ndarray:
        """A tile's pixels, (h, w, 3) uint8; runs on a worker thread."""
        x, y, w, h = self.tile_box(col, row)
        if self.array is not None:
            return np.ascontiguousarray(self.array[y : y + h, x : x + w])
        f = self.factor
        if f == 1:
            return reader.read_region(self.source, x, y, w, h)
        # On-demand virtual tile: read f times as many source pixels and reduce.
        pixels = reader.read_region(self.source, x * f, y * f, w * f, h * f)
        while f > 1:
            pixels = halve(pixels)
            f //= 2
        return pixels


def plan_levels(reader: SlideReader) -> list[DisplayLevel]:
    """The display pyramid of ``reader``: its levels, then virtual 2x levels."""
    w0, h0 = reader.dimensions
    levels: list[DisplayLevel] = []
    for source, (w, h) in sorted(
        enumerate(reader.level_dimensions), key=lambda item: -item[1][0] * item[1][1]
    ):
        if levels and (w, h) == (levels[-1].width, levels[-1].height):
            continue  # a duplicate level adds nothing
        levels.append(DisplayLevel(len(levels), w, h, w0 / w, h0 / h, source))
    coarsest = levels[-1]
    buildable = coarsest.width * coarsest.height <= BUILD_LIMIT_PIXELS
    w, h, factor = coarsest.width, coarsest.height, 1
    while max(w, h) > MIN_LEVEL_SIZE:
        w, h, factor = math.ceil(w / 2), math.ceil(h / 2), factor * 2
        if buildable:
            state = LevelState.PENDING
        elif factor <= ONDEMAND_MAX_FACTOR:
            state = LevelState.READY
        else:
            state = LevelState.UNAVAILABLE
        levels.append(
            DisplayLevel(len(levels), w, h, w0 / w, h0 / h, coarsest.source, factor, state)
        )
    return levels


def choose_level(levels: list[DisplayLevel], zoom: float) -> DisplayLevel:
    """The coarsest level whose downsample is at most ``1 / zoom``.

    ``zoom`` is screen pixels per level-0 pixel; between two levels the finer
    one is taken, so a tile is never magnified except beyond level 0.
    """
    target = 1.0 / zoom if zoom > 0 else math.inf
    best = levels[0]
    for level in levels:
        if level.downsample <= target * (1 + 1e-6):
            best = level
    return best


def halve(pixels: np.ndarray) -> np.ndarray:
    """2x2 box reduction of an (h, w, 3) uint8 array (odd edges padded white)."""
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        padded = np.full((h + h % 2, w + w % 2, 3), 255, np.uint8)
        padded[:h, :w] = pixels
        pixels = padded
    total = pixels[0::2, 0::2].astype(np.uint16)
    total += pixels[1::2, 0::2]
    total += pixels[0::2, 1::2]
    total += pixels[1::2, 1::2]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def build_virtual_levels(
    reader: SlideReader, levels: list[DisplayLevel], is_current: Callable[[], bool]
) -> dict[int, np.ndarray] | None:
    """Arrays of the PENDING levels, made in one banded pass over their source.

    Returns None when ``is_current()`` turns false (the slide was replaced).
    """
    pending = [level for level in levels if level.state is LevelState.PENDING]
    if not pending:
        return {}
    source = pending[0].source
    sw, sh = reader.level_dimensions[source]
    top_factor = max(level.factor for level in pending)
    width = math.ceil(sw / top_factor) * top_factor
    band = max(top_factor, (BAND_PIXELS // width) // top_factor * top_factor)
    outputs = {
        level.factor: np.empty((level.height, level.width, 3), np.uint8) for level in pending
    }
    for top in range(0, sh, band):
        if not is_current():
            return None
        rows = math.ceil(min(band, sh - top) / top_factor) * top_factor
        pixels = reader.read_region(source, 0, top, width, rows)
        factor = 1
        while factor < top_factor:
            pixels = halve(pixels)
            factor *= 2
            out = outputs.get(factor)
            if out is not None:
                y = top // factor
                n = min(pixels.shape[0], out.shape[0] - y)
                out[y : y + n] = pixels[:n, : out.shape[1]]
    for out in outputs.values():
        out.flags.writeable = False
    return {level.index: outputs[level.factor] for level in pending}


def rgb_to_qimage(pixels: np.ndarray) -> QImage:
    """An (h, w, 3) uint8 array as a QImage that owns its own copy of the pixels."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    view = QImage(pixels.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return view.convertToFormat(QImage.Format.Format_RGB32)  # deep copy, fast to draw


class PixmapCache(ByteLRUCache[TileKey, QPixmap]):
    """The view's screen tiles: an LRU of QPixmaps bounded by bytes (4 bytes per
    pixel); GUI thread only (pixmaps belong to it).

    The same byte-bounded LRU as the slide readers' decoded-tile cache
    (:class:`~histoviewer.slide.tilecache.ByteLRUCache`), holding other things: a
    single tile larger than the bound is still kept, so the newest tile always shows.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__(max_bytes, _pixmap_bytes)


def _pixmap_bytes(pixmap: QPixmap) -> int:
    return pixmap.width() * pixmap.height() * 4


@dataclass(frozen=True)
class _LoaderPort:
    """What the worker jobs may do with their :class:`TileLoader`, from their threads.

    Bound to the loader, so a queued or running job keeps it alive past its view.
    """

    claim: Callable[[TileKey], bool]  # False: the tile is no longer wanted
    tile_loaded: Callable[[TileKey, object, str], None]  # (key, QImage or None, error)
    is_current: Callable[[int], bool]  # is this generation the loader's slide still?
    thumbnail: Callable[[int, QImage], None]
    built: Callable[[int, object], None]  # (generation, {level index: array})
    failed: Callable[[int, str], None]


class _TileJob(QRunnable):
    def __init__(self, port: _LoaderPort, key: TileKey, reader: SlideReader, level: DisplayLevel):
        super().__init__()
        self._port, self._key, self._reader, self._level = port, key, reader, level

    def run(self) -> None:
        port, key = self._port, self._key
        if not port.claim(key):
            return
        try:
            image = rgb_to_qimage(self._level.read_tile(self._reader, key.col, key.row))
        except Exception as exc:  # a damaged tile must not kill the thread or the app
            port.tile_loaded(key, None, f"{type(exc).__name__}: {exc}")
            return
        port.tile_loaded(key, image, "")


class _PyramidJob(QRunnable):
    """Builds the virtual levels and the thumbnail of one slide."""

    def __init__(self, port: _LoaderPort, generation: int, reader: SlideReader, levels):
        super().__init__()
        self._port, self._generation = port, generation
        self._reader, self._levels = reader, levels

    def run(self) -> None:
        port, generation, reader = self._port, self._generation, self._reader
        try:
            thumb_level = next(
                (lv for lv in self._levels if max(lv.width, lv.height) <= THUMBNAIL_SIZE), None
            )
            if thumb_level is not None and thumb_level.factor == 1:
                size = (thumb_level.width, thumb_level.height)
                pixels = reader.read_region(thumb_level.source, 0, 0, *size)
                port.thumbnail(generation, rgb_to_qimage(pixels))
            built = build_virtual_levels(reader, self._levels, lambda: port.is_current(generation))
            if built is None:
                return
            port.built(generation, built)
            if thumb_level is None or (thumb_level.factor > 1 and thumb_level.index not in built):
                # The virtual levels are read on demand: let the reader shrink it.
                port.thumbnail(generation, rgb_to_qimage(reader.thumbnail(THUMBNAIL_SIZE)))
            elif thumb_level.index in built:
                port.thumbnail(generation, rgb_to_qimage(built[thumb_level.index]))
        except Exception as exc:
            if port.is_current(generation):
                log.warning("could not build the overview of %r: %s", reader, exc)
                port.failed(generation, f"{type(exc).__name__}: {exc}")


class TileLoader(QObject):
    """Reads display tiles of the current slide in the background and caches them.

    Call :meth:`set_slide`, then :meth:`request` with the tiles the view needs
    (nearest first) whenever the view changes; ``tileReady`` fires on the GUI
    thread once a tile is in :attr:`cache`. Results of an earlier slide are
    counted in :attr:`stale_dropped` and dropped.
    """

    tileReady = Signal(object)  # TileKey, now in the cache
    levelsChanged = Signal()  # virtual levels were built
    thumbnailReady = Signal(QImage)
    failed = Signal(str)  # first read error of the current slide

    # Worker -> GUI thread (queued: this object lives on the GUI thread).
    _loaded = Signal(object, object, str)
    _built = Signal(int, object)
    _thumbnail = Signal(int, QImage)
    _pyramid_failed = Signal(int, str)

    def __init__(
        self,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        threads: int | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.cache = PixmapCache(cache_bytes)
        self.levels: list[DisplayLevel] = []
        self.generation = 0
        self.stale_dropped = 0
        self._reader: SlideReader | None = None
        self._pool = QThreadPool()
        cores = QThreadPool.globalInstance().maxThreadCount()
        self._pool.setMaxThreadCount(threads or max(2, min(4, cores)))
        self._lock = threading.Lock()
        self._wanted: set[TileKey] = set()
        self._pending: set[TileKey] = set()
        self._failed: set[TileKey] = set()  # not retried: the file is damaged there
        self._failed_reported = False
        self._loaded.connect(self._on_loaded)
        self._built.connect(self._on_built)
        self._thumbnail.connect(self._on_thumbnail)
        self._pyramid_failed.connect(self._on_pyramid_failed)

    # -- GUI thread API ------------------------------------------------------

    def set_slide(self, reader: SlideReader | None) -> None:
        """Forget the previous slide (queued work, cache) and start on ``reader``."""
        with self._lock:
            self.generation += 1
            self._wanted.clear()
            self._pending.clear()
        self._pool.clear()
        self.cache.clear()
        self._failed.clear()
        self._reader = reader
        self._failed_reported = False
        self.levels = plan_levels(reader) if reader is not None else []
        if reader is not None:
            job = _PyramidJob(self._port(), self.generation, reader, list(self.levels))
            self._pool.start(job, -1)

    def request(self, level: DisplayLevel | None, tiles: Iterable[tuple[int, int]]) -> None:
        """Make ``tiles`` of ``level`` (nearest first) the wanted set and queue the missing.

        Queued tiles not in the new set are skipped when a worker reaches them.
        """
        keys = []
        if level is not None and level.state is LevelState.READY and self._reader is not None:
            keys = [TileKey(self.generation, level.index, c, r) for c, r in tiles]
        with self._lock:
            self._wanted = set(keys)
            todo = [
                k
                for k in keys
                if k not in self._pending and k not in self.cache and k not in self._failed
            ]
            self._pending.update(todo)
        port = self._port() if todo else None
        for rank, key in enumerate(todo):
            job = _TileJob(port, key, self._reader, level)
            self._pool.start(job, max(0, 1000 - rank))

    def pixmap(self, level: int, col: int, row: int) -> QPixmap | None:
        return self.cache.get(TileKey(self.generation, level, col, row))

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait(self, msecs: int = -1) -> bool:
        """Wait until no worker runs (queued tiles are dropped first); False on timeout."""
        self._pool.clear()
        with self._lock:
            self._pending.clear()
        return self._pool.waitForDone(msecs)

    # -- worker side -----------------------------------------------------------

    def _port(self) -> _LoaderPort:
        # Made for each batch of jobs, not kept: kept, it would tie the loader in a
        # reference cycle, freed by the garbage collector on whatever thread it ran.
        return _LoaderPort(
            claim=self._claim,
            tile_loaded=self._loaded.emit,
            is_current=self._is_current,
            thumbnail=self._thumbnail.emit,
            built=self._built.emit,
            failed=self._pyramid_failed.emit,
        )

    def _is_current(self, generation: int) -> bool:
        return self.generation == generation

    def _claim(self, key: TileKey) -> bool:
        """Called by a worker before reading: False when the tile is no longer wanted."""
        with self._lock:
            if key in self._wanted:
                return True
            self._pending.discard(key)
            return False

    # -- results, on the GUI thread -----------------------------------------------

    @Slot(object, object, str)
    def _on_loaded(self, key: TileKey, image: QImage | None, error: str) -> None:
        with self._lock:
            self._pending.discard(key)
        if key.generation != self.generation:
            self.stale_dropped += 1
            return
        if image is None:
            self._failed.add(key)
            level = logging.DEBUG if self._failed_reported else logging.WARNING
            log.log(level, "could not read a tile of %r: %s", self._reader, error)
            self._report(f"Some parts of the slide could not be read ({error}).")
            return
        self.cache.put(key, QPixmap.fromImage(image))
        self.tileReady.emit(key)

    @Slot(int, object)
    def _on_built(self, generation: int, arrays: dict[int, np.ndarray]) -> None:
        if generation != self.generation:
            return
        for index, array in arrays.items():
            self.levels[index].array = array
            self.levels[index].state = LevelState.READY
        if arrays:
            self.levelsChanged.emit()

    @Slot(int, QImage)
    def _on_thumbnail(self, generation: int, image: QImage) -> None:
        if generation == self.generation:
            self.thumbnailReady.emit(image)

    @Slot(int, str)
    def _on_pyramid_failed(self, generation: int, error: str) -> None:
        if generation == self.generation:
            # Without built levels, zoomed-out views read virtual tiles on demand.
            for level in self.levels:
                if level.state is LevelState.PENDING:
                    ok = level.factor <= ONDEMAND_MAX_FACTOR
                    level.state = LevelState.READY if ok else LevelState.UNAVAILABLE
            self.levelsChanged.emit()
            self._report(f"The slide overview could not be read ({error}).")

    def _report(self, message: str) -> None:
        if not self._failed_reported:
            self._failed_reported = True
            self.failed.emit(message)
