"""What the pathologist's labels and patch selection look like on the slide.

:class:`LabelLayer` frames every labelled patch in its class colour;
:class:`CellSelectionLayer` tints the patches selected together (Shift+drag). Both
are single scene items in level-0 pixels that keep their boxes in numpy arrays and
draw only those in the exposed rectangle, so thousands of labels cost a vectorised
filter and one ``drawRects`` per colour, not one item each. Zoomed out over very many
labels, :class:`LabelLayer` draws a texture of one pixel per patch instead (as the map
overlay does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from histoviewer.gui.overlay import to_qimage
from histoviewer.labels.store import Color, LabelSet

#: Above the map overlay (10), below the selected patch's outline (20).
LABEL_Z = 15
CELL_SELECTION_Z = 18
#: Width of a label's outline and of the dark line under it (screen px, any zoom).
LABEL_PEN = 3.0
HALO_PEN = 5.0
#: A patch smaller than this on screen (px) is filled instead of framed.
FILL_BELOW_PX = 10.0
#: Filled patches beyond this many in view are drawn from the texture.
TEXTURE_ABOVE = 2000
#: The largest texture built (pixels); labels of very unequal sizes need more, and are
#: then drawn one by one.
TEXTURE_MAX_PIXELS = 16_000_000
#: Colour of a label whose class has none recorded.
UNKNOWN_COLOR: Color = (128, 128, 128)
SELECTION_FILL = QColor(0, 120, 215, 55)
SELECTION_LINE = QColor(0, 120, 215)


class _BoxLayer(QGraphicsItem):
    """Boxes (level-0 x0, y0, x1, y1) with a palette index each; subclasses paint them."""

    def __init__(self) -> None:
        super().__init__()
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)  # clicks reach the view
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self._boxes = np.zeros((0, 4), dtype=np.float64)
        self._kinds = np.zeros(0, dtype=np.intp)
        self._palette: list[Color] = []
        self._rect = QRectF()
        self._texture: tuple[QImage, QRectF] | None = None  # built when first needed
        self._texture_built = False

    def _set_boxes(self, boxes: np.ndarray, kinds: np.ndarray) -> None:
        self.prepareGeometryChange()
        self._boxes = boxes.reshape(-1, 4).astype(np.float64)
        self._kinds = kinds.astype(np.intp)
        self._texture, self._texture_built = None, False
        if len(self._boxes):
            x0, y0 = self._boxes[:, 0].min(), self._boxes[:, 1].min()
            x1, y1 = self._boxes[:, 2].max(), self._boxes[:, 3].max()
            self._rect = QRectF(x0, y0, x1 - x0, y1 - y0)
        else:
            self._rect = QRectF()
        self.update()

    def boundingRect(self) -> QRectF:
        # Outlines are cosmetic (screen pixels): the caller's exposed rect is grown by
        # the view's update margin, so the level-0 box is enough here.
        return QRectF(self._rect)

    def _visible(self, exposed: QRectF) -> np.ndarray:
        """Indices of the boxes that meet ``exposed`` (level-0)."""
        b = self._boxes
        if not len(b):
            return np.zeros(0, dtype=np.intp)
        hit = (
            (b[:, 2] >= exposed.left())
            & (b[:, 0] <= exposed.right())
            & (b[:, 3] >= exposed.top())
            & (b[:, 1] <= exposed.bottom())
        )
        return np.flatnonzero(hit)

    def _draw_texture(self, painter: QPainter, shown: np.ndarray, zoom: float) -> bool:
        """Zoomed far out over many boxes: draw them all as one texture (built once per
        set of boxes); False when the boxes in view are few or large enough to draw one
        by one, or a texture cannot be built."""
        if len(shown) <= TEXTURE_ABOVE:
            return False
        boxes = self._boxes[shown]
        if np.median(boxes[:, 2] - boxes[:, 0]) * zoom >= FILL_BELOW_PX:
            return False
        if not self._texture_built:
            self._texture_built = True
            self._texture = _texture(self._boxes, self._kinds, self._palette)
        if self._texture is None:
            return False
        image, target = self._texture
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(target, image)
        return True

    @staticmethod
    def _rects(boxes: np.ndarray, inset: float = 0.0) -> list[QRectF]:
        return [
            QRectF(x0 + inset, y0 + inset, x1 - x0 - 2 * inset, y1 - y0 - 2 * inset)
            for x0, y0, x1, y1 in boxes.tolist()
        ]


class LabelLayer(_BoxLayer):
    """Every labelled patch framed in its class colour over a thin dark line, so that
    it shows on tissue, on glass and on the map overlay of the same colour alike.

    Zoomed out until a patch is a few screen pixels, patches are filled instead (a
    frame would hide the patch). :meth:`set_labels` replaces what is drawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(LABEL_Z)

    def set_labels(
        self, labels: LabelSet | None, colors: Mapping[str, Color] | None = None
    ) -> None:
        """Draw ``labels`` (None: none); a class's colour comes from ``colors``, else
        from the label set's own colours, else grey."""
        palette: dict[Color, int] = {}
        boxes, kinds = [], []
        own = labels.colors if labels is not None else {}
        for label in labels or ():
            color = (colors or {}).get(label.name) or own.get(label.name) or UNKNOWN_COLOR
            kind = palette.setdefault(tuple(color), len(palette))
            boxes.append((label.x, label.y, label.x + label.size, label.y + label.size))
            kinds.append(kind)
        self._palette = list(palette)
        self._set_boxes(np.asarray(boxes, dtype=np.float64), np.asarray(kinds, dtype=np.intp))

    def count(self) -> int:
        """How many labelled patches are drawn."""
        return len(self._boxes)

    def color_counts(self) -> dict[Color, int]:
        """Labelled patches per outline colour."""
        counts = np.bincount(self._kinds, minlength=len(self._palette))
        return {self._palette[i]: int(n) for i, n in enumerate(counts) if n}

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        exposed = option.exposedRect  # type: ignore[attr-defined]
        shown = self._visible(exposed)
        if not len(shown):
            return
        zoom = max(abs(painter.worldTransform().m11()), 1e-9)
        boxes, kinds = self._boxes[shown], self._kinds[shown]
        smallest = float(np.min(boxes[:, 2] - boxes[:, 0])) * zoom
        painter.save()
        if self._draw_texture(painter, shown, zoom):
            painter.restore()
            return
        if smallest < FILL_BELOW_PX:
            painter.setPen(Qt.PenStyle.NoPen)
            for kind in np.unique(kinds).tolist():
                painter.setBrush(QBrush(QColor(*self._palette[kind])))
                painter.drawRects(self._rects(boxes[kinds == kind]))
            painter.restore()
            return
        painter.setBrush(Qt.BrushStyle.NoBrush)
        # Inside the patch: neighbouring labels do not overdraw each other.
        inset = HALO_PEN / 2 / zoom
        halo = QPen(QColor(0, 0, 0, 170), HALO_PEN)
        halo.setCosmetic(True)
        halo.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        painter.setPen(halo)
        painter.drawRects(self._rects(boxes, inset))
        for kind in np.unique(kinds).tolist():
            pen = QPen(QColor(*self._palette[kind]), LABEL_PEN)
            pen.setCosmetic(True)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            painter.setPen(pen)
            painter.drawRects(self._rects(boxes[kinds == kind], inset))
        painter.restore()


