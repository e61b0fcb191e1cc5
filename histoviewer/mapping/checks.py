"""Is this slide fit for this model? The checks made before a slide is mapped.

A map is only as good as the match between the slide and what the model was trained
on. Three things can silently spoil it, and each gives a :class:`SlideWarning`:

- ``scale-assumed``: the slide's file says nothing usable about its microns per
  pixel, so the patch size (and every area) rests on the assumed 0.495 µm/px;
- ``scale-coarse``: the slide is more than 1.5 times coarser than the model's tiles:
  the detail the model relies on (nuclei, fibres) is gone;
- ``stain``: the slide does not look like brightfield H&E (fluorescence, greyscale,
  IHC, or no recognisable stain), see :mod:`histoviewer.slide.stain`.

The command line prints them (``map --strict`` refuses such a slide instead), the
viewer shows them before mapping. Headless: no Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from histoviewer.slide.mpp import ASSUMED

if TYPE_CHECKING:
    from histoviewer.model import ModelInfo
    from histoviewer.slide import SlideReader

SCALE_ASSUMED = "scale-assumed"
SCALE_COARSE = "scale-coarse"
STAIN = "stain"
#: A slide coarser than the model's tiles by more than this factor gets a warning.
COARSE_LIMIT = 1.5


@dataclass(frozen=True)
class SlideWarning:
    """One reason to doubt a map: ``kind`` (a constant above) and ``message``, complete
    sentences about the slide (which is not named: the caller knows it)."""

    kind: str
    message: str


def scale_warnings(slide: SlideReader, info: ModelInfo) -> list[SlideWarning]:
    """The scale warnings for mapping ``slide`` with a model described by ``info``."""
    warnings = []
    if slide.mpp_source == ASSUMED:
        why = slide.mpp_note or "its file records no scale"
        warnings.append(
            SlideWarning(
                SCALE_ASSUMED,
                f"Its scale is assumed: {why}, so {slide.mpp:g} µm/px (the Kather 2016 "
                "scale) is used. Patch sizes and areas are only right if that is true; give "
                "the true scale (--mpp, or Analysis > Set Slide Scale in the viewer).",
            )
        )
    ratio = slide.mpp / info.mpp
    if ratio > COARSE_LIMIT:
        warnings.append(
            SlideWarning(
                SCALE_COARSE,
                f"It is {ratio:.1f} times coarser ({slide.mpp:g} µm/px) than the tiles the "
                f"model was trained on ({info.mpp:g} µm/px): the detail the model relies "
                "on is missing, and its map may be wrong. Map a scan at a higher "
                "magnification if there is one.",
            )
        )
    return warnings


def check_slide(slide: SlideReader, info: ModelInfo) -> list[SlideWarning]:
    """Every warning for mapping ``slide`` with ``info``'s model: scale, then stain.

    Reads a thumbnail of the slide for the stain check (a fraction of a second even
    for a single-level gigapixel slide, which is read band by band).
    """
    from histoviewer.slide.stain import check_slide_stain

    warnings = scale_warnings(slide, info)
    stain = check_slide_stain(slide)
    if stain.warning:
        warnings.append(SlideWarning(STAIN, stain.warning))
    return warnings
