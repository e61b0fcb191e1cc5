"""SlideView, its tile loader and cache, the overview panel and the scale bar."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QAction, QColor, QImage, QMouseEvent, QPixmap, QWheelEvent
from PySide6.QtWidgets import QMenu, QToolButton

from histoviewer.gui import tiles as tiles_mod
from histoviewer.gui.overview import OverviewPanel
from histoviewer.gui.scalebar import choose_length, format_length
from histoviewer.gui.slideview import BACKGROUND, MAX_ZOOM, SlideView
from histoviewer.gui.tiles import TILE_SIZE, LevelState, PixmapCache, TileKey
from histoviewer.slide import ArraySlide, open_slide

VIEW_W, VIEW_H = 640, 480


# -- slides --------------------------------------------------------------------------


def grid_colour(i: int, j: int) -> tuple[int, int, int]:
    """Colour of grid cell (column i, row j): far apart from every other cell's."""
    return (40 + 60 * i, 40 + 80 * j, 220 - 40 * i)


def grid_image(width: int, height: int, cols: int = 4, rows: int = 3) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    for j in range(rows):
        for i in range(cols):
            y0, y1 = j * height // rows, (j + 1) * height // rows
            x0, x1 = i * width // cols, (i + 1) * width // cols
            image[y0:y1, x0:x1] = grid_colour(i, j)
    return image


def write_strip_tiff(path, image: np.ndarray, mpp: float = 0.5) -> None:
    res = 1e4 / mpp  # pixels per centimetre
    tifffile.imwrite(
        path,
        image,
        photometric="rgb",
        rowsperstrip=64,
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )


def write_pyramid_tiff(path, image: np.ndarray, levels: int = 4, mpp: float = 0.5) -> None:
    """A tiled JPEG pyramid: level 0 with its 2x reductions as SubIFDs."""
    res = 1e4 / mpp
    options = dict(tile=(256, 256), photometric="rgb", compression="jpeg")
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            image,
            subifds=levels - 1,
            resolution=(res, res),
            resolutionunit="CENTIMETER",
            **options,
        )
        level = image
        for _ in range(levels - 1):
            level = tiles_mod.halve(level)
            tif.write(level, subfiletype=1, **options)


class GatedSlide(ArraySlide):
    """An ArraySlide whose reads of at most ``gate_max`` pixels wait for ``gate``."""

    def __init__(self, array: np.ndarray, gate_max: int = 2**62) -> None:
        super().__init__(array)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.gate_max = gate_max

    def read_region(self, level, x, y, w, h):
        if w * h <= self.gate_max:
            self.entered.set()
            self.gate.wait(10)
        return super().read_region(level, x, y, w, h)


def record_reads(reader) -> list[tuple[int, int, int]]:
    """Wrap ``reader.read_region`` to log (level, w, h) of every read."""
    reads: list[tuple[int, int, int]] = []
    original = reader.read_region

    def recording(level, x, y, w, h):
        reads.append((level, w, h))
        return original(level, x, y, w, h)

    reader.read_region = recording
    return reads


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def view(qtbot) -> SlideView:
    view = SlideView()
    qtbot.addWidget(view, before_close_func=lambda v: v.shutdown())
    view.resize(VIEW_W, VIEW_H)
    view.show()
    qtbot.waitExposed(view)
    return view


def wait_loaded(qtbot, view: SlideView) -> None:
    qtbot.waitUntil(view.fully_loaded, timeout=10000)


def pixel(image: QImage, pos: QPointF) -> tuple[int, int, int]:
    colour = image.pixelColor(int(pos.x()), int(pos.y()))
    return colour.red(), colour.green(), colour.blue()


def assert_close(actual, expected, tolerance: int = 12) -> None:
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= tolerance, (
        f"{actual} != {expected}"
    )


