"""The tissue-map overlay: one texture of class colours laid over the slide.

The map is drawn as a single image with one pixel per patch, scaled by the
view to the patch grid's cells in level-0 slide pixels, so a 100 000-patch map
costs a few draw calls, not 100 000 items. Cell (row, col) is the part of the slide
its patch stands for (:mod:`histoviewer.mapping.grid`): the ``stride`` x ``stride``
square centred on it, the outer cells reaching the slide's edges, so cells tile the
slide without gaps and never overhang it.
"""

from __future__ import annotations

import itertools

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from histoviewer.gui.legend import class_label
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

OVERLAY_Z = 10
SELECTION_Z = 20
# Fainter than this never: a very unsure patch still shows which class won.
MIN_SHADED_ALPHA = 0.15


def colorize(
    tmap: TissueMap,
    visible: list[bool] | None = None,
    confidence_shading: bool = False,
    uncertain_from: float | None = None,
) -> np.ndarray:
    """RGBA uint8 (rows, cols, 4): the predicted class's colour per patch.

    Unclassified patches (pending, background) and hidden classes are
    transparent. With ``confidence_shading`` alpha falls with the patch's
    uncertainty (:meth:`TissueMap.uncertainty`) from 255 (uncertainty 0) to
    ``MIN_SHADED_ALPHA`` (uncertainty 1: all classes equally likely). With
    ``uncertain_from`` only patches at least that uncertain are drawn.
    """
    n = tmap.num_classes
    palette = np.zeros((n + 1, 4), dtype=np.uint8)  # last row: "no class", transparent
    palette[:n, :3] = np.asarray(tmap.class_colors, dtype=np.uint8).reshape(n, 3)
    palette[:n, 3] = 255
    if visible is not None:
        palette[:n, 3] = np.where(np.asarray(visible[:n], dtype=bool), 255, 0)
    labels = tmap.labels.astype(np.intp)
    labels[labels < 0] = n
    rgba = palette[labels]
    if confidence_shading or uncertain_from is not None:
        unsure = np.nan_to_num(tmap.uncertainty(), nan=1.0)  # NaN: transparent already
        if confidence_shading:
            strength = MIN_SHADED_ALPHA + (1.0 - MIN_SHADED_ALPHA) * (1.0 - unsure)
            rgba[..., 3] = np.round(rgba[..., 3] * strength).astype(np.uint8)
        if uncertain_from is not None:
            rgba[unsure < uncertain_from, 3] = 0
    return np.ascontiguousarray(rgba)


def to_qimage(rgba: np.ndarray) -> QImage:
    """A QImage that owns a copy of an RGBA uint8 (h, w, 4) array."""
    h, w, _ = rgba.shape
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return image.copy()  # detach from the numpy buffer


