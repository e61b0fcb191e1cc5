"""SlideView: a whole-slide image with smooth pan and zoom.

Scene coordinates are level-0 slide pixels. Tiles come from the display
pyramid level that fits the zoom (see :mod:`histoviewer.gui.tiles`) and are
drawn by one scene item below z = 0; overlays added with :meth:`add_layer`
sit above it. While a tile loads, the coarser cached tiles or the thumbnail
are drawn in its place. Without a slide the view shows what to do instead
(:class:`EmptyHint`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, Qt, Signal, Slot
from PySide6.QtGui import (
    QAction,
    QBrush,
    QColor,
    QEnterEvent,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyleOptionGraphicsItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from histoviewer.gui.scalebar import ScaleBar
from histoviewer.gui.tiles import (
    DEFAULT_CACHE_BYTES,
    DisplayLevel,
    LevelState,
    TileKey,
    TileLoader,
    choose_level,
)
from histoviewer.slide.base import SlideReader
from histoviewer.slide.magnification import magnification, zoom_for_magnification

#: Zoom factor of one wheel notch or one +/- key press.
ZOOM_STEP = 1.25
#: Largest zoom: 8 screen pixels per level-0 pixel.
MAX_ZOOM = 8.0
#: Smallest zoom, as a fraction of the zoom that fits the slide.
MIN_ZOOM_OF_FIT = 0.25
#: Part of the viewport the slide fills after fit() (leaves a small border).
FIT_FILL = 0.97
#: Part of the viewport one arrow key press pans.
PAN_STEP = 0.15
#: Tiles are requested this far (as a part of the viewport) beyond its edges.
PREFETCH = 0.25
BACKGROUND = QColor(48, 48, 48)
BLANK = QColor(255, 255, 255)  # the slide area before anything has loaded
#: Above every overlay layer: the rectangle being dragged in region selection.
REGION_BAND_Z = 100
#: What the view says while no slide is open ({shortcut}: the platform's Open keys).
EMPTY_TEXT = "Open a slide with File > Open Slide ({shortcut}), or drop a slide file here."
#: Widest the empty-view hint grows (px); narrower views wrap its text. Room for the
#: window's four buttons side by side (Open Slide, Open Recent, Open Demo Slide, Load Model).
EMPTY_HINT_WIDTH = 600


class _TileLayer(QGraphicsItem):
    """Draws the slide's tiles with ``paint_tiles(painter, exposed level-0 rect)``; one
    item covering the whole slide."""

    def __init__(self, paint_tiles: Callable[[QPainter, QRectF], None]) -> None:
        super().__init__()
        self._paint_tiles = paint_tiles
        self._rect = QRectF()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setZValue(-10)

    def set_rect(self, rect: QRectF) -> None:
        self.prepareGeometryChange()
        self._rect = QRectF(rect)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        exposed = option.exposedRect.intersected(self._rect)  # type: ignore[attr-defined]
        if not exposed.isEmpty():
            self._paint_tiles(painter, exposed)


class SlideView(QGraphicsView):
    """Shows a slide; scene coordinates are level-0 pixels.

    Wheel zooms about the cursor, left-drag pans, keys: +/= zoom in, - zoom out,
    0 or F fit, 1 actual size, arrows pan. ``zoom`` is screen pixels per level-0
    pixel, kept within fit/4 .. 8.

    Signals: ``zoomChanged(float)``; ``viewChanged(QRectF)`` with the visible
    level-0 rectangle after pans, zooms and resizes; ``cursorMoved(x, y)``
    (level-0 px under the mouse, (-1, -1) outside the slide); ``clicked(x, y)``
    for a left click on the slide that was not a drag; ``slideChanged(object)``
    with the new reader (or None); ``thumbnailChanged(QImage)`` when the slide's
    thumbnail is ready (a null image right after a slide change);
    ``loadFailed(str)`` with a sentence, once per slide, when reads fail.

    ``cursorMoved`` also fires after every zoom, pan, resize and slide change (keys,
    overview, code), with the point now under a still mouse, so a status bar showing it
    stays right; :meth:`cursor_position` gives it at any time.

    Objective magnification (:mod:`histoviewer.slide.magnification`):
    :meth:`magnification` is the power the view shows the slide at, and
    :meth:`zoom_to_magnification` zooms to one (about the view centre).

    Without a slide, :attr:`empty_hint` (centred over the view) says how to open one,
    with buttons for the actions given to :meth:`set_empty_actions`.

    Region selection (:meth:`start_region_selection`): left-drag draws a rectangle
    instead of panning; on release ``regionSelected(QRectF)`` gives it in level-0
    pixels, clipped to the slide; Esc (or :meth:`cancel_region_selection`) ends the
    mode with ``regionSelectionCancelled()``. Wheel zoom keeps working meanwhile.

    Selecting patches: Shift+left-drag draws the same rectangle (outside region
    selection) and on release emits ``patchesSelected(QRectF, add)`` with it in level-0
    pixels, clipped to the slide (``add``: Ctrl was held too, to add to a selection);
    a Shift+click (no drag) emits ``shiftClicked(x, y)``.
    """

    zoomChanged = Signal(float)
    viewChanged = Signal(QRectF)
    cursorMoved = Signal(float, float)
    clicked = Signal(float, float)
    slideChanged = Signal(object)
    thumbnailChanged = Signal(QImage)
    loadFailed = Signal(str)
    regionSelected = Signal(QRectF)
    regionSelectionCancelled = Signal()
    patchesSelected = Signal(QRectF, bool)
    shiftClicked = Signal(float, float)

    def __init__(
        self, parent: QWidget | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        super().__init__(parent)
        self._reader: SlideReader | None = None
        self._zoom = 1.0
        self._thumb_image = QImage()
        self._thumb = QPixmap()
        self._batching = 0
        self._auto_fit = True  # refit on resize until the user pans or zooms
        self._center = QPointF()
        self._press_pos: QPointF | None = None
        self._selecting = False  # region selection mode
        self._band_origin: QPointF | None = None  # level-0 point where the drag began
        self._band_picks_patches = False  # the band is a Shift+drag, not Map Region
        self._mouse_pos: QPointF | None = None  # viewport position; None: not over it
        self.scale_bar = ScaleBar()

        self._scene = QGraphicsScene(self)
        self._scene.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self.setScene(self._scene)
        self._layer = _TileLayer(self._paint_tiles)
        self._scene.addItem(self._layer)
        self._band = _RegionBand()
        self._scene.addItem(self._band)

        # No Qt parent: running workers keep the loader alive past the view.
        self.loader = TileLoader(cache_bytes)
        self.loader.tileReady.connect(self._on_tile_ready)
        self.loader.levelsChanged.connect(self._request_tiles)
        self.loader.thumbnailReady.connect(self._on_thumbnail)
        self.loader.failed.connect(self.loadFailed)

        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        # The scale bar sits still while the content scrolls, so repaint it all.
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setBackgroundBrush(BACKGROUND)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.setSceneRect(QRectF(0, 0, 1, 1))
        self.horizontalScrollBar().valueChanged.connect(self._on_scrolled)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        # A child of the view, not of its viewport: viewport children scroll with it.
        self.empty_hint = EmptyHint(self)
        self._place_empty_hint()

    # -- slide ------------------------------------------------------------------

    def set_slide(self, reader: SlideReader | None) -> None:
        """Show ``reader`` (fitted to the view), or nothing for None.

        The previous slide's queued reads are dropped and its tiles forgotten;
        this waits (at most 2 s) for reads already running, so the caller may
        close the previous reader afterwards.
        """
        self.cancel_region_selection()
        self._band_origin = None  # a Shift+drag under way ends with its slide
        self._band.setVisible(False)
        self.loader.set_slide(None)
        self.loader.wait(2000)
        self._reader = reader
        self._thumb_image = QImage()
        self._thumb = QPixmap()
        self.loader.set_slide(reader)
        self._layer.set_rect(self.slide_rect())
        self.empty_hint.setVisible(reader is None)
        self.slideChanged.emit(reader)
        self.thumbnailChanged.emit(QImage())
        if reader is None:
            with self._batch():
                self.setSceneRect(QRectF(0, 0, 1, 1))
            self.viewport().update()
            self._emit_view_changed()
        else:
            self.fit()

    def slide(self) -> SlideReader | None:
        return self._reader

    def slide_rect(self) -> QRectF:
        """The slide's level-0 rectangle (empty without a slide)."""
        if self._reader is None:
            return QRectF()
        w, h = self._reader.dimensions
        return QRectF(0, 0, w, h)

    def thumbnail(self) -> QImage:
        """The slide's thumbnail once built in the background (null until then)."""
        return self._thumb_image

    def display_level(self) -> DisplayLevel | None:
        """The display pyramid level tiles are drawn from at the current zoom."""
        if not self.loader.levels:
            return None
        # Device pixels count: a HiDPI screen shows twice the detail per logical px.
        return choose_level(self.loader.levels, self._zoom * self.devicePixelRatioF())

    def fully_loaded(self) -> bool:
        """True when every tile under the viewport is loaded from the level the zoom
        calls for (for tests, screenshots and exports of the view)."""
        level = self.display_level()
        if level is None or level.state is not LevelState.READY:
            return False
        area = self.visible_rect().intersected(self.slide_rect())
        return all(
            self.loader.pixmap(level.index, col, row) is not None
            for col, row in level.tiles_in(area)
        )

    def set_cache_bytes(self, max_bytes: int) -> None:
        """Change the tile cache's byte bound (default 256 MB)."""
        self.loader.cache.max_bytes = max_bytes

    def shutdown(self) -> None:
        """Stop background reads (call before closing the window or the reader)."""
        self.loader.set_slide(None)
        self.loader.wait(5000)

    # -- without a slide ---------------------------------------------------------------

    def set_empty_actions(self, actions: list[QAction]) -> None:
        """Show ``actions`` (Open Slide, Open Recent, a demo slide...) as buttons under
        the empty view's hint; an action with a menu opens it. [] removes them."""
        self.empty_hint.set_actions(actions)
        self._place_empty_hint()

    def _place_empty_hint(self) -> None:
        area = self.viewport().geometry()
        hint = self.empty_hint
        width = max(1, min(EMPTY_HINT_WIDTH, area.width() - 24))
        hint.fit_width(width)
        height = hint.heightForWidth(width) if hint.hasHeightForWidth() else -1
        if height < 0:
            height = hint.sizeHint().height()
        height = min(height, area.height())
        hint.setGeometry(
            QRect(
                area.x() + (area.width() - width) // 2,
                area.y() + max(0, (area.height() - height) // 2),
                width,
                height,
            )
        )
        hint.raise_()

    # -- layers -------------------------------------------------------------------

    def add_layer(self, item: QGraphicsItem, z: float) -> None:
        """Put an overlay item (in level-0 coordinates) into the scene at ``z`` (> 0)."""
        item.setZValue(z)
        if item.scene() is not self._scene:
            self._scene.addItem(item)

    def remove_layer(self, item: QGraphicsItem) -> None:
        if item.scene() is self._scene:
            self._scene.removeItem(item)

    # -- zoom and position -----------------------------------------------------------

    def zoom(self) -> float:
        """Screen pixels per level-0 pixel."""
        return self._zoom

    def fit_zoom(self) -> float:
        """The zoom at which the whole slide fits the viewport."""
        rect = self.slide_rect()
        if rect.isEmpty():
            return 1.0
        vp = self.viewport()
        return FIT_FILL * min(vp.width() / rect.width(), vp.height() / rect.height())

    def zoom_limits(self) -> tuple[float, float]:
        fit = self.fit_zoom()
        return fit * MIN_ZOOM_OF_FIT, max(MAX_ZOOM, fit)

    def set_zoom(self, scale: float, anchor: QPointF | tuple[float, float] | None = None) -> None:
        """Zoom to ``scale`` (clamped), keeping the level-0 point ``anchor`` where it
        is on screen (the view centre when None)."""
        if self._reader is None:
            return
        self._auto_fit = False
        if anchor is None:
            self._zoom_about(scale, self.visible_rect().center(), self._viewport_center())
        else:
            point = QPointF(*anchor) if isinstance(anchor, tuple) else QPointF(anchor)
            self._zoom_about(scale, point, self.viewportTransform().map(point))

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom / ZOOM_STEP)

    def fit(self) -> None:
        """Show the whole slide, centred; keeps fitting on resize until the user moves."""
        if self._reader is None:
            return
        self._zoom_about(self.fit_zoom(), self.slide_rect().center(), self._viewport_center())
        self._auto_fit = True

    def actual_size(self) -> None:
        """One screen pixel per level-0 pixel, about the view centre."""
        self.set_zoom(1.0)

    def center_on(self, x: float, y: float) -> None:
        """Put the level-0 point (x, y) at the centre of the view."""
        if self._reader is None:
            return
        self._auto_fit = False
        with self._batch():
            self._scroll_to_center(QPointF(x, y))
        self._emit_view_changed()

    def visible_rect(self) -> QRectF:
        """The viewport in level-0 pixels (not clipped to the slide)."""
        inverse, _ = self.viewportTransform().inverted()
        return inverse.mapRect(QRectF(self.viewport().rect()))

    def map_to_slide(self, pos: QPointF) -> QPointF:
        """Level-0 point under the viewport position ``pos``."""
        inverse, _ = self.viewportTransform().inverted()
        return inverse.map(QPointF(pos))

    def map_from_slide(self, point: QPointF) -> QPointF:
        """Viewport position of the level-0 ``point``."""
        return self.viewportTransform().map(QPointF(point))

    def cursor_position(self) -> tuple[float, float]:
        """Level-0 (x, y) under the mouse, (-1, -1) when it is not over the slide."""
        if self._mouse_pos is None:
            return -1.0, -1.0
        point = self.map_to_slide(self._mouse_pos)
        if not self._inside(point):
            return -1.0, -1.0
        return point.x(), point.y()

    # -- magnification --------------------------------------------------------------------

    def mpp(self) -> float | None:
        """The slide's level-0 microns per pixel (None without a slide or a usable scale)."""
        if self._reader is None:
            return None
        try:
            mpp = float(self._reader.mpp)
        except (AttributeError, TypeError, ValueError):
            return None
        return mpp if math.isfinite(mpp) and mpp > 0 else None

    def magnification(self) -> float | None:
        """The objective power the view shows the slide at now (40x ~ 0.25 µm per
        screen pixel); None without a slide."""
        mpp = self.mpp()
        return magnification(mpp, self._zoom) if mpp is not None else None

    def zoom_to_magnification(self, mag: float) -> float | None:
        """Zoom to objective power ``mag`` about the view centre, clamped to the zoom
        limits; returns the magnification shown now (None: no slide, nothing done).

        Raises ValueError for a ``mag`` that is not a positive number.
        """
        mpp = self.mpp()
        if mpp is None:
            return None
        self.set_zoom(zoom_for_magnification(mpp, mag))
        return self.magnification()

    # -- region selection ---------------------------------------------------------------

    def start_region_selection(self) -> bool:
        """Let the next left-drag draw a region instead of panning (False: no slide)."""
        if self._reader is None:
            return False
        self._selecting = True
        self._band_origin = None
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.viewport().setCursor(Qt.CursorShape.CrossCursor)
        self.setFocus(Qt.FocusReason.OtherFocusReason)  # Esc reaches the view
        return True

    def is_selecting_region(self) -> bool:
        return self._selecting

    def cancel_region_selection(self) -> None:
        """Leave region selection without a region (emits regionSelectionCancelled)."""
        if self._selecting:
            self._end_region_selection()
            self.regionSelectionCancelled.emit()

    def region_band(self) -> QRectF | None:
        """The rectangle being dragged (level-0 px), None when none is shown."""
        return QRectF(self._band.rect()) if self._band.isVisible() else None

    def _end_region_selection(self) -> None:
        self._selecting = False
        self._band_origin = None
        self._band_picks_patches = False
        self._band.setVisible(False)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.viewport().unsetCursor()

    def _band_rect(self, pos: QPointF) -> QRectF:
        point = self._clamp_to_slide(self.map_to_slide(pos))
        return QRectF(self._band_origin, point).normalized()

    def _clamp_to_slide(self, point: QPointF) -> QPointF:
        rect = self.slide_rect()
        return QPointF(
            min(max(point.x(), rect.left()), rect.right()),
            min(max(point.y(), rect.top()), rect.bottom()),
        )

    # -- internals: geometry -----------------------------------------------------------

    def _viewport_center(self) -> QPointF:
        vp = self.viewport()
        return QPointF(vp.width() / 2.0, vp.height() / 2.0)

    def _zoom_about(self, scale: float, point: QPointF, view_pos: QPointF) -> None:
        """Set the zoom, then scroll so that level-0 ``point`` is at ``view_pos``."""
        low, high = self.zoom_limits()
        zoom = min(max(scale, low), high)
        changed = not math.isclose(zoom, self._zoom, rel_tol=1e-9)
        with self._batch():
            self._zoom = zoom
            self.setTransform(QTransform.fromScale(zoom, zoom))
            self._update_scene_rect()
            offset = (view_pos - self._viewport_center()) / zoom
            self._scroll_to_center(point - offset)
        if changed:
            self.zoomChanged.emit(zoom)
        self._emit_view_changed()

    def _update_scene_rect(self) -> None:
        # Half a viewport of margin lets the view centre reach every slide point
        # and no further, so the slide can never be scrolled out of sight; a zoom
        # about a point near an edge keeps the point as far as that allows.
        rect = self.slide_rect()
        if rect.isEmpty():
            return
        vp = self.viewport()
        mx, my = vp.width() / (2 * self._zoom), vp.height() / (2 * self._zoom)
        self.setSceneRect(rect.adjusted(-mx, -my, mx, my))

    def _scroll_to_center(self, point: QPointF) -> None:
        # Set the scroll bars ourselves: centerOn() truncates, this rounds.
        vp = self.viewport()
        self.horizontalScrollBar().setValue(round(point.x() * self._zoom - vp.width() / 2.0))
        self.verticalScrollBar().setValue(round(point.y() * self._zoom - vp.height() / 2.0))

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """Scroll changes inside are ours: no viewChanged per step, no auto-fit reset."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1

    @Slot()
    def _on_scrolled(self) -> None:
        if self._batching:
            return
        self._auto_fit = False  # the user panned (drag, keys)
        self._emit_view_changed()

    def _emit_view_changed(self) -> None:
        rect = self.visible_rect()
        self._center = rect.center()
        self._request_tiles()
        self.viewChanged.emit(rect)
        # What lies under a still mouse changed too (keyboard zoom, overview, code).
        self.cursorMoved.emit(*self.cursor_position())

    def resizeEvent(self, event: QResizeEvent) -> None:
        with self._batch():
            super().resizeEvent(event)
            self._place_empty_hint()
            if self._reader is not None and not self._auto_fit:
                self._update_scene_rect()
                self._scroll_to_center(self._center)
        if self._reader is not None and self._auto_fit:
            self.fit()
        else:
            self._emit_view_changed()

    # -- internals: tiles ----------------------------------------------------------

    @Slot()
    def _request_tiles(self) -> None:
        level = self.display_level()
        if level is None:
            return
        visible = self.visible_rect()
        dx, dy = visible.width() * PREFETCH, visible.height() * PREFETCH
        area = visible.adjusted(-dx, -dy, dx, dy).intersected(self.slide_rect())
        center = visible.center()

        def distance(tile: tuple[int, int]) -> float:
            offset = level.tile_rect(*tile).center() - center
            return offset.x() ** 2 + offset.y() ** 2

        tiles = sorted(level.tiles_in(area), key=distance) if not area.isEmpty() else []
        self.loader.request(level, tiles)

    @Slot(object)
    def _on_tile_ready(self, key: TileKey) -> None:
        level = self.loader.levels[key.level]
        self._layer.update(level.tile_rect(key.col, key.row))

    @Slot(QImage)
    def _on_thumbnail(self, image: QImage) -> None:
        self._thumb_image = image
        self._thumb = QPixmap.fromImage(image)
        self._layer.update()
        self.thumbnailChanged.emit(image)

    def _paint_tiles(self, painter: QPainter, exposed: QRectF) -> None:
        """Draw the tiles under ``exposed`` (level-0), falling back to coarser ones."""
        levels = self.loader.levels
        if not levels:
            return
        transform = painter.worldTransform()
        level = choose_level(levels, transform.m11() * self.devicePixelRatioF())
        ready, missing = [], []
        for col, row in level.tiles_in(exposed):
            pixmap = self.loader.pixmap(level.index, col, row)
            rect = level.tile_rect(col, row)
            if pixmap is None:
                missing.append(rect)
            else:
                ready.append((rect, pixmap))
        for rect in missing:
            self._paint_fallback(painter, rect, level)
        inverse, _ = transform.inverted()
        for rect, pixmap in ready:
            # Snap tile edges to device pixels so neighbours neither gap nor overlap.
            device = transform.mapRect(rect)
            snapped = QRectF(
                QPointF(round(device.left()), round(device.top())),
                QPointF(round(device.right()), round(device.bottom())),
            )
            painter.drawPixmap(inverse.mapRect(snapped), pixmap, QRectF(pixmap.rect()))

    def _paint_fallback(self, painter: QPainter, rect: QRectF, level: DisplayLevel) -> None:
        """Fill a not-yet-loaded tile from the finest coarser level that has all the
        tiles it needs cached, else from the thumbnail (one scaled draw per source,
        not a stack of them: this runs on every frame while tiles load)."""
        for coarse in self.loader.levels[level.index + 1 :]:
            parts = []
            for col, row in coarse.tiles_in(rect):
                pixmap = self.loader.pixmap(coarse.index, col, row)
                if pixmap is None:
                    break
                parts.append((coarse.tile_rect(col, row), pixmap))
            else:
                for tile, pixmap in parts:
                    _draw_part(painter, rect, tile, pixmap)
                return
        if self._thumb.isNull():
            painter.fillRect(rect, BLANK)
        else:
            _draw_part(painter, rect, self.slide_rect(), self._thumb)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawForeground(painter, rect)
        if self._reader is None:
            return
        painter.save()
        painter.resetTransform()  # viewport pixels: the bar stays put while panning
        self.scale_bar.paint(painter, QRectF(self.viewport().rect()), self._zoom, self._reader.mpp)
        painter.restore()

    # -- input --------------------------------------------------------------------

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if self._reader is None or steps == 0:
            event.ignore()
            return
        pos = event.position()
        self._auto_fit = False
        self._zoom_about(self._zoom * ZOOM_STEP**steps, self.map_to_slide(pos), pos)
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        left = event.button() == Qt.MouseButton.LeftButton
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if left and (self._selecting or (shift and self._reader is not None)):
            self._band_picks_patches = not self._selecting
            self._band_origin = self._clamp_to_slide(self.map_to_slide(event.position()))
            self._press_pos = event.position()
            self._band.setRect(QRectF(self._band_origin, self._band_origin))
            self._band.setVisible(True)
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton:
            self._press_pos = event.position()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._band_origin is not None:
            if event.button() != Qt.MouseButton.LeftButton:
                event.accept()
                return
            rect = self._band_rect(event.position())
            moved = (event.position() - self._press_pos).manhattanLength()
            self._press_pos = None
            self._band_origin = None
            self._band.setVisible(False)
            event.accept()
            if self._band_picks_patches:
                self._band_picks_patches = False
                add = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
                self._emit_patch_pick(event.position(), rect, moved, add)
                return
            if moved < QApplication.startDragDistance() or rect.isEmpty():
                return  # a click, not a drag: keep waiting for a rectangle
            self._end_region_selection()
            self.regionSelected.emit(rect)
            return
        super().mouseReleaseEvent(event)
        if event.button() != Qt.MouseButton.LeftButton or self._press_pos is None:
            return
        moved = (event.position() - self._press_pos).manhattanLength()
        self._press_pos = None
        if moved < QApplication.startDragDistance():
            point = self.map_to_slide(event.position())
            if self._inside(point):
                self.clicked.emit(point.x(), point.y())

    def _emit_patch_pick(self, pos: QPointF, rect: QRectF, moved: float, add: bool) -> None:
        if moved >= QApplication.startDragDistance():
            if not rect.isNull():  # a drag along a row has no height, and counts
                self.patchesSelected.emit(rect, add)
            return
        point = self.map_to_slide(pos)
        if self._inside(point):
            self.shiftClicked.emit(point.x(), point.y())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._mouse_pos = QPointF(event.position())
        if self._band_origin is not None:
            self._band.setRect(self._band_rect(event.position()))
        super().mouseMoveEvent(event)
        self._mouse_pos = QPointF(event.position())
        self.cursorMoved.emit(*self.cursor_position())

    def viewportEvent(self, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Enter and isinstance(event, QEnterEvent):
            self._mouse_pos = QPointF(event.position())
        elif kind == QEvent.Type.Leave:
            self._mouse_pos = None
            self.cursorMoved.emit(-1.0, -1.0)
        return super().viewportEvent(event)

    def _inside(self, point: QPointF) -> bool:
        rect = self.slide_rect()
        return (
            not rect.isEmpty() and 0 <= point.x() < rect.width() and 0 <= point.y() < rect.height()
        )

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        Key = Qt.Key
        if self._reader is None:
            super().keyPressEvent(event)
        elif key == Key.Key_Escape and self._selecting:
            self.cancel_region_selection()
        elif key in (Key.Key_Plus, Key.Key_Equal):
            self.zoom_in()
        elif key in (Key.Key_Minus, Key.Key_Underscore):
            self.zoom_out()
        elif key in (Key.Key_0, Key.Key_F):
            self.fit()
        elif key == Key.Key_1:
            self.actual_size()
        elif key in (Key.Key_Left, Key.Key_Right, Key.Key_Up, Key.Key_Down):
            vp = self.viewport()
            dx = round(vp.width() * PAN_STEP)
            dy = round(vp.height() * PAN_STEP)
            bar_x, bar_y = self.horizontalScrollBar(), self.verticalScrollBar()
            if key == Key.Key_Left:
                bar_x.setValue(bar_x.value() - dx)
            elif key == Key.Key_Right:
                bar_x.setValue(bar_x.value() + dx)
            elif key == Key.Key_Up:
                bar_y.setValue(bar_y.value() - dy)
            else:
                bar_y.setValue(bar_y.value() + dy)
        else:
            super().keyPressEvent(event)
            return
        event.accept()


class EmptyHint(QWidget):
    """What the view shows without a slide: a sentence on how to open one (``label``)
    and a row of buttons for the window's actions (:meth:`set_actions`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyHint")
        keys = QKeySequence(QKeySequence.StandardKey.Open)
        shortcut = keys.toString(QKeySequence.SequenceFormat.NativeText) or "Ctrl+O"
        self.label = QLabel(EMPTY_TEXT.format(shortcut=shortcut))
        self.label.setObjectName("emptyHintText")
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        font = self.label.font()
        if font.pointSizeF() > 0:  # not a pixel-sized font
            font.setPointSizeF(font.pointSizeF() * 1.15)
            self.label.setFont(font)
        self._row = QHBoxLayout()
        self._row.setSpacing(8)
        self._buttons: list[QToolButton] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(12)
        layout.addWidget(self.label)
        layout.addLayout(self._row)
        # Light on the view's dark background, whatever the palette.
        self.setStyleSheet(
            "QLabel#emptyHintText { color: #e6e6e6; }QToolButton { padding: 4px 10px; }"
        )

    def text(self) -> str:
        return self.label.text()

    def set_actions(self, actions: list[QAction]) -> None:
        """One button per action (an action with a menu pops it up); replaces the old."""
        for button in self._buttons:
            self._row.removeWidget(button)
            button.deleteLater()
        self._buttons = []
        while self._row.count():
            self._row.takeAt(0)
        if not actions:
            return
        self._row.addStretch(1)
        for action in actions:
            button = QToolButton(self)
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            if action.menu() is not None:
                button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
            self._row.addWidget(button)
            button.show()  # now, not on the next event loop pass
            self._buttons.append(button)
        self._row.addStretch(1)

    def buttons(self) -> list[QToolButton]:
        """The action buttons, in order."""
        return list(self._buttons)

    def fit_width(self, width: int) -> None:
        """Stack the buttons when side by side they would not fit ``width`` px."""
        margins = self.layout().contentsMargins()
        room = width - margins.left() - margins.right()
        wide = sum(b.sizeHint().width() for b in self._buttons)
        wide += self._row.spacing() * max(0, len(self._buttons) - 1)
        direction = (
            QHBoxLayout.Direction.LeftToRight if wide <= room else QHBoxLayout.Direction.TopToBottom
        )
        stacked = direction == QHBoxLayout.Direction.TopToBottom
        align = Qt.AlignmentFlag.AlignHCenter if stacked else Qt.AlignmentFlag(0)
        if self._row.direction() != direction:
            self._row.setDirection(direction)
        for button in self._buttons:
            self._row.setAlignment(button, align)