def assert_grid_shown(view: SlideView, width: int, height: int, tolerance: int = 12) -> None:
    """Screen points across the viewport show the colour of the grid cell under them."""
    image = view.viewport().grab().toImage()
    bar = view.scale_bar.geometry(QRectF(image.rect()), view.zoom(), view.slide().mpp)
    margin = 4 / view.zoom()  # level-0 px: stay clear of cell edges (smoothing)
    checked = 0
    for fy in np.linspace(0.03, 0.97, 7):
        for fx in np.linspace(0.03, 0.97, 7):
            pos = QPointF(fx * image.width(), fy * image.height())
            point = view.map_to_slide(pos)
            u, v = point.x() * 4 / width, point.y() * 3 / height
            if bar.contains(pos) or not (0 <= u < 4 and 0 <= v < 3):
                continue
            if min(u % 1, 1 - u % 1) * width / 4 < margin:
                continue
            if min(v % 1, 1 - v % 1) * height / 3 < margin:
                continue
            assert_close(pixel(image, pos), grid_colour(int(u), int(v)), tolerance)
            checked += 1
    assert checked >= 10


def mouse(view: SlideView, kind: QEvent.Type, pos: QPointF, held: bool = True) -> None:
    """Send a left-button mouse event (``held``: the button is down while moving)."""
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    button = left if kind != QEvent.Type.MouseMove else none
    buttons = left if held and kind != QEvent.Type.MouseButtonRelease else none
    global_pos = QPointF(view.viewport().mapToGlobal(pos.toPoint()))
    event = QMouseEvent(kind, pos, global_pos, button, buttons, Qt.KeyboardModifier.NoModifier)
    view.viewportEvent(event)


# -- showing slides --------------------------------------------------------------------


def test_array_slide_fits_and_shows_its_colours(qtbot, view):
    slide = ArraySlide(grid_image(2000, 1500))
    with qtbot.waitSignal(view.thumbnailChanged, check_params_cb=lambda img: not img.isNull()):
        view.set_slide(slide)
    assert view.slide() is slide
    assert view.visible_rect().contains(QRectF(0, 0, 2000, 1500))
    assert view.zoom() == pytest.approx(0.97 * min(VIEW_W / 2000, VIEW_H / 1500))
    wait_loaded(qtbot, view)
    level = view.display_level()
    assert level.factor > 1 and level.downsample <= 1 / view.zoom()  # a built 2x level
    assert_grid_shown(view, 2000, 1500)
    # Outside the slide the view's background shows, not slide pixels.
    image = view.viewport().grab().toImage()
    assert pixel(image, QPointF(2, 2)) == (BACKGROUND.red(), BACKGROUND.green(), BACKGROUND.blue())

    view.set_slide(None)
    assert view.slide() is None and view.display_level() is None
    view.viewport().grab()  # painting without a slide must not fail


def test_strip_tiff_reads_in_bands_and_tiles_only(qtbot, view, tmp_path):
    path = tmp_path / "strips.tif"
    write_strip_tiff(path, grid_image(2400, 1800))
    with open_slide(path) as slide:
        assert slide.level_count == 1
        reads = record_reads(slide)
        view.set_slide(slide)
        wait_loaded(qtbot, view)
        assert_grid_shown(view, 2400, 1800)
        for zoom, point in [(0.4, (700, 500)), (1.0, (1800, 1300)), (3.0, (300, 1400))]:
            view.set_zoom(zoom)
            view.center_on(*point)
            wait_loaded(qtbot, view)
            assert_grid_shown(view, 2400, 1800)
        view.set_slide(None)
    # Level 0 was streamed once to build the small levels; display reads are tiles.
    level0 = [w * h for level, w, h in reads if level == 0]
    assert max(level0) <= tiles_mod.BAND_PIXELS + 2400 * 16
    assert sum(level0) <= 2.0 * 2400 * 1800
    assert sum(1 for _, w, h in reads if w * h <= TILE_SIZE**2) >= 4


def test_pyramid_tiff_picks_the_level_that_fits_the_zoom(qtbot, view, tmp_path):
    path = tmp_path / "pyramid.tif"
    write_pyramid_tiff(path, grid_image(4096, 3072), levels=4)
    with open_slide(path) as slide:
        assert slide.level_count == 4
        view.set_slide(slide)
        cases = {3.0: 1, 1.0: 1, 0.7: 1, 0.5: 2, 0.3: 2, 0.25: 4, 0.13: 4, 0.12: 8}
        for zoom, downsample in cases.items():
            view.set_zoom(zoom)
            level = view.display_level()
            assert level.downsample == pytest.approx(downsample), zoom
            assert level.factor == 1  # the file's own levels, no virtual one
        view.set_zoom(0.3)
        view.center_on(2000, 1500)
        wait_loaded(qtbot, view)
        assert_grid_shown(view, 4096, 3072, tolerance=20)  # JPEG tiles
        level = view.display_level()
        assert level.index == 1 and level.downsample == 2
        assert all(view.loader.pixmap(1, c, r) for c, r in level.tiles_in(view.visible_rect()))
        view.fit()
        wait_loaded(qtbot, view)
        assert view.visible_rect().contains(QRectF(0, 0, 4096, 3072))
        assert_grid_shown(view, 4096, 3072, tolerance=20)
        view.set_slide(None)


