"""TIFF-based slides read with tifffile: SVS, NDPI, OME-TIFF, pyramids, strips."""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from histoviewer.errors import SlideError
from histoviewer.slide import mpp as mpp_
from histoviewer.slide.base import SlideReader
from histoviewer.slide.pixels import (
    MINISBLACK,
    MINISWHITE,
    PALETTE,
    RGB,
    YCBCR,
    PixelLayout,
    check_layout,
)
from histoviewer.slide.tiff_level import FileReader, TiffLevel, check_compression
from histoviewer.slide.tilecache import DecodedTileCache

logger = logging.getLogger(__name__)


class _TifffileNotes(logging.Handler):
    """tifffile's own warnings about a file's quirks, as our debug lines.

    Without a handler they would reach stderr raw (Python's last-resort handler),
    in tifffile's words and between our one-line messages; what matters to the
    user is said by our own checks and errors.
    """

    def emit(self, record: logging.LogRecord) -> None:
        logger.debug("tifffile: %s", record.getMessage())


_tifffile_log = logging.getLogger("tifffile")
_tifffile_log.addHandler(_TifffileNotes())
_tifffile_log.propagate = False

# Series that hold pictures of the glass slide, not levels of the tissue image.
_AUXILIARY = {"thumbnail", "label", "macro", "map", "overview"}
_PHOTOMETRIC = {0: MINISWHITE, 1: MINISBLACK, 2: RGB, 3: PALETTE, 6: YCBCR}
_JPEG = {6, 7, 33007, 34892}
_APERIO_J2K_YCBCR = 33003