class _RegionBand(QGraphicsRectItem):
    """The rectangle drawn while selecting a region: black dashes over a white line and
    a light fill, the same line width at every zoom."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(REGION_BAND_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setVisible(False)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        rect = self.rect()
        painter.fillRect(rect, QBrush(QColor(255, 255, 255, 60)))
        for color, style in (
            (QColor(255, 255, 255), Qt.PenStyle.SolidLine),
            (QColor(20, 20, 20), Qt.PenStyle.DashLine),
        ):
            pen = QPen(color, 2, style)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(rect)


def _draw_part(painter: QPainter, target: QRectF, area: QRectF, pixmap: QPixmap) -> None:
    """Draw the part of ``pixmap`` (showing level-0 ``area``) that falls in ``target``."""
    part = area.intersected(target)
    if part.isEmpty():
        return
    kx, ky = pixmap.width() / area.width(), pixmap.height() / area.height()
    x, y = (part.x() - area.x()) * kx, (part.y() - area.y()) * ky
    source = QRectF(x, y, part.width() * kx, part.height() * ky)
    painter.drawPixmap(part, pixmap, source)


def __getattr__(name: str):
    # ``from histoviewer.gui.slideview import OverviewPanel`` works too; the panel
    # lives in overview.py, which is imported lazily to avoid an import cycle.
    if name == "OverviewPanel":
        from histoviewer.gui.overview import OverviewPanel

        return OverviewPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