def test_loading_tiles_show_the_thumbnail_not_holes(qtbot, view):
    slide = GatedSlide(grid_image(1600, 1200), gate_max=TILE_SIZE**2)  # band reads pass
    with qtbot.waitSignal(view.thumbnailChanged, check_params_cb=lambda img: not img.isNull()):
        view.set_slide(slide)
    view.set_zoom(1.0, (800, 600))
    assert not view.fully_loaded()  # level-0 tiles wait behind the gate
    assert_grid_shown(view, 1600, 1200, tolerance=16)  # drawn from the thumbnail
    slide.gate.set()
    wait_loaded(qtbot, view)
    assert_grid_shown(view, 1600, 1200)


# -- zoom and pan -----------------------------------------------------------------------


def test_wheel_zoom_keeps_the_point_under_the_cursor(qtbot, view):
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    for pos, delta in [(QPointF(120, 90), 120), (QPointF(500, 400), 240), (QPointF(50, 300), -120)]:
        before_zoom = view.zoom()
        point = view.map_to_slide(pos)
        event = QWheelEvent(
            pos,
            QPointF(view.viewport().mapToGlobal(pos.toPoint())),
            QPoint(0, 0),
            QPoint(0, delta),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        with qtbot.waitSignal(view.zoomChanged, timeout=1000):
            view.viewportEvent(event)
        assert view.zoom() == pytest.approx(before_zoom * 1.25 ** (delta / 120))
        after = view.map_from_slide(point)
        assert abs(after.x() - pos.x()) <= 1.0 and abs(after.y() - pos.y()) <= 1.0


def test_set_zoom_anchor_limits_and_keys(qtbot, view):
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    fit = view.zoom()
    anchor = QPointF(2500, 300)
    on_screen = view.map_from_slide(anchor)
    view.set_zoom(2.0, anchor)
    assert view.zoom() == 2.0
    assert (view.map_from_slide(anchor) - on_screen).manhattanLength() <= 2.0
    view.set_zoom(1000)
    assert view.zoom() == MAX_ZOOM
    # The view centre stays on the slide: it can never be scrolled out of sight.
    view.center_on(-5000, 99999)
    centre = view.visible_rect().center()
    assert centre.x() == pytest.approx(0, abs=1) and centre.y() == pytest.approx(2000, abs=1)
    view.set_zoom(1e-6)
    assert view.zoom() == pytest.approx(fit / 4)

    view.actual_size()
    view.center_on(1500, 1000)
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.zoom() == pytest.approx(1.25)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.zoom() == pytest.approx(0.8)
    qtbot.keyClick(view, Qt.Key.Key_1)
    assert view.zoom() == 1.0
    before = view.visible_rect()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    qtbot.keyClick(view, Qt.Key.Key_Down)
    moved = view.visible_rect().topLeft() - before.topLeft()
    assert moved.x() == pytest.approx(round(VIEW_W * 0.15), abs=1)
    assert moved.y() == pytest.approx(round(VIEW_H * 0.15), abs=1)
    with qtbot.waitSignal(view.zoomChanged):
        qtbot.keyClick(view, Qt.Key.Key_F)
    assert view.zoom() == pytest.approx(fit)
    view.zoom_in()
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert view.zoom() == pytest.approx(fit)


def test_view_changed_reports_the_visible_rect(qtbot, view):
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    with qtbot.waitSignal(view.viewChanged) as blocker:
        view.set_zoom(1.0)
    assert blocker.args[0] == view.visible_rect()
    with qtbot.waitSignal(view.viewChanged) as blocker:
        view.center_on(1000, 700)
    rect = blocker.args[0]
    assert rect.center().x() == pytest.approx(1000, abs=1)
    assert rect.center().y() == pytest.approx(700, abs=1)
    assert rect.width() == pytest.approx(VIEW_W)
    with qtbot.waitSignal(view.viewChanged) as blocker:
        view.resize(800, 500)
    assert blocker.args[0].width() == pytest.approx(800)
    assert blocker.args[0].center().x() == pytest.approx(1000, abs=1)


# -- mouse -------------------------------------------------------------------------------


def test_click_emits_level0_coordinates_but_drag_pans(qtbot, view):
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    view.set_zoom(0.5)
    view.center_on(1500, 1000)
    pos = QPointF(200, 150)
    expected = view.map_to_slide(pos)
    with qtbot.waitSignal(view.clicked) as blocker:
        mouse(view, QEvent.Type.MouseButtonPress, pos)
        mouse(view, QEvent.Type.MouseButtonRelease, pos)
    assert blocker.args == [pytest.approx(expected.x()), pytest.approx(expected.y())]
    assert blocker.args[0] == pytest.approx(1500 + (200 - VIEW_W / 2) / 0.5, abs=2)

    clicks = []
    view.clicked.connect(lambda x, y: clicks.append((x, y)))
    before = view.visible_rect()
    mouse(view, QEvent.Type.MouseButtonPress, pos)
    for step in range(1, 5):
        mouse(view, QEvent.Type.MouseMove, pos + QPointF(10 * step, 5 * step))
    mouse(view, QEvent.Type.MouseButtonRelease, pos + QPointF(40, 20))
    assert clicks == []
    shift = before.topLeft() - view.visible_rect().topLeft()
    assert shift.x() == pytest.approx(40 / 0.5, abs=2.5)
    assert shift.y() == pytest.approx(20 / 0.5, abs=2.5)


def test_region_selection_drags_a_rectangle_instead_of_panning(qtbot, view):
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    view.set_zoom(0.5)
    view.center_on(1500, 1000)
    regions, cancels, clicks = [], [], []
    view.regionSelected.connect(regions.append)
    view.regionSelectionCancelled.connect(lambda: cancels.append(True))
    view.clicked.connect(lambda x, y: clicks.append((x, y)))
    assert view.start_region_selection() and view.is_selecting_region()

    # A click is not a region: the mode waits for a drag.
    pos = QPointF(200, 150)
    mouse(view, QEvent.Type.MouseButtonPress, pos)
    mouse(view, QEvent.Type.MouseButtonRelease, pos)
    assert view.is_selecting_region() and regions == [] and clicks == []

    before = view.visible_rect()
    end = QPointF(100, 60)  # dragged up and left: the rectangle is normalised
    mouse(view, QEvent.Type.MouseButtonPress, pos)
    mouse(view, QEvent.Type.MouseMove, QPointF(150, 100))
    band = view.region_band()
    assert band is not None and band.width() > 0
    mouse(view, QEvent.Type.MouseMove, end)
    mouse(view, QEvent.Type.MouseButtonRelease, end)
    assert view.visible_rect() == before  # no pan
    (rect,) = regions
    expected = QRectF(view.map_to_slide(end), view.map_to_slide(pos))
    for got, want in zip(
        (rect.x(), rect.y(), rect.width(), rect.height()),
        (expected.x(), expected.y(), expected.width(), expected.height()),
        strict=True,
    ):
        assert got == pytest.approx(want, abs=1)
    assert not view.is_selecting_region() and view.region_band() is None and cancels == []

    # Past the slide's edge the rectangle stops at it; Esc cancels.
    view.start_region_selection()
    view.cancel_region_selection()
    assert cancels == [True] and not view.is_selecting_region()
    view.fit()
    view.start_region_selection()
    mouse(view, QEvent.Type.MouseButtonPress, QPointF(2, 2))
    mouse(view, QEvent.Type.MouseButtonRelease, QPointF(VIEW_W - 2, VIEW_H - 2))
    assert regions[-1] == QRectF(0, 0, 3000, 2000)
    view.start_region_selection()
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert cancels == [True, True] and not view.is_selecting_region()


def test_cursor_moved_reports_level0_coordinates(qtbot, view):
    view.set_slide(ArraySlide(grid_image(1000, 1000)))  # square: dark margins left/right
    inside = QPointF(VIEW_W / 2 + 30, VIEW_H / 2 - 40)
    with qtbot.waitSignal(view.cursorMoved) as blocker:
        mouse(view, QEvent.Type.MouseMove, inside, held=False)
    x, y = blocker.args
    zoom = view.zoom()
    assert x == pytest.approx(500 + 30 / zoom, abs=1.5 / zoom)
    assert y == pytest.approx(500 - 40 / zoom, abs=1.5 / zoom)
    with qtbot.waitSignal(view.cursorMoved) as blocker:
        mouse(view, QEvent.Type.MouseMove, QPointF(5, VIEW_H / 2), held=False)
    assert blocker.args == [-1.0, -1.0]


def test_cursor_moved_follows_keyboard_zoom_and_pans_under_a_still_mouse(qtbot, view):
    """Zooming with the keys (or panning from code) changes what lies under a mouse that
    does not move: the status bar's position must follow."""
    view.set_slide(ArraySlide(grid_image(1000, 1000)))
    pos = QPointF(VIEW_W / 2 + 100, VIEW_H / 2 + 60)
    mouse(view, QEvent.Type.MouseMove, pos, held=False)
    before = view.cursor_position()
    seen = []
    view.cursorMoved.connect(lambda x, y: seen.append((x, y)))

    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Plus)  # zoom about the view centre, not the mouse
    assert seen, "keyboard zoom did not report the point under the mouse"
    expected = view.map_to_slide(pos)
    assert seen[-1] == pytest.approx((expected.x(), expected.y()))
    assert seen[-1] != pytest.approx(before, abs=1)
    assert view.cursor_position() == seen[-1]

    for change in (
        view.zoom_out,
        view.actual_size,
        view.fit,
        lambda: view.center_on(200, 300),
        lambda: qtbot.keyClick(view, Qt.Key.Key_Right),
    ):
        seen.clear()
        change()
        expected = view.map_to_slide(pos)
        assert seen and seen[-1] == pytest.approx((expected.x(), expected.y())), change

    # Zoomed out so far that the mouse is over the dark margin: (-1, -1).
    view.set_zoom(1e-6)
    corner = QPointF(3, 3)
    mouse(view, QEvent.Type.MouseMove, corner, held=False)
    assert seen[-1] == (-1.0, -1.0)
    # The mouse left the view: zooms report (-1, -1), not a stale point.
    view.viewportEvent(QEvent(QEvent.Type.Leave))
    seen.clear()
    view.set_zoom(2.0)
    assert seen[-1] == (-1.0, -1.0) and view.cursor_position() == (-1.0, -1.0)