def _texture(
    boxes: np.ndarray, kinds: np.ndarray, palette: list[Color]
) -> tuple[QImage, QRectF] | None:
    """An RGBA image of the boxes in their colours, one pixel per box of the usual size
    (a smaller box takes a whole pixel, a larger one several); None when too large."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    step = float(np.median(np.minimum(widths, heights)))
    if step <= 0:
        return None
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    width = int(np.ceil((boxes[:, 2].max() - x0) / step))
    height = int(np.ceil((boxes[:, 3].max() - y0) / step))
    spans_x = np.maximum(1, np.round(widths / step)).astype(np.intp)
    spans_y = np.maximum(1, np.round(heights / step)).astype(np.intp)
    if width * height > TEXTURE_MAX_PIXELS or max(spans_x.max(), spans_y.max()) > 16:
        return None
    colors = np.zeros((len(palette), 4), dtype=np.uint8)
    colors[:, :3] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    colors[:, 3] = 255
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    # A label off the grid of the smallest (the map's last, inward-shifted column)
    # lands on the nearest pixel: less than half a patch off, at a zoom where a patch
    # is a few screen pixels.
    cols = np.floor((boxes[:, 0] - x0) / step + 0.5).astype(np.intp)
    rows = np.floor((boxes[:, 1] - y0) / step + 0.5).astype(np.intp)
    for span_x, span_y in set(zip(spans_x.tolist(), spans_y.tolist(), strict=True)):
        sel = (spans_x == span_x) & (spans_y == span_y)
        for dy in range(span_y):
            for dx in range(span_x):
                r = np.clip(rows[sel] + dy, 0, height - 1)
                c = np.clip(cols[sel] + dx, 0, width - 1)
                rgba[r, c] = colors[kinds[sel]]
    return to_qimage(rgba), QRectF(x0, y0, width * step, height * step)


class CellSelectionLayer(_BoxLayer):
    """The patches selected together: a light tint and a thin blue frame each."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(CELL_SELECTION_Z)
        self._palette = [SELECTION_LINE.getRgb()[:3]]

    def set_boxes(self, boxes: Iterable[Sequence[float]]) -> None:
        """Highlight the level-0 areas (x0, y0, x1, y1); [] highlights nothing."""
        array = np.asarray(list(boxes), dtype=np.float64).reshape(-1, 4)
        self._set_boxes(array, np.zeros(len(array), dtype=np.intp))

    def count(self) -> int:
        return len(self._boxes)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        shown = self._visible(option.exposedRect)  # type: ignore[attr-defined]
        if not len(shown):
            return
        painter.save()
        opacity = painter.opacity()
        painter.setOpacity(opacity * SELECTION_FILL.alphaF())  # the texture is opaque
        zoom = max(abs(painter.worldTransform().m11()), 1e-9)
        if self._draw_texture(painter, shown, zoom):
            painter.restore()
            return
        painter.setOpacity(opacity)
        rects = self._rects(self._boxes[shown])
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(SELECTION_FILL))
        painter.drawRects(rects)
        pen = QPen(SELECTION_LINE, 1.5)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRects(rects)
        painter.restore()
