"""``open_slide``: pick the backend for a file from its content, not its name."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from histoviewer.errors import SlideError
from histoviewer.fileio import describe_os_error, missing_reason
from histoviewer.slide import openslide_backend
from histoviewer.slide.base import SlideReader
from histoviewer.slide.image import ImageSlide
from histoviewer.slide.tiff import TiffSlide

logger = logging.getLogger(__name__)

TIFF_EXTENSIONS = (".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf8")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: File name endings open_slide accepts (lower case); OpenSlide's only when it is installed.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    TIFF_EXTENSIONS
    + IMAGE_EXTENSIONS
    + (openslide_backend.OPENSLIDE_EXTENSIONS if openslide_backend.available() else ())
)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def file_dialog_filter() -> str:
    """A Qt file-dialog filter string: all slides, then by kind, then all files."""
    slides = " ".join(f"*{e}" for e in SUPPORTED_EXTENSIONS)
    tiffs = " ".join(f"*{e}" for e in TIFF_EXTENSIONS)
    images = " ".join(f"*{e}" for e in IMAGE_EXTENSIONS)
    parts = [f"Slides ({slides})", f"TIFF slides ({tiffs})", f"Pictures ({images})"]
    if openslide_backend.available():
        others = " ".join(f"*{e}" for e in openslide_backend.OPENSLIDE_EXTENSIONS)
        parts.append(f"OpenSlide slides ({others})")
    return ";;".join([*parts, "All files (*)"])


def open_slide(path: str | os.PathLike) -> SlideReader:
    """Open a slide file with the backend that can read it.

    The file's first bytes decide: TIFF (SVS, NDPI, OME-TIFF, pyramids,
    strips) goes to tifffile, PNG and JPEG to Pillow; when openslide-python is
    installed it reads what those cannot (MRXS, SCN, ...). Raises
    :class:`SlideError` naming the file and the reason: missing, a folder,
    unsupported type, empty, not an image, damaged, or a pixel type a
    brightfield viewer cannot show.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"cannot open {path}: {missing_reason(path)}")
    if path.is_dir():
        raise SlideError(f"cannot open {path}: it is a folder, not a slide file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise SlideError(
            f"cannot open {path}: '{suffix or path.name}' files are not supported "
            f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise SlideError(f"cannot open {path}: {describe_os_error(exc)}") from None
    if not head:
        raise SlideError(f"cannot open {path}: the file is empty (0 bytes)")
    if head.startswith(_TIFF_MAGIC):
        return _with_openslide_fallback(path, TiffSlide)
    if head.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        return ImageSlide(path)
    if openslide_backend.available() and openslide_backend.detect(path):
        return openslide_backend.OpenSlideSlide(path)
    raise SlideError(
        f"cannot open {path}: it is not a slide or image file (its content is neither "
        "TIFF, PNG nor JPEG)"
    )


def _with_openslide_fallback(path: Path, reader: type[SlideReader]) -> SlideReader:
    try:
        return reader(path)
    except SlideError as error:
        if not openslide_backend.available():
            raise
        vendor = openslide_backend.detect(path)
        if not vendor or vendor == "generic-tiff":
            raise
        logger.info("%s: tifffile cannot read it (%s); using OpenSlide (%s)", path, error, vendor)
        return openslide_backend.OpenSlideSlide(path)