class TiffSlide(SlideReader):
    """A slide in any TIFF layout tifffile understands, read tile by tile."""

    def __init__(self, path: str | os.PathLike, *, cache_bytes: int = 48 * 2**20) -> None:
        self.path = Path(path)
        self._io_lock = threading.Lock()  # for reads where positional reads are missing
        self._cache = DecodedTileCache(cache_bytes)
        self._tif, self._handle = _open_tiff(self.path)
        try:
            self._setup()
        except BaseException:
            self._close_file()
            raise

    def _setup(self) -> None:
        tif = self._tif
        if len(tif.pages) == 0:
            raise SlideError(
                f"{self.path} cannot be opened: it is not a valid TIFF file or is damaged "
                "(no readable image directory)"
            )
        first = tif.pages.first
        if 0 in (first.imagewidth, first.imagelength):
            raise SlideError(f"{self.path} cannot be opened: its image is empty (0 pixels)")
        try:
            series = list(tif.series)
        except Exception as exc:
            raise SlideError(
                f"{self.path} cannot be opened: its TIFF structure is invalid ({exc})"
            ) from None
        main = _main_series(series)
        if main is None:
            raise SlideError(
                f"{self.path} cannot be opened: it contains no image (or an empty one)"
            )
        _check_axes(self.path, main)
        level_series = list(main.levels)
        if len(level_series) == 1 and not (tif.is_svs or tif.is_ndpi or tif.is_ome):
            level_series += _loose_levels(main, series)
        file_size = os.path.getsize(self.path)
        reader = FileReader(tif.filehandle, self._io_lock)
        self._levels: list[TiffLevel] = []
        for index, level in enumerate(level_series):
            page = level.keyframe
            if not isinstance(page, tifffile.TiffPage) or 0 in (page.imagewidth, page.imagelength):
                break
            check_compression(self.path, page)
            self._levels.append(
                TiffLevel(
                    path=self.path,
                    index=index,
                    page=page,
                    layout=self._layout(page),
                    reader=reader,
                    cache=self._cache,
                    file_size=file_size,
                    byteorder=tif.byteorder,
                )
            )
        if not self._levels:
            raise SlideError(f"{self.path} cannot be opened: its image is empty (0 pixels)")
        self.level_dimensions = tuple((lv.width, lv.height) for lv in self._levels)
        self.level_downsamples = self._downsamples_from_dimensions()
        self.format_name = self._format_name()
        candidates = self._mpp_candidates()
        self.mpp, self.mpp_source = mpp_.choose_mpp(self.path, candidates)
        self.mpp_note = mpp_.assumed_because(candidates)

    def _layout(self, page: tifffile.TiffPage) -> PixelLayout:
        """How ``page``'s decoded pixels must be turned into RGB, or SlideError."""
        compression = int(page.compression)
        photometric = _PHOTOMETRIC.get(int(page.photometric))
        if photometric == YCBCR and compression in _JPEG:
            photometric = RGB  # the JPEG decoder already converts YCbCr to RGB
        elif photometric == YCBCR and compression != _APERIO_J2K_YCBCR:
            photometric = None  # subsampled raw YCbCr: rare, not supported
        if compression == _APERIO_J2K_YCBCR:
            photometric = YCBCR  # Aperio's JPEG 2000 variant stores Y, Cb, Cr planes
        if photometric is None:
            name = getattr(page.photometric, "name", str(page.photometric)).lower()
            why = f"uses the {name} colour model, which is not supported"
        else:
            samples = int(page.samplesperpixel)
            extra = len(page.extrasamples) if samples > 1 else 0
            why = check_layout(
                dtype=page.dtype, samples=samples, photometric=photometric, extra_samples=extra
            )
        if why:
            raise SlideError(f"{self.path} cannot be opened: it {why}")
        extras = tuple(int(e) for e in page.extrasamples) if page.samplesperpixel > 1 else ()
        colormap = None
        if photometric == PALETTE:
            if page.colormap is None:
                raise SlideError(f"{self.path} cannot be opened: its palette is missing")
            cmap = np.asarray(page.colormap)
            scale = 257 if cmap.max() > 255 else 1  # 16-bit TIFF palettes
            colormap = np.ascontiguousarray((cmap // scale).astype(np.uint8).T[:, :3])
        maxvalue = 255
        if page.dtype.itemsize == 2:
            stored_max = page.tags.valueof(281)  # MaxSampleValue, e.g. 4095 for 12-bit data
            value = np.max(stored_max) if stored_max is not None else 65535
            maxvalue = int(value) if 255 < value <= 65535 else 65535
        return PixelLayout(
            dtype=page.dtype,
            colours=3 if photometric in (RGB, YCBCR) else 1,
            photometric=photometric,
            alpha=bool(extras) and extras[0] in (1, 2),
            premultiplied=bool(extras) and extras[0] == 1,
            maxvalue=maxvalue,
            colormap=colormap,
        )

    def _format_name(self) -> str:
        tif = self._tif
        if tif.is_svs:
            return "Aperio SVS"
        if tif.is_ndpi:
            return "Hamamatsu NDPI"
        if tif.is_ome:
            return "OME-TIFF"
        base = self._levels[0]
        if len(self._levels) > 1:
            return "TIFF (tiled pyramid)" if base.tiled else "TIFF (pyramid)"
        return "TIFF (tiled)" if base.tiled else "TIFF (strips)"

    def _mpp_candidates(self) -> list[tuple[float | None, str]]:
        page = self._tif.pages.first
        candidates: list[tuple[float | None, str]] = []
        if self._tif.is_svs or "Aperio" in (page.description or "")[:64]:
            candidates.append((mpp_.aperio_mpp(page.description), mpp_.APERIO))
        if self._tif.is_ome:
            candidates.append((self._ome_mpp(), mpp_.OME))
        xres, unit = page.tags.valueof(282), page.tags.valueof(296)
        if xres is not None:
            try:
                ppu = xres[0] / xres[1] if isinstance(xres, tuple) else float(xres)
            except (TypeError, ZeroDivisionError):
                ppu = None
            candidates.append((mpp_.resolution_mpp(ppu, int(unit or 2)), mpp_.RESOLUTION))
        return candidates

    def _ome_mpp(self) -> float | None:
        """PhysicalSizeX of the OME Image whose size matches level 0."""
        xml = self._tif.ome_metadata
        if not xml:
            return None
        try:
            root = ElementTree.fromstring(xml)
        except ElementTree.ParseError:
            logger.warning("%s: its OME-XML metadata cannot be parsed", self.path)
            return None
        width, height = self.level_dimensions[0]
        for pixels in root.iter():
            if not pixels.tag.endswith("Pixels") or "PhysicalSizeX" not in pixels.attrib:
                continue
            if pixels.get("SizeX") not in (None, str(width)) or pixels.get("SizeY") not in (
                None,
                str(height),
            ):
                continue
            try:
                value = float(pixels.attrib["PhysicalSizeX"])
            except ValueError:
                return None
            return mpp_.unit_to_um(value, pixels.get("PhysicalSizeXUnit"))
        return None

    def _read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._levels[level].read(x0, y0, x1, y1)

    @property
    def contiguous_uncompressed(self) -> bool:
        """Whether level 0 is stored uncompressed in one run and read straight from the
        file by offset, with no decoding (e.g. the CRC-Prim-HE strip TIFFs)."""
        return self._levels[0].contiguous_uncompressed

    @property
    def cache(self) -> DecodedTileCache:
        """The decoded-tile cache (its hit and miss counts help tests and tuning)."""
        return self._cache

    def _close(self) -> None:
        self._cache.clear()
        self._close_file()

    def _close_file(self) -> None:
        self._tif.close()
        if self._handle is not None:
            self._handle.close()


def _open_tiff(path: Path) -> tuple[tifffile.TiffFile, BinaryIO | None]:
    """The parsed file, plus a handle to close with it when we had to open one."""
    handle = None
    try:
        if _classic_tiff_named_ndpi(path):
            # tifffile reads *.ndpi with NDPI's 64-bit offsets, which makes a
            # classic TIFF carrying Hamamatsu's tags (as other tools save them)
            # unreadable; a neutral name keeps the NDPI series logic.
            handle = open(path, "rb")  # noqa: SIM115 (closed with the reader)
            return tifffile.TiffFile(handle, name=path.stem + ".tif"), handle
        return tifffile.TiffFile(path), None
    except Exception as exc:  # tifffile raises many types on malformed files
        if handle is not None:
            handle.close()
        raise SlideError(f"{path} cannot be opened: it is not a valid TIFF file ({exc})") from None


def _classic_tiff_named_ndpi(path: Path) -> bool:
    if path.suffix.lower() != ".ndpi":
        return False
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"II*\x00":
        return False
    ndpi_offset = int.from_bytes(head[4:12], "little")
    return ndpi_offset >= os.path.getsize(path)


def _main_series(series: list[tifffile.TiffPageSeries]) -> tifffile.TiffPageSeries | None:
    """The tissue image: the largest series that is not a label, macro or thumbnail."""
    best, best_pixels = None, 0
    for s in series:
        if (s.name or "").lower() in _AUXILIARY:
            continue
        page = s.keyframe
        if page is None:
            continue
        pixels = int(page.imagewidth) * int(page.imagelength)
        if pixels > best_pixels:
            best, best_pixels = s, pixels
    return best


def _check_axes(path: Path, series: tifffile.TiffPageSeries) -> None:
    """Refuse stacks, time series and multi-channel images: one 2-D picture only."""
    axes = "".join(a for a, n in zip(series.axes, series.shape, strict=True) if n > 1 or a in "YX")
    if axes in ("YX", "YXS", "SYX"):
        return
    shape = " x ".join(str(n) for n in series.shape)
    raise SlideError(
        f"{path} cannot be opened: it holds a {len(axes)}-D image (axes {series.axes}, "
        f"shape {shape}), e.g. a z-stack or multi-channel fluorescence; only single 2-D "
        "brightfield images are supported"
    )


def _loose_levels(
    main: tifffile.TiffPageSeries, series: list[tifffile.TiffPageSeries]
) -> list[tifffile.TiffPageSeries]:
    """Smaller copies of ``main`` stored as separate pages without pyramid markings."""
    base = main.keyframe
    w0, h0 = int(base.imagewidth), int(base.imagelength)
    found = []
    for s in series:
        page = s.keyframe
        if s is main or page is None or (s.name or "").lower() in _AUXILIARY:
            continue
        w, h = int(page.imagewidth), int(page.imagelength)
        if not (0 < w < w0 and 0 < h < h0):
            continue
        same_pixels = (
            page.dtype == base.dtype
            and page.samplesperpixel == base.samplesperpixel
            and page.photometric == base.photometric
        )
        ds_x, ds_y = w0 / w, h0 / h
        if same_pixels and abs(ds_x - ds_y) <= 0.02 * ds_x and len(s.pages) == 1:
            found.append(s)
    found.sort(key=lambda s: -int(s.keyframe.imagewidth))
    return found
