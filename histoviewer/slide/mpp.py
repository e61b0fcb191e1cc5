"""Microns per pixel: reading it from metadata and deciding when to trust it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

#: The scale the Kather 2016 tiles (and the shipped model) were scanned at.
DEFAULT_MPP = 0.495
ASSUMED = "assumed"
APERIO = "Aperio MPP"
OME = "OME PhysicalSizeX"
RESOLUTION = "NDPI/TIFF resolution"
IMAGE_RESOLUTION = "image resolution"
#: Scales a person gave, overriding the file's (SlideReader.set_mpp).
GIVEN = "given"
GIVEN_CLI = "given with --mpp"
GIVEN_VIEWER = "set in the viewer"

# A microscope scan lies between ~0.05 µm/px (100x oil) and a few tens of µm/px
# (a low-power overview). Software defaults such as 72, 96 or 300 dpi give
# 85-350 µm/px and mean "nobody set it".
_PLAUSIBLE = (0.05, 40.0)

_UM_PER_UNIT = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "in": 25400.0,
    "inch": 25400.0,
}
_APERIO_MPP = re.compile(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def plausible(mpp: float | None) -> bool:
    return mpp is not None and _PLAUSIBLE[0] <= mpp <= _PLAUSIBLE[1]


def aperio_mpp(description: str) -> float | None:
    """The ``MPP = 0.499`` value of an Aperio ImageDescription, if any."""
    match = _APERIO_MPP.search(description or "")
    return float(match.group(1)) if match else None


def unit_to_um(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` (OME unit symbols, default micrometre) as micrometres."""
    factor = _UM_PER_UNIT.get((unit or "µm").strip())
    return value * factor if factor is not None else None


def resolution_mpp(pixels_per_unit: float | None, unit: str | int | None) -> float | None:
    """Microns per pixel from a TIFF XResolution and ResolutionUnit (2 inch, 3 cm)."""
    if not pixels_per_unit or pixels_per_unit <= 0:
        return None
    names = {2: "inch", 3: "cm"}
    unit_name = names.get(unit, unit) if isinstance(unit, int) else unit
    if unit_name not in ("inch", "cm"):
        return None  # ResolutionUnit "none": only an aspect ratio
    return _UM_PER_UNIT[unit_name] / pixels_per_unit


def choose_mpp(path: Path | None, candidates: list[tuple[float | None, str]]) -> tuple[float, str]:
    """The first plausible ``(mpp, source)`` candidate, else the assumed default.

    Falling back is logged (at info level: the map warnings, ``histoviewer info``
    and the viewer's scale badge tell the user, with :func:`assumed_because`).
    """
    for value, source in candidates:
        if plausible(value):
            return float(value), source
    logger.info(
        "%s: %s; assuming %g µm/px (the Kather 2016 scale)",
        path or "image",
        assumed_because(candidates),
        DEFAULT_MPP,
    )
    return DEFAULT_MPP, ASSUMED


def assumed_because(candidates: list[tuple[float | None, str]]) -> str:
    """Why no candidate is usable ("" when one is): a fragment such as "its file records
    no scale" or "its file's 352.778 µm/px (NDPI/TIFF resolution) is not plausible"."""
    if any(plausible(value) for value, _ in candidates):
        return ""
    found = [f"{v:g} µm/px ({s})" for v, s in candidates if v is not None]
    if not found:
        return "its file records no scale"
    return f"its file's {' and '.join(found)} {'is' if len(found) == 1 else 'are'} not plausible"