# -- magnification ---------------------------------------------------------------------


def test_view_zooms_to_an_objective_magnification_about_its_centre(qtbot, view):
    assert view.mpp() is None and view.magnification() is None
    assert view.zoom_to_magnification(20) is None  # no slide: nothing happens
    view.set_slide(ArraySlide(grid_image(8000, 6000), mpp=0.25))  # a "40x" scan
    assert view.mpp() == 0.25
    assert view.magnification() == pytest.approx(10 * view.zoom() / 0.25)
    view.set_zoom(0.5)
    view.center_on(3000, 2000)
    centre = view.visible_rect().center()

    assert view.zoom_to_magnification(40) == pytest.approx(40)
    assert view.zoom() == pytest.approx(1.0)  # 40x on a 0.25 um/px scan: 1:1
    assert view.visible_rect().center().x() == pytest.approx(centre.x(), abs=1)
    assert view.visible_rect().center().y() == pytest.approx(centre.y(), abs=1)
    with qtbot.waitSignal(view.zoomChanged):
        assert view.zoom_to_magnification(5) == pytest.approx(5)
    assert view.zoom() == pytest.approx(0.125)
    assert view.visible_rect().center().x() == pytest.approx(centre.x(), abs=8)

    # Clamped to the zoom limits, and says what it reached.
    assert view.zoom_to_magnification(10_000) == pytest.approx(10 * MAX_ZOOM / 0.25)
    assert view.zoom() == MAX_ZOOM
    low = view.zoom_limits()[0]
    assert view.zoom_to_magnification(1e-6) == pytest.approx(10 * low / 0.25)
    with pytest.raises(ValueError):
        view.zoom_to_magnification(0)
    view.set_slide(ArraySlide(grid_image(800, 600), mpp=1.0))
    view.zoom_to_magnification(20)
    assert view.zoom() == pytest.approx(2.0)  # 1 um/px shown at 20x: 2 screen px each


