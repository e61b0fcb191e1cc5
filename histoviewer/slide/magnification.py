"""Objective magnification: what microscope power a view of a slide amounts to.

Pathologists think in objective powers, not zoom factors. By the usual
whole-slide convention a 40x scan has about 0.25 µm per pixel, 20x 0.5 µm and
10x 1.0 µm, so a view that shows ``mpp / zoom`` µm per screen pixel is the
equivalent of a ``10 / (mpp / zoom)`` x objective. ``zoom`` is screen pixels per
level-0 pixel (as :class:`~histoviewer.gui.slideview.SlideView` counts it) and
``mpp`` the slide's level-0 microns per pixel. Qt-free.
"""

from __future__ import annotations

import math

#: Objective powers offered as one-click zooms.
PRESETS: tuple[int, ...] = (5, 10, 20, 40)
#: Microns per screen pixel at 1x: 10x is 1 µm/px, 40x 0.25 µm/px.
MICRONS_AT_1X = 10.0


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return value


def magnification(mpp: float, zoom: float) -> float:
    """The objective power at which a view at ``zoom`` (screen px per level-0 px)
    shows a slide of ``mpp`` µm per level-0 pixel: ``10 / (mpp / zoom)``.

    Raises ValueError for a non-positive or non-finite ``mpp`` or ``zoom``.
    """
    mpp = _check_positive("mpp", mpp)
    zoom = _check_positive("zoom", zoom)
    return MICRONS_AT_1X * zoom / mpp


def zoom_for_magnification(mpp: float, mag: float) -> float:
    """The zoom (screen px per level-0 px) that shows a slide of ``mpp`` µm/px at
    objective power ``mag``: the inverse of :func:`magnification`.

    Raises ValueError for a non-positive or non-finite ``mpp`` or ``mag``.
    """
    mpp = _check_positive("mpp", mpp)
    mag = _check_positive("mag", mag)
    return mag * mpp / MICRONS_AT_1X


def format_magnification(mag: float) -> str:
    """'20x', '12x', '2.5x', '5x', '0.6x', '0.04x': whole numbers from 10x up, one
    decimal (without a trailing '.0') from 0.1x, one significant digit below;
    '–' for a magnification that is not a positive number."""
    try:
        mag = float(mag)
    except (TypeError, ValueError):
        return "–"
    if not (math.isfinite(mag) and mag > 0):
        return "–"
    if mag >= 9.95:
        text = f"{mag:.0f}"
    elif mag >= 0.095:
        text = f"{mag:.1f}".removesuffix(".0")
    else:
        text = f"{mag:.1g}"
        if "e" in text:  # below 0.0001x: no use to anyone, but keep it readable
            text = f"{mag:.6f}".rstrip("0")
    return f"{text}x"
