"""The outline of the selected patch on the slide."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsRectItem


class PatchOutline(QGraphicsRectItem):
    """A black-and-white frame around one patch, the same width at every zoom (it
    shows on dark tissue and on white glass alike). Hidden until :meth:`set_box`."""

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        pen = QPen(QColor(0, 0, 0), 3)
        pen.setCosmetic(True)
        self.setPen(pen)
        self._inner = QGraphicsRectItem(self)
        inner_pen = QPen(QColor(255, 255, 255), 1.5)
        inner_pen.setCosmetic(True)
        self._inner.setPen(inner_pen)
        self.setVisible(False)

    def set_box(self, x: float, y: float, w: float, h: float) -> None:
        """Outline the level-0 rectangle (x, y, w, h)."""
        self.setRect(x, y, w, h)
        self._inner.setRect(x, y, w, h)
        self.setVisible(True)

    def clear(self) -> None:
        self.setVisible(False)