# -- without a slide -------------------------------------------------------------------


def test_empty_view_says_how_to_open_a_slide(qtbot, view):
    hint = view.empty_hint
    assert hint.isVisible() and "Open Slide" in hint.text()
    assert "drop a slide file here" in hint.text()
    area = view.viewport().geometry()
    assert area.contains(hint.geometry())
    assert abs(hint.geometry().center().x() - area.center().x()) <= 1
    assert abs(hint.geometry().center().y() - area.center().y()) <= 1

    triggered = []
    open_action = QAction("Open Slide...", view)
    open_action.triggered.connect(lambda: triggered.append("open"))
    recent = QAction("Open Recent", view)
    menu = QMenu(view)
    menu.addAction("a.svs")
    recent.setMenu(menu)
    view.set_empty_actions([open_action, recent])
    buttons = hint.buttons()
    # Tool buttons show the actions' icon texts: "Open Slide", without the dots.
    assert [b.defaultAction() for b in buttons] == [open_action, recent]
    assert [b.text() for b in buttons] == ["Open Slide", "Open Recent"]
    assert buttons[1].popupMode() == QToolButton.ToolButtonPopupMode.InstantPopup
    assert all(b.isVisible() for b in buttons)
    qtbot.mouseClick(buttons[0], Qt.MouseButton.LeftButton)
    assert triggered == ["open"]
    # Too narrow for the buttons side by side: they are stacked, not cut short.
    view.resize(260, VIEW_H)
    assert len({b.geometry().top() for b in buttons}) == 2
    assert all(b.width() >= b.sizeHint().width() for b in buttons)
    assert view.viewport().geometry().contains(hint.geometry())
    view.resize(VIEW_W, VIEW_H)
    view.set_empty_actions([open_action])
    assert [b.defaultAction() for b in hint.buttons()] == [open_action]

    view.set_slide(ArraySlide(grid_image(600, 400)))
    assert not hint.isVisible()
    view.resize(VIEW_W + 100, VIEW_H)  # stays hidden on resize
    assert not hint.isVisible()
    view.set_slide(None)
    assert hint.isVisible()
    area = view.viewport().geometry()
    assert abs(hint.geometry().center().x() - area.center().x()) <= 1  # re-centred


