"""Solo and the probability heatmap in the overlay: what is drawn, and where."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PySide6.QtCore import QSettings

from histoviewer.gui import settings as config
from histoviewer.gui.legend import HEATMAP_COLORMAP, heatmap_lut
from histoviewer.gui.overlay import (
    HEATMAP_MAX_PIXELS,
    HEATMAP_MAX_SIDE,
    HEATMAP_MIN_ALPHA,
    MapOverlay,
    colorize,
    heatmap_codes,
    heatmap_palette,
    heatmap_rgba,
    heatmap_texture_size,
    texel_centres,
)
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.viewer_state import ViewSettings

NAMES = ["a", "b", "c"]
COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
TRANSPARENT = 256

#: Class a's probability per cell of the 2 x 3 map below (None: background).
P_A = [[0.2, 0.6, 1.0], [None, 0.3, 0.8]]


def edge_map() -> TissueMap:
    """2 x 3 cells of stride 100 on a 260 x 200 px slide: the last column is 60 px wide,
    so its centre is at x 230, not 250. Class a's probability as in P_A, the rest
    shared by b and c 6 : 4, so a wins where p > 0.375 (cell (1, 0) is background)."""
    grid = PatchGrid(rows=2, cols=3, patch_size=100, stride=100, extent=(260, 200))
    tmap = TissueMap.empty(grid, NAMES, COLORS, mpp=0.5)
    for r, row in enumerate(P_A):
        for c, p in enumerate(row):
            if p is None:
                tmap.state[r, c] = BACKGROUND
                continue
            tmap.probs[r, c] = [p, (1 - p) * 0.6, (1 - p) * 0.4]
            tmap.state[r, c] = CLASSIFIED
    return tmap


def code(p: float) -> int:
    return round(p * 255)


def codes_at(tmap: TissueMap, points: list[tuple[float, float]]) -> list[int]:
    return [int(heatmap_codes(tmap, 0, np.array([x]), np.array([y]))[0, 0]) for x, y in points]


# --- solo -------------------------------------------------------------------------------


def test_solo_draws_only_its_class_and_leaves_the_ticks_alone():
    tmap = edge_map()  # a wins at (0, 1), (0, 2), (1, 2); b at (0, 0), (1, 1)
    overlay = MapOverlay()
    overlay.set_map(tmap)
    overlay.set_class_visible(0, False)  # the user hid a
    assert overlay.rgba()[0, 2, 3] == 0 and overlay.rgba()[0, 0, 3] == 255
    overlay.set_solo_class("a")  # solo a: shown although its tick is off
    alpha = overlay.rgba()[..., 3]
    assert alpha.tolist() == [[0, 255, 255], [0, 0, 255]]
    assert overlay.class_visibility() == [False, True, True]  # the ticks are unchanged
    overlay.set_solo_class("b")
    assert overlay.rgba()[..., 3].tolist() == [[255, 0, 0], [0, 255, 0]]
    overlay.set_solo_class(None)  # leaving solo: what the ticks say again
    assert overlay.rgba()[..., 3].tolist() == [[255, 0, 0], [0, 255, 0]]
    overlay.set_class_visible(0, True)
    assert overlay.rgba()[..., 3].tolist() == [[255, 255, 255], [0, 255, 255]]


def test_colorize_ignores_a_solo_class_the_map_lacks():
    tmap = edge_map()
    assert np.array_equal(colorize(tmap, solo="tumor"), colorize(tmap))
    solo = colorize(tmap, visible=[False, False, False], solo="b")
    assert solo[..., 3].tolist() == [[255, 0, 0], [0, 255, 0]]
    assert tuple(solo[0, 0, :3]) == COLORS[1]


# --- heatmap ----------------------------------------------------------------------------


def test_the_heatmap_colormap_is_matplotlibs():
    lut = heatmap_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    reference = matplotlib.colormaps[HEATMAP_COLORMAP](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(lut.astype(int) - np.rint(reference * 255)).max() == 0
    palette = heatmap_palette()
    assert np.array_equal(palette[:256, :3], lut)
    assert palette[TRANSPARENT, 3] == 0
    assert palette[0, 3] == round(255 * HEATMAP_MIN_ALPHA) and palette[255, 3] == 255
    assert (np.diff(palette[:256, 3].astype(int)) >= 0).all()  # more likely, more opaque


def test_cell_centres_are_the_true_ones_at_the_edges():
    cx, cy = edge_map().cell_centres()
    assert cx.tolist() == [50, 150, 230] and cy.tolist() == [50, 150]


def test_the_heatmap_is_each_patchs_probability_at_its_cell_centre():
    tmap = edge_map()
    cx, cy = tmap.cell_centres()
    rgba = heatmap_rgba(tmap, 0, cx, cy)
    lut = heatmap_lut()
    for r, row in enumerate(P_A):
        for c, p in enumerate(row):
            if p is None:
                assert rgba[r, c, 3] == 0
            else:
                assert tuple(rgba[r, c, :3]) == tuple(lut[code(p)]), (r, c)
                assert rgba[r, c, 3] == heatmap_palette()[code(p), 3]


def test_between_centres_the_heatmap_is_bilinear():
    tmap = edge_map()
    got = codes_at(
        tmap,
        [
            (100, 50),  # halfway between (0, 0) and (0, 1): mean of 0.2 and 0.6
            (190, 50),  # halfway between the centres 150 and 230 of (0, 1) and (0, 2)
            (150, 100),  # halfway between (0, 1) and (1, 1)
            (110, 50),  # 60 % of the way from (0, 0)'s centre to (0, 1)'s
        ],
    )
    assert abs(got[0] - code(0.4)) <= 1
    assert abs(got[1] - code(0.8)) <= 1  # with the stride's centre (250) it would be 0.76
    assert abs(got[2] - code(0.45)) <= 1
    assert abs(got[3] - code(0.2 + 0.6 * (0.6 - 0.2))) <= 1
    # Beyond the outer centres the outer cell's value holds: the slide's edge, x 259.
    assert codes_at(tmap, [(259, 50), (0, 0)]) == [code(1.0), code(0.2)]


def test_background_neither_shows_nor_drags_its_neighbours_to_zero():
    tmap = edge_map()  # (1, 0) is background, centred at (50, 150)
    # Inside it: transparent everywhere.
    assert codes_at(tmap, [(50, 150), (5, 105), (99, 199), (95, 101)]) == [TRANSPARENT] * 4
    # Next to it, in (0, 0): (0, 0)'s own value, not pulled towards 0.
    assert codes_at(tmap, [(50, 99), (50, 75)]) == [code(0.2), code(0.2)]
    # The corner of (0, 0), (0, 1), (1, 0), (1, 1): the mean of the three classified.
    assert abs(codes_at(tmap, [(100, 100)])[0] - code((0.2 + 0.6 + 0.3) / 3)) <= 1
    # Pending patches are not drawn either.
    tmap.state[1, 2] = 0
    assert codes_at(tmap, [(230, 150)]) == [TRANSPARENT]
    assert codes_at(tmap, [(230, 99)]) == [code(1.0)]  # and do not pull (0, 2) down


def test_the_texture_is_bounded_and_covers_the_grid():
    small = edge_map()
    assert heatmap_texture_size(small) == (42, 32)  # 16 pixels per stride of 100 px
    grid = PatchGrid(rows=700, cols=900, patch_size=150, stride=150)
    big = TissueMap.empty(grid, NAMES, COLORS, mpp=0.5)
    width, height = heatmap_texture_size(big)
    assert max(width, height) <= HEATMAP_MAX_SIDE and width * height <= HEATMAP_MAX_PIXELS
    assert width == 900 * 3 and height == 700 * 3  # whole pixels per stride


def test_the_overlay_draws_a_heatmap_instead_of_the_classes(qtbot):
    tmap = edge_map()
    overlay = MapOverlay()
    overlay.set_map(tmap)
    assert overlay.heatmap().isNull()
    overlay.set_heatmap_class("a")
    image = overlay.heatmap()
    assert (image.width(), image.height()) == heatmap_texture_size(tmap)
    # Each texture pixel is the heatmap at its centre, premultiplied.
    xs, ys = texel_centres(tmap, image.width(), image.height())
    expected = heatmap_rgba(tmap, 0, xs, ys)
    for col, row in [(8, 8), (30, 8), (20, 20), (8, 25), (41, 31)]:
        px = image.pixelColor(col, row)
        want = expected[row, col]
        assert abs(px.alpha() - int(want[3])) <= 1, (col, row)
        if want[3] > 128:
            assert abs(px.green() - int(want[1])) <= 2, (col, row)
    assert image.pixelColor(8, 25).alpha() == 0  # background cell (1, 0)
    overlay.set_heatmap_class("tumor")  # a class the map lacks: the classes again
    assert overlay.heatmap().isNull() and overlay.heatmap_index() is None
    overlay.set_heatmap_class("a")
    # A mapping batch: the live heatmap follows, at most every 0.75 s.
    before = overlay.heatmap()
    tmap.probs[0, 0] = [0.9, 0.05, 0.05]
    overlay.refresh(live=True)
    assert overlay.heatmap() == before
    qtbot.waitUntil(lambda: overlay.heatmap() != before, timeout=3000)
    overlay.refresh()  # not live: at once
    overlay.set_map(None)
    assert overlay.heatmap().isNull()


def test_the_tooltip_gives_the_heatmap_class_first():
    tmap = edge_map()
    overlay = MapOverlay()
    overlay.set_map(tmap)
    assert overlay.describe_at(50, 50) == "B 48 %"
    overlay.set_heatmap_class("a")
    assert overlay.describe_at(50, 50) == "A 20 % · top: B 48 %"
    assert overlay.describe_at(150, 50) == "A 60 %"  # a is the top class there
    assert overlay.describe_at(50, 150) == "Background"


# --- not kept across runs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "transient", [{"solo_class": "tumor"}, {"heatmap_class": "stroma"}], ids=["solo", "heatmap"]
)
def test_solo_and_heatmap_are_never_saved(tmp_path, transient):
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    config.save_view_settings(qs, ViewSettings(opacity=0.7, **transient))
    qs.sync()
    again = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    loaded = config.load_view_settings(again)
    assert loaded.opacity == pytest.approx(0.7)  # the rest is kept
    assert loaded.solo_class is None and loaded.heatmap_class is None
    assert not [k for k in again.allKeys() if "solo" in k or "heatmap" in k]
