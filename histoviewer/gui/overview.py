"""OverviewPanel: the slide's thumbnail with the visible part outlined."""

from __future__ import annotations

from typing import Protocol

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, SignalInstance, Slot
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

_MARGIN = 4.0
_OUTLINE = QColor(230, 40, 40)
_BACKGROUND = QColor(48, 48, 48)
_MIN_OUTLINE_PX = 4.0  # a tiny visible area still shows as a box
_MIN_SIZE = (120, 90)  # smallest useful thumbnail area (px)


class FollowedView(Protocol):
    """What the panel needs of the view it follows: a
    :class:`~histoviewer.gui.slideview.SlideView` (named here, not imported, so that
    the view's module may import this one)."""

    viewChanged: SignalInstance  # (QRectF): the visible level-0 rectangle
    thumbnailChanged: SignalInstance  # (QImage)
    slideChanged: SignalInstance  # (reader or None)

    def slide(self): ...

    def thumbnail(self) -> QImage: ...

    def visible_rect(self) -> QRectF: ...

    def center_on(self, x: float, y: float) -> None: ...


class OverviewPanel(QWidget):
    """The slide thumbnail (built by the view in the background) with the view's
    visible rectangle drawn on it; clicking or dragging on it moves the view there.

    Pass the :class:`SlideView` to follow, here or later with :meth:`set_view`.
    """

    def __init__(self, view: FollowedView | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view: FollowedView | None = None
        self._image = QImage()
        self._pixmap = QPixmap()
        self._slide_size = (0, 0)
        self._visible = QRectF()
        self._dragging = False
        self.setMinimumSize(*_MIN_SIZE)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click or drag to move the view")
        if view is not None:
            self.set_view(view)

    def sizeHint(self) -> QSize:
        return QSize(260, 200)

    def minimumSizeHint(self) -> QSize:
        # Small: the thumbnail scales to any size, so a short dock just shows it smaller.
        return QSize(_MIN_SIZE[0], _MIN_SIZE[1])

    def set_view(self, view: FollowedView | None) -> None:
        """Follow ``view`` (and stop following the previous one)."""
        if self._view is not None:
            self._view.viewChanged.disconnect(self._on_view_changed)
            self._view.thumbnailChanged.disconnect(self._on_thumbnail)
            self._view.slideChanged.disconnect(self._on_slide_changed)
        self._view = view
        if view is not None:
            view.viewChanged.connect(self._on_view_changed)
            view.thumbnailChanged.connect(self._on_thumbnail)
            view.slideChanged.connect(self._on_slide_changed)
            self._on_slide_changed(view.slide())
            self._on_thumbnail(view.thumbnail())
            self._on_view_changed(view.visible_rect())

    def image(self) -> QImage:
        """The thumbnail shown (null before the view has built one)."""
        return self._image

    def visible_rect(self) -> QRectF:
        """The outlined area in level-0 pixels, clipped to the slide."""
        w, h = self._slide_size
        return self._visible.intersected(QRectF(0, 0, w, h))

    def image_rect(self) -> QRectF:
        """Where the slide is drawn in this widget (aspect kept, centred)."""
        w, h = self._slide_size
        if w <= 0 or h <= 0:
            return QRectF()
        room_w, room_h = self.width() - 2 * _MARGIN, self.height() - 2 * _MARGIN
        scale = min(room_w / w, room_h / h)
        dw, dh = w * scale, h * scale
        return QRectF((self.width() - dw) / 2, (self.height() - dh) / 2, dw, dh)

    def map_to_slide(self, pos: QPointF) -> QPointF:
        """Level-0 point under the widget position ``pos``."""
        area = self.image_rect()
        w, h = self._slide_size
        if area.isEmpty():
            return QPointF()
        return QPointF(
            (pos.x() - area.left()) * w / area.width(), (pos.y() - area.top()) * h / area.height()
        )

    def map_from_slide(self, rect: QRectF) -> QRectF:
        """A level-0 rectangle in widget coordinates."""
        area = self.image_rect()
        w, h = self._slide_size
        if area.isEmpty():
            return QRectF()
        kx, ky = area.width() / w, area.height() / h
        return QRectF(
            area.left() + rect.left() * kx,
            area.top() + rect.top() * ky,
            rect.width() * kx,
            rect.height() * ky,
        )

    # -- view signals ---------------------------------------------------------

    @Slot(object)
    def _on_slide_changed(self, reader) -> None:
        self._slide_size = reader.dimensions if reader is not None else (0, 0)
        self._image = QImage()
        self._pixmap = QPixmap()
        self._visible = QRectF()
        self.update()

    @Slot(QImage)
    def _on_thumbnail(self, image: QImage) -> None:
        self._image = image
        self._pixmap = QPixmap.fromImage(image) if not image.isNull() else QPixmap()
        self.update()

    @Slot(QRectF)
    def _on_view_changed(self, rect: QRectF) -> None:
        self._visible = QRectF(rect)
        self.update()

    # -- painting and input --------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), _BACKGROUND)
        area = self.image_rect()
        if area.isEmpty():
            return
        if self._pixmap.isNull():
            painter.fillRect(area, QColor(255, 255, 255))
        else:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawPixmap(area, self._pixmap, QRectF(self._pixmap.rect()))
        visible = self.visible_rect()
        if visible.isEmpty() or visible.contains(QRectF(0, 0, *self._slide_size)):
            return  # the whole slide is in view: an outline would only frame it
        box = self.map_from_slide(visible)
        if box.width() < _MIN_OUTLINE_PX or box.height() < _MIN_OUTLINE_PX:
            center = box.center()
            size = max(box.width(), box.height(), _MIN_OUTLINE_PX)
            box = QRectF(center.x() - size / 2, center.y() - size / 2, size, size)
        painter.setPen(QPen(_OUTLINE, 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(box.adjusted(1, 1, -1, -1))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._dragging = True
            self._move_view(event.position())
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._dragging:
            self._move_view(event.position())
            event.accept()
        else:
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._dragging = False
        super().mouseReleaseEvent(event)

    def _move_view(self, pos: QPointF) -> None:
        if self._view is None or self.image_rect().isEmpty():
            return
        w, h = self._slide_size
        point = self.map_to_slide(pos)
        x = min(max(point.x(), 0.0), float(w))
        y = min(max(point.y(), 0.0), float(h))
        self._view.center_on(x, y)
