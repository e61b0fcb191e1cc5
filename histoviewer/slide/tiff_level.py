"""Pixel access to one TIFF page (one pyramid level).

Compressed pages are read tile by tile (or strip by strip): only the segments
a region touches, their bytes with positional reads, their decoding outside any
lock so that several threads decode at once, and the decoded tiles kept in the
slide's :class:`DecodedTileCache`. Uncompressed contiguous images (such as the Kather
CRC-Prim-HE strip TIFFs) need no decoding and are read straight from the file
by offset.

Nothing is memory-mapped: a mapped file that shrinks while open (another file
copied over it) kills the whole process with SIGBUS, which Python cannot catch,
whereas a read that comes up short is an ordinary :class:`SlideError`.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from histoviewer.errors import SlideError
from histoviewer.slide.pixels import PixelLayout
from histoviewer.slide.tilecache import DecodedTileCache

# A single tile or strip bigger than this (decoded) means the file cannot be
# read piecewise (e.g. a whole gigapixel image compressed as one strip).
MAX_SEGMENT_BYTES = 2**30

# How an uncompressed contiguous image is read (measured on a 5000 px wide
# strip TIFF; one positional read costs about as much as copying 16 KB):
# - a region spanning at least 1 / _BAND_WASTE of the width (a mapping row
#   band, a viewer tile of a small level) is one read of the rows it spans;
_BAND_WASTE = 4
# - a narrower region reads blocks of whole rows of about this size, kept in
#   the tile cache, so that neighbouring patches and tiles share them;
_RAW_BLOCK_BYTES = 2**20
# - unless rows are longer than this: then whole rows waste too much, and a
#   narrow region is read row by row, only the columns it covers.
_MAX_BLOCK_ROW_BYTES = 2**15

_POSITIONAL_READS = hasattr(os, "pread") and hasattr(os, "preadv")
_JPEG = {6, 7, 33007, 34892}
_OJPEG = 6


class FileReader:
    """Reads the bytes at an offset of an open file, safely from any thread.

    Uses positional reads (``os.pread`` / ``os.preadv``), which share no file
    position and so need no lock; where the platform has none (Windows) it
    seeks and reads under ``lock``. A read returns fewer bytes than asked only
    where the file ends; OSError passes through.
    """

    def __init__(self, fh: Any, lock: threading.Lock) -> None:
        self._fh = fh  # tifffile's FileHandle (or any file object at offset 0)
        self._lock = lock
        self._fd = fh.fileno() if _POSITIONAL_READS else None

    def read(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset``."""
        if self._fd is None:
            with self._lock:
                self._fh.seek(offset)
                return self._fh.read(count)
        data = os.pread(self._fd, count, offset)
        if 0 < len(data) < count:  # rare, e.g. interrupted: collect the rest
            parts = [data]
            while (done := sum(map(len, parts))) < count:
                part = os.pread(self._fd, count - done, offset + done)
                if not part:
                    break
                parts.append(part)
            data = b"".join(parts)
        return data

    def readinto(self, buffer: memoryview, offset: int) -> int:
        """Fill the writable byte buffer from ``offset``; the number of bytes read."""
        size, done = buffer.nbytes, 0
        if self._fd is None:
            with self._lock:
                self._fh.seek(offset)
                while done < size and (got := self._fh.readinto(buffer[done:])):
                    done += got
            return done
        while done < size and (got := os.preadv(self._fd, [buffer[done:]], offset + done)):
            done += got
        return done


def check_compression(path: Path, page: tifffile.TiffPage) -> None:
    """Raise :class:`SlideError` when ``page`` is stored in a way that cannot be decoded.

    Catches, when the file is opened, what would otherwise fail on every read
    (and look like damage): a codec tifffile or imagecodecs lacks, and chroma
    subsampled YCbCr without JPEG. Old-style JPEG is probed by
    :class:`TiffLevel`, since some such files do decode.
    """
    compression = int(page.compression)
    name = _compression_name(page)
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        raise SlideError(
            f"{path} cannot be opened: it uses unsupported compression {name}, which "
            "tifffile and imagecodecs cannot decode"
        )
    if page.is_subsampled and (compression not in _JPEG or page.planarconfig == 2):
        h, v = page.subsampling or (2, 2)
        raise SlideError(
            f"{path} cannot be opened: it uses unsupported compression {name} with "
            f"{h} x {v} YCbCr chroma subsampling (only JPEG-compressed YCbCr may be "
            "subsampled)"
        )


def _compression_name(page: tifffile.TiffPage) -> str:
    return getattr(page.compression, "name", None) or str(int(page.compression))


