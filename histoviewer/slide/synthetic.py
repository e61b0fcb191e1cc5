"""Synthetic H&E-like slides and writers for every layout ``open_slide`` reads.

Used by tests, the benchmark and the demos. Each writer takes either an
``image`` (an (h, w, 3) uint8 array, kept in memory) or, when ``image`` is
None, a ``width`` x ``height`` synthetic slide that is generated tile by tile
(see :func:`he_region`), so a 100k x 100k file is written without ever being
held in memory. Levels below 0 are 2x (4x for SVS/NDPI) box reductions of an
``image``, or the generator sampled more coarsely.

All writers return the path written. They write directly (not atomically):
they make fixtures and demo data, not user results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from histoviewer.slide.mpp import DEFAULT_MPP
from histoviewer.slide.pixels import rgb_to_ycbcr
from histoviewer.slide.synthetic_he import he_region, synthetic_he

__all__ = [
    "APERIO_DESCRIPTION",
    "he_region",
    "synthetic_he",
    "write_ndpi_like",
    "write_ome_tiff",
    "write_pyramid_tiff",
    "write_strip_tiff",
    "write_svs",
]

#: The start of every Aperio ImageDescription (tifffile's ``is_svs`` test).
APERIO_DESCRIPTION = "Aperio Image Library v12.0.15"

# A level source: (level, x, y, w, h) -> (h, w, 3) uint8, x/y in that level's pixels.
Source = Callable[[int, int, int, int, int], np.ndarray]


def write_strip_tiff(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    width: int = 5000,
    height: int = 5000,
    mpp: float = DEFAULT_MPP,
    rows_per_strip: int = 16,
    seed: int = 0,
) -> Path:
    """An uncompressed RGB strip TIFF like the Kather CRC-Prim-HE slides.

    One level, contiguous uncompressed strips of ``rows_per_strip`` rows,
    XResolution/YResolution in pixels per centimetre for ``mpp``.
    """
    path = Path(path)
    image, width, height = _image_or_size(image, width, height)
    source = _source(image, width, height, seed, 1)
    strip_rows = max(1, min(rows_per_strip, height))

    def strips() -> Iterator[bytes]:
        for top in range(0, height, strip_rows):
            rows = min(strip_rows, height - top)
            yield np.ascontiguousarray(source(0, 0, top, width, rows)).tobytes()

    with tifffile.TiffWriter(path) as tw:
        tw.write(
            strips(),
            shape=(height, width, 3),
            dtype=np.uint8,
            photometric="rgb",
            rowsperstrip=strip_rows,
            **_resolution(mpp),
            metadata=None,
        )
    return path


def write_pyramid_tiff(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    width: int = 4096,
    height: int = 4096,
    mpp: float = DEFAULT_MPP,
    tile: int = 256,
    compression: str | None = "jpeg",
    quality: int = 90,
    levels: int | None = None,
    layout: str = "subifds",
    seed: int = 0,
) -> Path:
    """A tiled pyramid TIFF with 2x levels, written tile by tile.

    ``compression``: "jpeg" (YCbCr, ``quality``), "zlib", "lzw", "zstd",
    "webp" or None. ``levels`` defaults to halving until a level fits in one
    tile. ``layout``: "subifds" (levels as SubIFDs of page 0, as OME and
    libvips write them) or "pages" (each level a reduced-resolution page).
    """
    if layout not in ("subifds", "pages"):
        raise ValueError(f"layout must be 'subifds' or 'pages', not {layout!r}")
    path = Path(path)
    image, width, height = _image_or_size(image, width, height)
    plan = _plan(width, height, tile, 2, levels)
    source = _source(image, width, height, seed, 2)
    options = _tile_options(compression, quality)
    with tifffile.TiffWriter(path, bigtiff=_needs_bigtiff(width, height)) as tw:
        for level, (w, h) in enumerate(plan):
            extra: dict = {}
            if level == 0:
                extra.update(_resolution(mpp))
                if layout == "subifds" and len(plan) > 1:
                    extra["subifds"] = len(plan) - 1
            else:
                extra["subfiletype"] = 1
            tw.write(
                _tiles(source, level, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                metadata=None,
                **options,
                **extra,
            )
    return path


def write_svs(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    width: int = 4096,
    height: int = 4096,
    mpp: float = DEFAULT_MPP,
    tile: int = 240,
    compression: str = "jpeg",
    quality: int = 80,
    levels: int | None = None,
    j2k_ycbcr: bool = False,
    label: bool = True,
    macro: bool = True,
    magnification: int = 20,
    seed: int = 0,
) -> Path:
    """An Aperio SVS file laid out as ScanScope writes it.

    Page 0 is the tiled baseline, page 1 a stripped thumbnail, then 4x
    reduced tiled levels, then (optionally) a label and a macro picture; the
    ImageDescriptions carry ``AppMag`` and ``MPP``. Tiles are ``compression``
    "jpeg" (RGB JPEG streams, no YCbCr conversion, as Aperio stores them;
    ``quality`` 1-100) or "jpeg2000" (lossless; Aperio compression 33005, or
    33003 with Y, Cb, Cr components when ``j2k_ycbcr``).
    """
    if compression not in ("jpeg", "jpeg2000"):
        raise ValueError(f"compression must be 'jpeg' or 'jpeg2000', not {compression!r}")
    path = Path(path)
    image, width, height = _image_or_size(image, width, height)
    # Imported here: only these compressed writers need it (not the benchmark's strip
    # TIFF, which runs on GPU machines that may lack imagecodecs).
    import imagecodecs

    plan = _plan(width, height, max(tile, 512), 4, levels)
    source = _source(image, width, height, seed, 4)
    if compression == "jpeg":
        code, codec = 7, f"JPEG/RGB Q={quality}"
        # Tag the tiles Photometric RGB (not tifffile's default YCbCr) to match the streams.
        jpeg_args = {"compressionargs": {"outcolorspace": "RGB"}, "subsampling": (1, 1)}

        def encode(tile_rgb: np.ndarray) -> bytes:
            return _aperio_jpeg(
                imagecodecs.jpeg8_encode(
                    tile_rgb, level=quality, colorspace="RGB", outcolorspace="RGB"
                )
            )
    else:
        code = 33003 if j2k_ycbcr else 33005
        jpeg_args = {}
        codec = "J2K/YUV16" if j2k_ycbcr else "J2K/KDU"

        def encode(tile_rgb: np.ndarray) -> bytes:
            data = rgb_to_ycbcr(tile_rgb) if j2k_ycbcr else tile_rgb
            return imagecodecs.jpeg2k_encode(
                data, codecformat="J2K", reversible=True, mct=not j2k_ycbcr
            )

    head = f"{APERIO_DESCRIPTION}\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    meta = f"|AppMag = {magnification}|MPP = {mpp:.4f}|ScanScope ID = SS1234"
    thumb = _thumbnail_array(source, plan, 768)
    with tifffile.TiffWriter(path, bigtiff=_needs_bigtiff(width, height)) as tw:
        for level, (w, h) in enumerate(plan):
            if level == 1:
                tw.write(
                    thumb,
                    photometric="rgb",
                    description=f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} - {meta}",
                    compression="jpeg",
                    compressionargs={"level": 90},
                    metadata=None,
                )
            size = "" if level == 0 else f" -> {w}x{h}"
            tw.write(
                (encode(t) for t in _tiles(source, level, w, h, tile)),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=code,
                description=f"{head}{size} {codec}{meta}",
                metadata=None,
                **(_resolution(mpp) if level == 0 else {}),
                **jpeg_args,
            )
        if len(plan) == 1:
            tw.write(thumb, photometric="rgb", description=f"{head} - {meta}", metadata=None)
        if label:
            tw.write(
                _label_picture(),
                photometric="rgb",
                subfiletype=1,
                compression="lzw",
                description=f"{APERIO_DESCRIPTION}\r\nlabel 380x200",
                metadata=None,
            )
        if macro:
            tw.write(
                _macro_picture(thumb),
                photometric="rgb",
                subfiletype=9,
                compression="jpeg",
                description=f"{APERIO_DESCRIPTION}\r\nmacro 1280x431",
                metadata=None,
            )
    return path


def write_ome_tiff(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    width: int = 2048,
    height: int = 2048,
    mpp: float = DEFAULT_MPP,
    unit: str = "µm",
    tile: int = 256,
    levels: int = 1,
    compression: str | None = "zlib",
    quality: int = 90,
    seed: int = 0,
) -> Path:
    """An OME-TIFF: RGB (axes YXS), PhysicalSizeX/Y = ``mpp`` in ``unit``
    (given in that unit, e.g. ``mpp=495, unit="nm"``), ``levels`` 2x levels as
    SubIFDs (``levels=None``: down to one tile)."""
    path = Path(path)
    image, width, height = _image_or_size(image, width, height)
    plan = _plan(width, height, tile, 2, levels)
    source = _source(image, width, height, seed, 2)
    options = _tile_options(compression, quality)
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": unit,
    }
    with tifffile.TiffWriter(path, ome=True, bigtiff=_needs_bigtiff(width, height)) as tw:
        for level, (w, h) in enumerate(plan):
            extra = (
                {"subifds": len(plan) - 1, "metadata": metadata}
                if level == 0
                else {"subfiletype": 1, "metadata": None}
            )
            tw.write(
                _tiles(source, level, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                **options,
                **extra,
            )
    return path


def write_ndpi_like(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    width: int = 2048,
    height: int = 2048,
    mpp: float = DEFAULT_MPP,
    tile: int = 256,
    quality: int = 90,
    levels: int | None = None,
    magnification: float = 20.0,
    macro: bool = True,
    seed: int = 0,
) -> Path:
    """A TIFF with Hamamatsu's private NDPI tags, so tifffile reports ``is_ndpi``.

    Levels are 4x-reduced JPEG pages, each tagged with its source lens; the
    scale is in X/YResolution (pixels per centimetre), as NanoZoomers write
    it; a macro page has lens -1. Real NDPI files store each level as one
    JPEG with restart markers (tifffile splits it using McuStarts); this one
    uses ordinary tiles, which is enough to exercise the NDPI code paths.
    """
    path = Path(path)
    image, width, height = _image_or_size(image, width, height)
    plan = _plan(width, height, tile, 4, levels)
    source = _source(image, width, height, seed, 4)
    options = _tile_options("jpeg", quality)
    with tifffile.TiffWriter(path) as tw:
        for level, (w, h) in enumerate(plan):
            tw.write(
                _tiles(source, level, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                extratags=_ndpi_tags(magnification / 4**level),
                **_resolution(mpp * 4**level),
                metadata=None,
                **options,
            )
        if macro:
            tw.write(
                _macro_picture(_thumbnail_array(source, plan, 400)),
                photometric="rgb",
                extratags=_ndpi_tags(-1.0),
                metadata=None,
                **options,
            )
    return path


# -- helpers -----------------------------------------------------------------------


def _image_or_size(
    image: np.ndarray | None, width: int, height: int
) -> tuple[np.ndarray | None, int, int]:
    if image is None:
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be positive, got {width} x {height}")
        return None, int(width), int(height)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (h, w, 3) uint8, got {image.shape} {image.dtype}")
    return image, image.shape[1], image.shape[0]


def _plan(
    width: int, height: int, tile: int, factor: int, levels: int | None
) -> list[tuple[int, int]]:
    """Level sizes: each ``factor`` times smaller (rounded up) than level 0."""
    sizes = [(width, height)]
    while (levels is None and max(sizes[-1]) > tile) or (
        levels is not None and len(sizes) < levels
    ):
        ds = factor ** len(sizes)
        w, h = math.ceil(width / ds), math.ceil(height / ds)
        if levels is None and min(w, h) < 16:
            break
        sizes.append((max(1, w), max(1, h)))
    return sizes


def _source(image: np.ndarray | None, width: int, height: int, seed: int, factor: int) -> Source:
    """Pixels of any level: box-reduced from ``image``, or generated."""
    if image is None:

        def generated(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
            return he_region(x, y, w, h, downsample=float(factor**level), seed=seed)

        return generated
    halvings = int(math.log2(factor))
    halved = [image]  # halved[k]: image reduced 2**k times

    def from_image(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        while len(halved) <= level * halvings:
            halved.append(_halve(halved[-1]))
        return halved[level * halvings][y : y + h, x : x + w]

    return from_image


def _halve(image: np.ndarray) -> np.ndarray:
    """Mean of 2 x 2 blocks (rounded); an odd last row/column is repeated."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    total = image[0::2, 0::2].astype(np.uint16) + image[1::2, 0::2]
    total += image[0::2, 1::2]
    total += image[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def _tiles(source: Source, level: int, w: int, h: int, tile: int) -> Iterator[np.ndarray]:
    """Full ``tile`` x ``tile`` tiles in row-major order, edge tiles padded white."""
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            part = source(level, x, y, min(tile, w - x), min(tile, h - y))
            if part.shape[:2] == (tile, tile):
                yield np.ascontiguousarray(part)
            else:
                full = np.full((tile, tile, 3), 255, np.uint8)
                full[: part.shape[0], : part.shape[1]] = part
                yield full


def _tile_options(compression: str | None, quality: int) -> dict:
    if compression is None or compression == "none":
        return {"compression": None}
    if compression == "jpeg":
        return {"compression": "jpeg", "compressionargs": {"level": quality}}
    if compression == "webp":
        return {"compression": "webp", "compressionargs": {"level": quality}}
    return {"compression": compression}


def _resolution(mpp: float) -> dict:
    """X/YResolution tags for ``mpp`` in pixels per centimetre."""
    ppcm = 1e4 / mpp
    return {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}


def _needs_bigtiff(width: int, height: int) -> bool:
    # Compressed data is smaller, but pick BigTIFF early rather than fail at 4 GB.
    return width * height * 3 > 2**31


def _thumbnail_array(source: Source, plan: list[tuple[int, int]], size: int) -> np.ndarray:
    """A small picture of the slide from its smallest level (for thumbnail/macro pages)."""
    from PIL import Image

    level = len(plan) - 1
    w, h = plan[level]
    scale = min(1.0, size / max(w, h))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    if w * h > 4096 * 4096:  # a single-level giant: sample the generator coarsely
        step = max(w / tw, h / th)
        rows = [source(level, 0, int(r * step), w, 1)[:, :: max(1, int(step))] for r in range(th)]
        picture = np.concatenate(rows, axis=0)
    else:
        picture = source(level, 0, 0, w, h)
    return np.asarray(Image.fromarray(np.ascontiguousarray(picture)).resize((tw, th)))


def _label_picture() -> np.ndarray:
    """A slide label: white with a barcode-like pattern."""
    label = np.full((200, 380, 3), 245, np.uint8)
    bars = (np.arange(300) * 7919 % 5 < 2)[None, :]
    label[40:120, 40:340][np.broadcast_to(bars, (80, 300))] = 20
    return label


def _macro_picture(thumb: np.ndarray) -> np.ndarray:
    """An overview of the glass slide with the tissue picture on it."""
    macro = np.full((431, 1280, 3), 200, np.uint8)
    th, tw = min(thumb.shape[0], 400), min(thumb.shape[1], 800)
    macro[15 : 15 + th, 400 : 400 + tw] = thumb[:th, :tw]
    return macro


def _aperio_jpeg(stream: bytes) -> bytes:
    """An RGB JPEG stream made to look like Aperio's: no Adobe APP14 marker and
    components numbered 1, 2, 3, so only the TIFF Photometric tag says "RGB"
    (a decoder that ignores it shows YCbCr-shifted colours, as with real SVS)."""
    out = bytearray(stream[:2])
    i = 2
    while i < len(stream):
        marker = stream[i + 1]
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        segment = bytearray(stream[i : i + 2 + length])
        if marker == 0xDA:  # start of scan: component ids, then the data to the end
            segment = bytearray(stream[i:])
            for k in range(segment[4]):
                segment[5 + 2 * k] = 1 + k
            out += segment
            break
        if marker == 0xC0:  # frame header: Nf components of 3 bytes after 6 bytes
            for k in range(segment[9]):
                segment[10 + 3 * k] = 1 + k
        if marker != 0xEE:
            out += segment
        i += 2 + length
    return bytes(out)


def _ndpi_tags(magnification: float) -> list[tuple]:
    """Hamamatsu private tags (FileFormat, SourceLens, offsets) plus Make/Model."""
    return [
        (271, "s", 0, "Hamamatsu", True),  # Make: tifffile's is_ndpi needs it
        (272, "s", 0, "C13220", True),  # Model
        (65420, "I", 1, 1, True),  # FileFormat
        (65421, "f", 1, magnification, True),  # SourceLens (-1: macro)
        (65422, "i", 1, 0, True),  # XOffsetFromSlideCentre (nm)
        (65423, "i", 1, 0, True),  # YOffsetFromSlideCentre (nm)
        (65424, "i", 1, 0, True),  # ZOffsetFromSlideCentre (nm)
        (65427, "s", 0, "synthetic", True),  # Reference
    ]
