"""A scale bar in micrometres, drawn in a corner of the slide view's viewport."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen

#: Round lengths the bar may show, in micrometres (1-2-5 steps).
NICE_LENGTHS_UM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


def format_length(um: float) -> str:
    """``"500 µm"``, ``"1 mm"``, ``"2.5 mm"``."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} µm"


def choose_length(zoom: float, mpp: float, max_px: float = 150.0) -> tuple[float, float]:
    """The longest round length (µm) whose bar fits in ``max_px`` screen pixels.

    ``zoom`` is screen pixels per level-0 pixel and ``mpp`` micrometres per
    level-0 pixel. Returns ``(length_um, length_px)``; with the 1-2-5 steps the
    bar is between 40 % and 100 % of ``max_px`` long, except at the extremes of
    :data:`NICE_LENGTHS_UM`.
    """
    if zoom <= 0 or mpp <= 0:
        raise ValueError(f"zoom and mpp must be positive, got {zoom} and {mpp}")
    px_per_um = zoom / mpp
    fitting = [um for um in NICE_LENGTHS_UM if um * px_per_um <= max_px]
    length = fitting[-1] if fitting else NICE_LENGTHS_UM[0]
    return float(length), length * px_per_um


class ScaleBar:
    """Draws the bar; the view calls :meth:`paint` from ``drawForeground``.

    Set ``visible`` to hide it; ``max_px`` caps its length on screen.
    """

    def __init__(self, max_px: float = 150.0, margin: float = 12.0) -> None:
        self.visible = True
        self.max_px = max_px
        self.margin = margin
        self._font = QFont()
        self._font.setPixelSize(12)

    def choose(self, zoom: float, mpp: float) -> tuple[float, float, str]:
        """``(length_um, length_px, label)`` for this zoom and pixel size."""
        length_um, length_px = choose_length(zoom, mpp, self.max_px)
        return length_um, length_px, format_length(length_um)

    def geometry(self, viewport: QRectF, zoom: float, mpp: float) -> QRectF:
        """Where the bar's box goes: the bottom-left corner of ``viewport``."""
        _, length_px, label = self.choose(zoom, mpp)
        metrics = QFontMetricsF(self._font)
        width = max(length_px, metrics.horizontalAdvance(label)) + 16
        height = metrics.height() + 18
        return QRectF(
            viewport.left() + self.margin,
            viewport.bottom() - self.margin - height,
            width,
            height,
        )

    def paint(self, painter: QPainter, viewport: QRectF, zoom: float, mpp: float) -> None:
        """Draw the bar with ``painter`` in viewport (device) coordinates."""
        if not self.visible or zoom <= 0 or mpp <= 0:
            return
        _, length_px, label = self.choose(zoom, mpp)
        box = self.geometry(viewport, zoom, mpp)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(255, 255, 255, 210))
        painter.drawRoundedRect(box, 4, 4)
        painter.setFont(self._font)
        painter.setPen(QColor(20, 20, 20))
        metrics = QFontMetricsF(self._font)
        text_rect = QRectF(box.left(), box.top() + 3, box.width(), metrics.height())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, label)
        # The bar itself, centred under the label, with end ticks.
        x0 = box.left() + (box.width() - length_px) / 2
        y = box.bottom() - 7
        pen = QPen(QColor(20, 20, 20), 3)
        pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        painter.setPen(pen)
        painter.drawLine(QPointF(x0, y), QPointF(x0 + length_px, y))
        pen.setWidthF(1.5)
        painter.setPen(pen)
        painter.drawLine(QPointF(x0, y - 5), QPointF(x0, y + 1.5))
        painter.drawLine(QPointF(x0 + length_px, y - 5), QPointF(x0 + length_px, y + 1.5))
        painter.restore()