# -- cache and generations ------------------------------------------------------------


def test_tile_cache_is_an_lru_bounded_by_bytes():
    cache = PixmapCache(max_bytes=3 * 100 * 100 * 4)
    pixmaps = [QPixmap(100, 100) for _ in range(5)]
    keys = [TileKey(1, 0, i, 0) for i in range(5)]
    for key, pixmap in zip(keys[:3], pixmaps, strict=False):
        cache.put(key, pixmap)
    assert cache.nbytes == 3 * 40000
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], pixmaps[3])
    assert keys[1] not in cache and keys[0] in cache and len(cache) == 3
    cache.max_bytes = 40000
    assert cache.keys() == [keys[3]] and cache.nbytes == 40000


def test_view_cache_stays_within_its_byte_bound(qtbot, view):
    bound = 6 * TILE_SIZE * TILE_SIZE * 4
    view.set_cache_bytes(bound)
    loaded = []
    view.loader.tileReady.connect(lambda key: loaded.append(view.loader.cache.nbytes))
    view.set_slide(ArraySlide(grid_image(3000, 2000)))
    view.set_zoom(1.0)
    for x, y in [(400, 300), (2600, 300), (2600, 1700), (400, 1700), (1500, 1000)]:
        view.center_on(x, y)
        wait_loaded(qtbot, view)
        assert view.loader.cache.nbytes <= bound
    assert len(loaded) > 6 and max(loaded) <= bound
    assert_grid_shown(view, 3000, 2000)


def test_tiles_of_a_previous_slide_are_dropped(qtbot, view):
    red = np.zeros((400, 1200, 3), np.uint8)
    red[..., 0] = 255
    first = GatedSlide(red, gate_max=TILE_SIZE**2)  # tile reads wait, overview reads pass
    view.set_slide(first)
    assert first.entered.wait(5)  # a worker is reading a tile of the first slide
    threading.Timer(0.3, first.gate.set).start()
    blue = np.zeros((400, 600, 3), np.uint8)
    blue[..., 2] = 255
    view.set_slide(ArraySlide(blue))  # waits for the gated reads to finish
    wait_loaded(qtbot, view)
    qtbot.waitUntil(lambda: view.loader.stale_dropped >= 1, timeout=3000)
    generation = view.loader.generation
    assert all(key.generation == generation for key in view.loader.cache)
    image = view.viewport().grab().toImage()
    reds = 0
    for y in range(0, image.height(), 7):
        for x in range(0, image.width(), 7):
            colour = image.pixelColor(x, y)
            reds += colour.red() > 200 and colour.blue() < 50
    assert reds == 0
    assert_close(pixel(image, view.map_from_slide(QPointF(300, 200))), (0, 0, 255))