class TiffLevel:
    """Reads in-bounds regions of one page as RGB uint8.

    ``reader`` reads the file's bytes, ``cache`` is shared by all levels of
    the slide, ``file_size`` is the size when the file was opened (image data
    beyond it means the file is truncated) and ``byteorder`` the file's ("<"
    or ">"). Raises :class:`SlideError` when the page cannot be read.
    """

    def __init__(
        self,
        *,
        path: Path,
        index: int,
        page: tifffile.TiffPage,
        layout: PixelLayout,
        reader: FileReader,
        cache: DecodedTileCache,
        file_size: int,
        byteorder: str,
    ) -> None:
        self.path = path
        self.index = index
        self.layout = layout
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        self.tiled = bool(page.is_tiled)
        self._reader = reader
        self._cache = cache
        self._ojpeg = int(page.compression) == _OJPEG
        self._samples = samples = int(page.samplesperpixel)
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
        # Set for uncompressed contiguous pages, read by offset without decoding.
        self._raw_dtype: np.dtype | None = None
        if self._is_raw(page):
            self._setup_raw(page, file_size, byteorder)
            return
        if self._tw * self._th * samples * page.dtype.itemsize > MAX_SEGMENT_BYTES:
            raise SlideError(
                f"{path} cannot be opened: level {index} is stored as blocks of "
                f"{self._tw} x {self._th} pixels, too large to read piece by piece"
            )
        page.init_decode()  # decode is a lazily built closure: build it on this thread
        self._decode = page.decode
        self._jpeg = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
        try:
            self._decode(None, 0, **self._jpeg)  # raises at once if it cannot decode
        except (ValueError, NotImplementedError) as exc:
            raise SlideError(
                f"{path} cannot be opened: the pixels of level {index} cannot be decoded ({exc})"
            ) from None
        if self._ojpeg:
            self._probe_ojpeg()

    @property
    def contiguous_uncompressed(self) -> bool:
        """Whether the pixels are read straight from the file (no decoding)."""
        return self._raw_dtype is not None

    def _check_extent(self, file_size: int) -> None:
        expected = self._planes * self._across * self._down
        if len(self._offsets) != expected or len(self._counts) != expected:
            raise SlideError(
                f"{self.path} is damaged: level {self.index} lists {len(self._offsets)} "
                f"tiles or strips where its size needs {expected}"
            )
        ends = self._offsets + self._counts
        if ends.size and int(ends.max()) > file_size:
            raise self._cut_short(int(ends.max()), file_size)

    def _cut_short(self, end: int, file_size: int) -> SlideError:
        return SlideError(
            f"{self.path} is damaged: it is truncated (its image data runs to byte "
            f"{end} but the file has {file_size} bytes); was a copy or download interrupted?"
        )

    def _is_raw(self, page: tifffile.TiffPage) -> bool:
        return bool(
            page.is_contiguous
            and page.fillorder == 1
            and page.predictor == 1
            and not page.is_subsampled
            and self._planes == 1
            and page.bitspersample in (8, 16)
            and page.dtype.kind == "u"
        )

    def _setup_raw(self, page: tifffile.TiffPage, file_size: int, byteorder: str) -> None:
        """Treat the image as strips of whole rows at computed offsets (see module notes)."""
        self._raw_dtype = np.dtype(page.dtype).newbyteorder(byteorder)
        self._pixel_bytes = self._samples * self._raw_dtype.itemsize
        self._row_bytes = self.width * self._pixel_bytes
        self._raw_offset = int(self._offsets[0])
        size = self.height * self._row_bytes
        # A single strip can claim more pixels than its bytes hold: trust neither.
        if int(self._counts.sum()) < size:
            raise SlideError(
                f"{self.path} is damaged: level {self.index} is {self.width} x {self.height} "
                f"pixels ({size} bytes uncompressed) but its strips hold only "
                f"{int(self._counts.sum())} bytes"
            )
        if self._raw_offset + size > file_size:
            raise self._cut_short(self._raw_offset + size, file_size)
        rows = max(1, _RAW_BLOCK_BYTES // self._row_bytes)
        self._tw, self._th = self.width, rows
        self._across, self._down = 1, math.ceil(self.height / rows)
        tops = np.arange(self._down, dtype=np.int64) * rows
        self._offsets = self._raw_offset + tops * self._row_bytes
        self._counts = np.minimum(rows, self.height - tops) * self._row_bytes

    def _probe_ojpeg(self) -> None:
        """Old-style JPEG decodes only where its strips are whole JPEG streams: try one."""
        filled = np.flatnonzero((self._offsets > 0) & (self._counts > 0))
        if not filled.size:
            return
        segment = int(filled[0])
        data = self._read_bytes_of([segment])[segment]
        try:
            self._decode(data, segment, **self._jpeg)
        except Exception as exc:  # codecs raise many types
            raise SlideError(
                f"{self.path} cannot be opened: it uses unsupported compression OJPEG "
                f"(old-style JPEG, TIFF compression 6; {type(exc).__name__}: "
                f"{str(exc)[:120]}); re-save it with current JPEG compression first"
            ) from None

    # -- reading ---------------------------------------------------------------

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The region [x0, x1) x [y0, y1), which lies inside the level."""
        if self._raw_dtype is not None:
            if (x1 - x0) * _BAND_WASTE >= self.width:
                return self.layout.to_rgb(self._read_rows(x0, y0, x1, y1))
            if self._row_bytes > _MAX_BLOCK_ROW_BYTES:
                return self.layout.to_rgb(self._read_row_by_row(x0, y0, x1, y1))
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

    def _read_rows(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Raw pixels of the region, from one read of all the bytes it spans."""
        h = y1 - y0
        buffer = np.empty(h * self._row_bytes, np.uint8)
        start = x0 * self._pixel_bytes  # from the region's first pixel to its last
        stop = (h - 1) * self._row_bytes + x1 * self._pixel_bytes
        self._fill(memoryview(buffer)[start:stop], self._raw_offset + y0 * self._row_bytes + start)
        rows = buffer.view(self._raw_dtype).reshape(h, self.width, self._samples)
        return rows[:, x0:x1]

    def _read_row_by_row(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Raw pixels of the region, one read per row of only the columns it covers."""
        out = np.empty((y1 - y0, (x1 - x0) * self._pixel_bytes), np.uint8)
        first = self._raw_offset + y0 * self._row_bytes + x0 * self._pixel_bytes
        for i, row in enumerate(out):
            self._fill(memoryview(row), first + i * self._row_bytes)
        return out.view(self._raw_dtype).reshape(y1 - y0, x1 - x0, self._samples)

    def _fill(self, buffer: memoryview, offset: int) -> None:
        try:
            got = self._reader.readinto(buffer, offset)
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc) from None
        if got < buffer.nbytes:
            raise self._truncated(offset + buffer.nbytes, offset + got)

    def _unreadable(self, exc: Exception) -> SlideError:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return SlideError(f"{self.path} could not be read: {why}")

    def _truncated(self, needed: int, end: int) -> SlideError:
        return SlideError(
            f"{self.path} is damaged: it is truncated (level {self.index}'s pixels run to "
            f"byte {needed} but the file now ends at byte {end}); was it overwritten while "
            "open, or is a copy still running?"
        )

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
        raw = self._read_bytes_of(
            [self._segment(pos, p) for pos in missing for p in range(self._planes)]
        )
        for pos in missing:
            tile = self._decode_tile(pos, raw)
            self._cache.put((self.index, pos), tile)
            found[pos] = tile
        return found

    def _segment(self, pos: tuple[int, int], plane: int) -> int:
        c, r = pos
        return (plane * self._down + r) * self._across + c

    def _read_bytes_of(self, segments: list[int]) -> dict[int, bytes | None]:
        """The stored bytes of ``segments`` (None = an empty segment), in file order."""
        out: dict[int, bytes | None] = {}
        for s in sorted(segments, key=lambda s: self._offsets[s]):
            offset, count = int(self._offsets[s]), int(self._counts[s])
            if offset <= 0 or count <= 0:
                out[s] = None
                continue
            try:
                data = self._reader.read(offset, count)
            except (OSError, ValueError) as exc:
                raise self._unreadable(exc) from None
            if len(data) != count:
                raise self._truncated(offset + count, offset + len(data))
            out[s] = data
        return out

    def _decode_tile(self, pos: tuple[int, int], raw: dict[int, bytes | None]) -> np.ndarray:
        c, r = pos
        h = min(self._th, self.height - r * self._th)
        w = min(self._tw, self.width - c * self._tw)
        if self._raw_dtype is not None:  # a block of whole rows of a contiguous image
            data = raw[self._segment(pos, 0)]
            assert data is not None  # computed offsets are never empty
            block = np.frombuffer(data, self._raw_dtype).reshape(h, w, self._samples)
            return self.layout.to_rgb(block)
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
        if self._ojpeg:
            return SlideError(
                f"{self.path} cannot be read: {kind} {segment} of level {self.index} uses "
                f"unsupported compression OJPEG (old-style JPEG) and cannot be decoded "
                f"({why[:200]})"
            )
        return SlideError(
            f"{self.path} is damaged: {kind} {segment} of level {self.index} cannot be "
            f"read ({why[:200]})"
        )
