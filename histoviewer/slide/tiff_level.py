"""Pixel access to one TIFF page (one pyramid level), tile by tile.

Only the tiles or strips a region touches are read: their bytes under the
reader's I/O lock, their decoding outside it, so several threads decode at
once. Uncompressed contiguous images (such as the Kather CRC-Prim-HE strip
TIFFs) are memory-mapped instead and sliced directly.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from histoviewer.errors import SlideError
from histoviewer.slide.pixels import PixelLayout
from histoviewer.slide.tilecache import TileCache

# A single tile or strip bigger than this (decoded) means the file cannot be
# read piecewise (e.g. a whole gigapixel image compressed as one strip).
MAX_SEGMENT_BYTES = 2**30


class TiffLevel:
    """Reads in-bounds regions of one page as RGB uint8."""

    def __init__(
        self,
        *,
        path: Path,
        index: int,
        page: tifffile.TiffPage,
        layout: PixelLayout,
        fh: Any,
        io_lock: threading.Lock,
        cache: TileCache,
        file_size: int,
        byteorder: str,
    ) -> None:
        self.path = path
        self.index = index
        self.layout = layout
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        self.tiled = bool(page.is_tiled)
        self._fh = fh
        self._io_lock = io_lock
        self._cache = cache
        self._memmap: np.ndarray | None = None
        samples = int(page.samplesperpixel)
        self._planes = samples if page.planarconfig == 2 and samples > 1 else 1
        if self.tiled:
            self._tw, self._th = int(page.tilewidth), int(page.tilelength)
        else:
            self._tw = self.width
            self._th = max(1, min(int(page.rowsperstrip or self.height), self.height))
        self._across = math.ceil(self.width / self._tw)
        self._down = math.ceil(self.height / self._th)
        self._offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self._counts = np.asarray(page.databytecounts, dtype=np.int64)
        self._check_extent(file_size)
        if self._can_memmap(page):
            dtype = np.dtype(page.dtype).newbyteorder(byteorder)
            shape = (self.height, self.width, samples)
            self._memmap = np.memmap(
                path, dtype=dtype, mode="r", offset=int(self._offsets[0]), shape=shape
            )
            return
        if self._tw * self._th * samples * page.dtype.itemsize > MAX_SEGMENT_BYTES:
            raise SlideError(
                f"{path} cannot be opened: level {index} is stored as blocks of "
                f"{self._tw} x {self._th} pixels, too large to read piece by piece"
            )
        page.init_decode()  # decode is a lazily built closure: build it on this thread
        self._decode = page.decode
        self._jpeg = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}

    @property
    def memory_mapped(self) -> bool:
        return self._memmap is not None

    def _check_extent(self, file_size: int) -> None:
        expected = self._planes * self._across * self._down
        if len(self._offsets) != expected or len(self._counts) != expected:
            raise SlideError(
                f"{self.path} is damaged: level {self.index} lists {len(self._offsets)} "
                f"tiles or strips where its size needs {expected}"
            )
        ends = self._offsets + self._counts
        if ends.size and int(ends.max()) > file_size:
            raise SlideError(
                f"{self.path} is damaged: it is truncated (its image data runs to byte "
                f"{int(ends.max())} but the file has {file_size} bytes); was a copy or "
                "download interrupted?"
            )

    def _can_memmap(self, page: tifffile.TiffPage) -> bool:
        return bool(
            page.is_contiguous
            and page.fillorder == 1
            and page.predictor == 1
            and not page.is_subsampled
            and self._planes == 1
            and page.bitspersample in (8, 16)
            and page.dtype.kind == "u"
        )

    def close(self) -> None:
        self._memmap = None

    # -- reading ---------------------------------------------------------------

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The region [x0, x1) x [y0, y1), which lies inside the level."""
        if self._memmap is not None:
            try:
                raw = np.array(self._memmap[y0:y1, x0:x1])
            except OSError as exc:  # the file changed or vanished under the map
                raise SlideError(f"{self.path} could not be read: {exc.strerror}") from None
            return self.layout.to_rgb(raw)
        tw, th = self._tw, self._th
        cols = range(x0 // tw, (x1 - 1) // tw + 1)
        rows = range(y0 // th, (y1 - 1) // th + 1)
        tiles = self._tiles([(c, r) for r in rows for c in cols])
        if len(tiles) == 1:
            (c, r), tile = next(iter(tiles.items()))
            return tile[y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw].copy()
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for (c, r), tile in tiles.items():
            tx, ty = c * tw, r * th
            ax0, ay0 = max(x0, tx), max(y0, ty)
            ax1, ay1 = min(x1, tx + tile.shape[1]), min(y1, ty + tile.shape[0])
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tile[
                ay0 - ty : ay1 - ty, ax0 - tx : ax1 - tx
            ]
        return out

    def _tiles(self, positions: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """Decoded RGB tiles (cropped to the image) at (column, row) positions."""
        found: dict[tuple[int, int], np.ndarray] = {}
        missing = []
        for pos in positions:
            tile = self._cache.get((self.index, pos))
            if tile is None:
                missing.append(pos)
            else:
                found[pos] = tile
        if not missing:
            return found
        raw = self._read_bytes(missing)
        for pos in missing:
            tile = self._decode_tile(pos, raw)
            self._cache.put((self.index, pos), tile)
            found[pos] = tile
        return found

    def _segment(self, pos: tuple[int, int], plane: int) -> int:
        c, r = pos
        return (plane * self._down + r) * self._across + c

    def _read_bytes(self, positions: list[tuple[int, int]]) -> dict[int, bytes | None]:
        """The stored bytes of every segment of ``positions`` (None = empty segment)."""
        segments = sorted(
            (self._segment(pos, p) for pos in positions for p in range(self._planes)),
            key=lambda s: self._offsets[s],
        )
        out: dict[int, bytes | None] = {}
        with self._io_lock:  # seek + read must not interleave between threads
            for s in segments:
                offset, count = int(self._offsets[s]), int(self._counts[s])
                if offset <= 0 or count <= 0:
                    out[s] = None
                    continue
                try:
                    self._fh.seek(offset)
                    data = self._fh.read(count)
                except (OSError, ValueError) as exc:
                    raise SlideError(f"{self.path} could not be read: {exc}") from None
                if len(data) != count:
                    raise self._damaged(s, "the file ends early")
                out[s] = data
        return out

    def _decode_tile(self, pos: tuple[int, int], raw: dict[int, bytes | None]) -> np.ndarray:
        c, r = pos
        h = min(self._th, self.height - r * self._th)
        w = min(self._tw, self.width - c * self._tw)
        planes = []
        for p in range(self._planes):
            s = self._segment(pos, p)
            data = raw[s]
            if data is None:  # an empty tile: nothing was scanned there
                return np.full((h, w, 3), 255, np.uint8)
            try:
                array = self._decode(data, s, **self._jpeg)[0]
            except Exception as exc:  # codecs raise many types for corrupt data
                raise self._damaged(s, f"{type(exc).__name__}: {exc}") from None
            if array is None or array.ndim != 4 or array.shape[1] < h or array.shape[2] < w:
                shape = None if array is None else array.shape
                raise self._damaged(s, f"it decodes to shape {shape}")
            planes.append(array[0, :h, :w])
        pixels = planes[0] if len(planes) == 1 else np.concatenate(planes, axis=2)
        return self.layout.to_rgb(pixels)

    def _damaged(self, segment: int, why: str) -> SlideError:
        kind = "tile" if self.tiled else "strip"
        return SlideError(
            f"{self.path} is damaged: {kind} {segment} of level {self.index} cannot be "
            f"read ({why[:200]})"
        )
