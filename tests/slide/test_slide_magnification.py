"""Objective magnification of a view: 40x ~ 0.25 um per screen pixel, 10x ~ 1 um."""

from __future__ import annotations

import math

import pytest

from histoviewer.slide.magnification import (
    PRESETS,
    format_magnification,
    magnification,
    zoom_for_magnification,
)


@pytest.mark.parametrize(
    ("mpp", "zoom", "mag"),
    [
        (0.25, 1.0, 40.0),  # a 40x scan shown 1:1
        (0.5, 1.0, 20.0),  # a 20x scan shown 1:1
        (1.0, 1.0, 10.0),
        (0.25, 0.5, 20.0),  # the 40x scan at half size looks like a 20x objective
        (0.5, 2.0, 40.0),  # the 20x scan magnified twice
        (0.495, 0.1, 10 * 0.1 / 0.495),
    ],
)
def test_magnification_is_ten_over_microns_per_screen_pixel(mpp, zoom, mag):
    assert magnification(mpp, zoom) == pytest.approx(mag)
    assert zoom_for_magnification(mpp, mag) == pytest.approx(zoom)


def test_zoom_for_magnification_inverts_magnification():
    for mpp in (0.12, 0.25, 0.495, 2.0):
        for mag in (*PRESETS, 0.6, 2.5, 63):
            assert magnification(mpp, zoom_for_magnification(mpp, mag)) == pytest.approx(mag)
    assert PRESETS == (5, 10, 20, 40)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="mpp"):
        magnification(bad, 1.0)
    with pytest.raises(ValueError, match="zoom"):
        magnification(0.5, bad)
    with pytest.raises(ValueError, match="mag"):
        zoom_for_magnification(0.5, bad)


@pytest.mark.parametrize(
    ("mag", "text"),
    [
        (40.0, "40x"),
        (20.0, "20x"),
        (19.6, "20x"),
        (12.4, "12x"),
        (9.96, "10x"),  # rounds up to a whole number, not "10.0x"
        (5.0, "5x"),
        (2.5, "2.5x"),
        (2.04, "2x"),
        (0.62, "0.6x"),
        (0.1, "0.1x"),
        (0.04, "0.04x"),
        (0.0123, "0.01x"),
        (160.0, "160x"),
    ],
)
def test_format_magnification_rounds_sensibly(mag, text):
    assert format_magnification(mag) == text


@pytest.mark.parametrize("bad", [0, -3, math.nan, math.inf, None, "x"])
def test_format_magnification_of_nonsense_is_a_dash(bad):
    assert format_magnification(bad) == "–"


def test_magnification_module_is_qt_free():
    import subprocess
    import sys

    code = (
        "import sys, histoviewer.slide.magnification, histoviewer.slide.tilecache, "
        "histoviewer.mapping.summary_text; "
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