# -- scale bar and overview ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zoom", "mpp", "um", "label"),
    [
        (1.0, 0.5, 50, "50 µm"),
        (1.0, 0.25, 20, "20 µm"),
        (0.1, 0.5, 500, "500 µm"),
        (0.05, 0.5, 1000, "1 mm"),
        (0.01, 0.5, 5000, "5 mm"),
        (8.0, 0.25, 2, "2 µm"),
    ],
)
def test_scale_bar_picks_a_round_length(zoom, mpp, um, label):
    length_um, length_px = choose_length(zoom, mpp, max_px=150)
    assert (length_um, format_length(length_um)) == (um, label)
    assert 60 <= length_px <= 150


def test_scale_bar_is_drawn_with_its_length(qtbot, view):
    view.set_slide(ArraySlide(np.full((2000, 2000, 3), 255, np.uint8), mpp=0.5))
    view.set_zoom(1.0)
    _, length_px, _ = view.scale_bar.choose(view.zoom(), 0.5)
    assert length_px == 100  # 50 µm at 2 px/µm
    image = view.viewport().grab().toImage()
    # The bar is the longest run of dark pixels in a row near the bottom-left corner.
    longest = 0
    for y in range(VIEW_H - 60, VIEW_H):
        run = 0
        for x in range(0, 250):
            if QColor(image.pixel(x, y)).lightness() < 60:
                run += 1
                longest = max(longest, run)
            else:
                run = 0
    assert longest == pytest.approx(length_px, abs=3)


def test_overview_follows_the_view_and_moves_it(qtbot, view):
    panel = OverviewPanel(view)
    qtbot.addWidget(panel)
    panel.resize(260, 200)
    panel.show()
    with qtbot.waitSignal(view.thumbnailChanged, check_params_cb=lambda img: not img.isNull()):
        view.set_slide(ArraySlide(grid_image(2400, 1800)))
    assert not panel.image().isNull()
    assert_close(pixel(panel.image(), QPointF(panel.image().width() * 0.1, 5)), grid_colour(0, 0))
    view.set_zoom(1.0)
    view.center_on(600, 450)
    expected = view.visible_rect().intersected(QRectF(0, 0, 2400, 1800))
    assert panel.visible_rect() == expected
    # The outline is drawn where the visible rectangle is.
    shot = panel.grab().toImage()
    box = panel.map_from_slide(expected)
    assert pixel(shot, QPointF(box.left() + 1, box.center().y()))[0] > 200

    target = QPointF(1800, 1200)
    pos = panel.map_from_slide(QRectF(target, target)).topLeft()
    qtbot.mouseClick(panel, Qt.MouseButton.LeftButton, pos=pos.toPoint())
    centre = view.visible_rect().center()
    assert centre.x() == pytest.approx(1800, abs=2400 / 250 + 2)
    assert centre.y() == pytest.approx(1200, abs=1800 / 190 + 2)
    assert panel.visible_rect() == view.visible_rect().intersected(QRectF(0, 0, 2400, 1800))


def test_overview_panel_is_importable_from_slideview():
    from histoviewer.gui import slideview

    assert slideview.OverviewPanel is OverviewPanel


def test_display_pyramid_plans_virtual_levels():
    slide = ArraySlide(np.zeros((1000, 3000, 3), np.uint8))
    levels = tiles_mod.plan_levels(slide)
    assert [(lv.width, lv.height, lv.factor) for lv in levels] == [
        (3000, 1000, 1),
        (1500, 500, 2),
        (750, 250, 4),
        (375, 125, 8),
        (188, 63, 16),
    ]
    assert [lv.state for lv in levels[1:]] == [LevelState.PENDING] * 4
    built = tiles_mod.build_virtual_levels(slide, levels, lambda: True)
    assert built[2].shape == (250, 750, 3)
