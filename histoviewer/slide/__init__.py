"""Reading whole-slide images: one interface over tifffile, Pillow and OpenSlide.

``open_slide(path)`` returns a :class:`SlideReader` whose ``read_region``
gives RGB uint8 pixels of any level, lazily and thread-safely;
:class:`ArraySlide` wraps an in-memory array the same way. Synthetic H&E-like
slides in every supported layout come from :mod:`histoviewer.slide.synthetic`.
"""

from histoviewer.slide.array import ArraySlide
from histoviewer.slide.base import SlideReader
from histoviewer.slide.mpp import DEFAULT_MPP
from histoviewer.slide.opener import SUPPORTED_EXTENSIONS, file_dialog_filter, open_slide

__all__ = [
    "DEFAULT_MPP",
    "SUPPORTED_EXTENSIONS",
    "ArraySlide",
    "SlideReader",
    "file_dialog_filter",
    "open_slide",
]
