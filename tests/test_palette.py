"""The class palette reads over H&E for every viewer (tools/palette_check.py)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from histoviewer.classes import class_colors, class_names

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "palette_check.py"
_spec = importlib.util.spec_from_file_location("palette_check", _TOOL)
palette = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(palette)

NAMES = class_names()
COLORS = class_colors()
TISSUE_CLASSES = [n for n in NAMES if n != "empty"]


def test_the_colour_difference_matches_published_cie_de2000_pairs():
    # Sharma, Wu and Dalal (2005), table 1: pairs 1, 7 and 17.
    pairs = [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ]
    for a, b, expected in pairs:
        assert palette.delta_e00(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-4)


def test_colour_blind_simulation_merges_red_and_green_but_not_blue_and_yellow():
    red, green = (220, 40, 40), (40, 160, 40)
    normal = palette.delta_e00(palette.lab(np.array(red)), palette.lab(np.array(green)))
    deutan = palette.delta_e00(
        palette.lab(palette.seen(red, "deuteranopia")),
        palette.lab(palette.seen(green, "deuteranopia")),
    )
    assert deutan < normal / 2


@pytest.mark.parametrize("vision", ["normal", "colour-blind"])
def test_tumour_and_both_stromas_and_tumour_and_any_class_are_told_apart_over_he(vision):
    pairs = [p for p in itertools.combinations(TISSUE_CLASSES, 2) if palette.is_key_pair(*p)]
    assert len(pairs) == 6 + 1  # tumour with each of 6 classes, and the two stromas
    for pair in pairs:
        got = palette.pair_minimum(NAMES, COLORS, pair, vision)
        assert got >= palette.KEY_MIN[vision], (pair, vision, got)


@pytest.mark.parametrize("vision", ["normal", "colour-blind"])
def test_every_pair_of_tissue_classes_stays_apart_over_he(vision):
    for pair in itertools.combinations(TISSUE_CLASSES, 2):
        got = palette.pair_minimum(NAMES, COLORS, pair, vision)
        assert got >= palette.ALL_MIN[vision], (pair, vision, got)


def test_the_old_palettes_fail_the_check():
    # Yellow simple stroma and orange complex stroma: the palette the issue reported.
    old = list(COLORS)
    old[NAMES.index("stroma")] = (240, 228, 66)
    old[NAMES.index("complex")] = (230, 159, 0)
    got = palette.pair_minimum(NAMES, old, ("stroma", "complex"), "normal")
    assert got < palette.KEY_MIN["normal"]
    # Wine debris: red tumour over dark haematoxylin looked like it.
    wine = list(COLORS)
    wine[NAMES.index("debris")] = (136, 34, 85)
    got = palette.pair_minimum(NAMES, wine, ("tumor", "debris"), "colour-blind")
    assert got < palette.KEY_MIN["colour-blind"]