class MapOverlay(QGraphicsItem):
    """Scene item showing a :class:`TissueMap` in slide coordinates (level-0 pixels).

    Call :meth:`set_map` for a new map and :meth:`refresh` after the shown map's
    arrays changed (a mapping batch arrived). Opacity and visibility are the
    item's own (``setOpacity``, ``setVisible``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(OVERLAY_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)  # clicks reach the view
        self._map: TissueMap | None = None
        self._visible: list[bool] = []
        self._shading = False
        self._uncertain_from: float | None = None
        self._rect = QRectF()
        self._pieces: list[tuple[QRectF, QRectF]] = []
        self._image = QImage()
        self._rgba = np.zeros((0, 0, 4), dtype=np.uint8)

    # --- state --------------------------------------------------------------------------

    def tissue_map(self) -> TissueMap | None:
        return self._map

    def set_map(self, tmap: TissueMap | None) -> None:
        self.prepareGeometryChange()
        self._map = tmap
        if tmap is None:
            self._rect = QRectF()
        else:
            if len(self._visible) != tmap.num_classes:
                self._visible = [True] * tmap.num_classes
            ex, ey = tmap.cell_edges()
            self._rect = QRectF(ex[0], ey[0], ex[-1] - ex[0], ey[-1] - ey[0])
            self._pieces = _pieces(ex, ey)
        self.refresh()

    def set_class_visible(self, index: int, visible: bool) -> None:
        if 0 <= index < len(self._visible) and self._visible[index] != visible:
            self._visible[index] = visible
            self.refresh()

    def class_visibility(self) -> list[bool]:
        return list(self._visible)

    def set_confidence_shading(self, on: bool) -> None:
        if on != self._shading:
            self._shading = on
            self.refresh()

    def confidence_shading(self) -> bool:
        return self._shading

    def set_uncertain_only(self, threshold: float | None) -> None:
        """Draw only the patches whose uncertainty is at least ``threshold`` (None:
        every patch)."""
        threshold = None if threshold is None else float(threshold)
        if threshold != self._uncertain_from:
            self._uncertain_from = threshold
            self.refresh()

    def uncertain_only(self) -> float | None:
        """The uncertainty from which patches are drawn (None: all are)."""
        return self._uncertain_from

    def refresh(self) -> None:
        """Recolour the texture from the map's current arrays."""
        if self._map is None:
            self._rgba = np.zeros((0, 0, 4), dtype=np.uint8)
            self._image = QImage()
        else:
            self._rgba = colorize(self._map, self._visible, self._shading, self._uncertain_from)
            self._image = to_qimage(self._rgba)
        self.update()

    def rgba(self) -> np.ndarray:
        """The texture as drawn: RGBA uint8 (rows, cols, 4) before item opacity."""
        return self._rgba.copy()

    def image(self) -> QImage:
        return QImage(self._image)

    def describe_at(self, x: float, y: float) -> str | None:
        """What the map says at level-0 point (x, y), for a tooltip: the class and
        probability of the patch there ("Tumour epithelium 93 %"), "Background" for a
        background patch; None without a map, outside it, or for a patch not
        classified yet. Hidden classes are described too (the tooltip tells what is
        under the mouse, not what is drawn)."""
        return describe_patch(self._map, x, y)

    # --- QGraphicsItem ------------------------------------------------------------------

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        if self._image.isNull():
            return
        # Crisp cells: each patch is one flat colour, smoothing would blur class borders.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for target, source in self._pieces:
            painter.drawImage(target, self._image, source)


def describe_patch(tmap: TissueMap | None, x: float, y: float) -> str | None:
    """:meth:`MapOverlay.describe_at` for any map (None: no map)."""
    if tmap is None:
        return None
    rc = tmap.patch_at(x, y)
    if rc is None:
        return None
    state = int(tmap.state[rc])
    if state == BACKGROUND:
        return "Background"
    if state != CLASSIFIED:
        return None
    probs = tmap.probs[rc]
    if not np.isfinite(probs).any():
        return None
    best = int(np.nanargmax(probs))
    return f"{class_label(tmap.class_names[best])} {probs[best] * 100:.0f} %"


def _pieces(ex: np.ndarray, ey: np.ndarray) -> list[tuple[QRectF, QRectF]]:
    """(slide rectangle, texture rectangle) pairs that paint every cell where it lies.

    Inner cells are all stride x stride, so one stretched piece draws them; the first
    and last column and row are narrower or wider (they reach the slide's edges) and
    get pieces of their own: at most 3 x 3 pieces.
    """

    def spans(edges: np.ndarray) -> list[tuple[int, int]]:
        n = len(edges) - 1
        cuts = sorted({0, min(1, n), max(n - 1, 0), n})
        return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]

    pieces = []
    for r0, r1 in spans(ey):
        for c0, c1 in spans(ex):
            target = QRectF(ex[c0], ey[r0], ex[c1] - ex[c0], ey[r1] - ey[r0])
            pieces.append((target, QRectF(c0, r0, c1 - c0, r1 - r0)))
    return pieces
