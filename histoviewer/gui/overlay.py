"""The tissue-map overlay: one texture of class colours laid over the slide.

The map is drawn as a single image with one pixel per patch, scaled by the
view to the patch grid's cells in level-0 slide pixels, so a 100 000-patch map
costs a few draw calls, not 100 000 items. Cell (row, col) is the part of the slide
its patch stands for (:mod:`histoviewer.mapping.grid`): the ``stride`` x ``stride``
square centred on it, the outer cells reaching the slide's edges, so cells tile the
slide without gaps and never overhang it.

Two transient views change what the texture shows (View menu, Map panel):

- *solo*: only one class is drawn, whatever the per-class checkboxes say (like a
  mixer's solo: leaving it draws what the boxes say again);
- *probability heatmap*: instead of the blocky class colours, one class's probability,
  smooth, in a perceptually uniform colormap (:func:`heatmap_codes`).
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget
from shiboken6 import isValid

from histoviewer.classes import class_label
from histoviewer.gui.legend import heatmap_lut
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

OVERLAY_Z = 10
SELECTION_Z = 20
# Fainter than this never: a very unsure patch still shows which class won.
MIN_SHADED_ALPHA = 0.15
#: Heatmap opacity (before the overlay's own) of a patch of probability 0; it rises
#: linearly to 1 at probability 1. Unlikely tissue shows the slide nearly untouched,
#: yet stays told apart from unmapped glass, which is not drawn at all.
HEATMAP_MIN_ALPHA = 0.1
#: Heatmap texture: at most this many pixels per grid stride, on its longest side, and
#: in all (8 Mpx: 32 MB; a 700 x 700 map gets 4 pixels per stride, 2800 x 2800, in
#: about 0.25 s). The view interpolates between its pixels again, smoothly, so a few
#: per stride draw the bilinear field faithfully at any zoom.
HEATMAP_MAX_PER_STRIDE = 16
HEATMAP_MAX_SIDE = 4096
HEATMAP_MAX_PIXELS = 8 * 1024 * 1024
#: While a mapping job fills the map in, the heatmap is redrawn at most this often.
HEATMAP_LIVE_INTERVAL_MS = 750
# Rows of texture computed at once (bounds the float temporaries to a few MB).
_HEATMAP_CHUNK_ROWS = 128


def colorize(
    tmap: TissueMap,
    visible: list[bool] | None = None,
    confidence_shading: bool = False,
    uncertain_from: float | None = None,
    solo: str | None = None,
) -> np.ndarray:
    """RGBA uint8 (rows, cols, 4): the predicted class's colour per patch.

    Unclassified patches (pending, background) and hidden classes are
    transparent. With ``confidence_shading`` alpha falls with the patch's
    uncertainty (:meth:`TissueMap.uncertainty`) from 255 (uncertainty 0) to
    ``MIN_SHADED_ALPHA`` (uncertainty 1: all classes equally likely). With
    ``uncertain_from`` only patches at least that uncertain are drawn. ``solo`` (a
    class name of the map) draws only that class, whatever ``visible`` says; a name
    the map lacks is ignored.
    """
    n = tmap.num_classes
    palette = np.zeros((n + 1, 4), dtype=np.uint8)  # last row: "no class", transparent
    palette[:n, :3] = np.asarray(tmap.class_colors, dtype=np.uint8).reshape(n, 3)
    palette[:n, 3] = 255
    if solo is not None and solo in tmap.class_names:
        palette[:n, 3] = 0
        palette[tmap.class_names.index(solo), 3] = 255
    elif visible is not None:
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


# --- probability heatmap ------------------------------------------------------------------
#
# The value at each cell's centre is that patch's probability of the class; between
# centres it is interpolated bilinearly (separably: along x, then along y). Patches not
# classified (background, pending) must not pull their neighbours towards 0, so the
# probability times a validity weight and the weight are interpolated apart and
# divided (normalised interpolation): next to a background patch the value is its
# classified neighbour's. Outside the classified cells the heatmap is transparent, so
# it covers exactly what the class map covers. Beyond the outer cells' centres (the
# first and last cells are narrower or wider than the stride) the value stays the
# outer cell's.


def _axis_weights(
    coords: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each coordinate the cell centres on either side (i0, i1) and how far from
    i0 to i1 it lies (float32, 0..1); clamped to the outer centres beyond them."""
    n = len(centres)
    if n < 2:
        zero = np.zeros(len(coords), dtype=np.intp)
        return zero, zero, np.zeros(len(coords), dtype=np.float32)
    where = np.interp(coords, centres, np.arange(n, dtype=np.float64))
    i0 = np.minimum(np.floor(where).astype(np.intp), n - 2)
    return i0, i0 + 1, (where - i0).astype(np.float32)


def heatmap_codes(tmap: TissueMap, index: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """uint16 (len(ys), len(xs)): class ``index``'s probability at the level-0 points
    (xs[j], ys[i]) as a colormap index 0..255 (round(255 p)), or 256 where the point
    lies outside the classified cells (transparent).

    See the comment above for how values between cell centres are interpolated.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    valid = tmap.state == CLASSIFIED
    prob = tmap.probs[..., index]
    valid &= np.isfinite(prob)
    stack = np.empty((2, *valid.shape), dtype=np.float32)  # p * w and w
    stack[0] = np.where(valid, prob, 0.0)
    stack[1] = valid
    cx, cy = tmap.cell_centres()
    x0, x1, tx = _axis_weights(xs, cx)
    y0, y1, ty = _axis_weights(ys, cy)
    # Along x once for every row of cells: (2, rows, len(xs)).
    along = stack[:, :, x0] * (1.0 - tx)
    along += stack[:, :, x1] * tx
    cols, rows = tmap.cells_at(xs, ys)
    valid_x = valid[:, np.maximum(cols, 0)] & (cols >= 0)  # (rows, len(xs))
    out = np.empty((len(ys), len(xs)), dtype=np.uint16)
    for start in range(0, len(ys), _HEATMAP_CHUNK_ROWS):
        part = slice(start, start + _HEATMAP_CHUNK_ROWS)
        a, b = y0[part], y1[part]
        t = ty[part, None]
        value = along[:, a]
        step = along[:, b]
        step -= value
        step *= t
        value += step
        num, den = value
        # p w <= w: where w is 0 so is p w, left as it is (and drawn transparent).
        np.divide(num, den, out=num, where=den > 1e-6)
        num *= 255.0
        np.rint(num, out=num)
        codes = num.astype(np.uint16)
        np.minimum(codes, 255, out=codes)  # rounding past 1.0
        inside = valid_x[np.maximum(rows[part], 0)] & (rows[part] >= 0)[:, None]
        codes[~inside] = 256
        out[part] = codes
    return out


@cache
def heatmap_palette() -> np.ndarray:
    """uint8 (257, 4) straight RGBA per :func:`heatmap_codes` code: the colormap
    (:func:`~histoviewer.gui.legend.heatmap_lut`) with alpha rising from
    ``HEATMAP_MIN_ALPHA`` at 0 to 255 at 1; code 256 transparent."""
    palette = np.zeros((257, 4), dtype=np.uint8)
    palette[:256, :3] = heatmap_lut()
    ramp = HEATMAP_MIN_ALPHA + (1.0 - HEATMAP_MIN_ALPHA) * np.arange(256) / 255.0
    palette[:256, 3] = np.rint(255.0 * ramp).astype(np.uint8)
    palette.setflags(write=False)
    return palette


@cache
def _premultiplied_palette() -> np.ndarray:
    """uint32 (257,): :func:`heatmap_palette` as premultiplied 0xAARRGGBB (what a
    QImage of Format_ARGB32_Premultiplied holds, drawn without conversion)."""
    rgba = heatmap_palette().astype(np.uint32)
    alpha = rgba[:, 3]
    r, g, b = ((rgba[:, i] * alpha + 127) // 255 for i in range(3))
    packed = (alpha << 24) | (r << 16) | (g << 8) | b
    packed.setflags(write=False)
    return packed


def heatmap_rgba(tmap: TissueMap, index: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """RGBA uint8 (len(ys), len(xs), 4), straight alpha: the heatmap of class
    ``index`` at the level-0 points (xs[j], ys[i]) (see :func:`heatmap_codes`)."""
    return heatmap_palette()[heatmap_codes(tmap, index, xs, ys)]


def heatmap_texture_size(tmap: TissueMap) -> tuple[int, int]:
    """(width, height) in pixels of the heatmap texture over the map's grid: as many
    pixels per stride as fit ``HEATMAP_MAX_PER_STRIDE``, ``HEATMAP_MAX_SIDE`` and
    ``HEATMAP_MAX_PIXELS`` (whole pixels per stride from 1 up; fewer than one only for
    a grid of more than ``HEATMAP_MAX_SIDE`` cells across)."""
    ex, ey = tmap.cell_edges()
    width, height = float(ex[-1] - ex[0]), float(ey[-1] - ey[0])
    if width <= 0 or height <= 0:
        return 1, 1
    stride = float(max(1, tmap.stride))
    per_stride = min(
        HEATMAP_MAX_PER_STRIDE,
        HEATMAP_MAX_SIDE * stride / max(width, height),
        math.sqrt(HEATMAP_MAX_PIXELS / (width * height)) * stride,
    )
    if per_stride >= 1:
        per_stride = math.floor(per_stride)
    scale = per_stride / stride
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def texel_centres(tmap: TissueMap, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 centres of the pixels of a ``width`` x ``height`` texture laid over the
    map's grid (its columns in x, its rows in y)."""
    ex, ey = tmap.cell_edges()
    xs = ex[0] + (np.arange(width) + 0.5) * ((ex[-1] - ex[0]) / width)
    ys = ey[0] + (np.arange(height) + 0.5) * ((ey[-1] - ey[0]) / height)
    return xs, ys


def heatmap_image(tmap: TissueMap, index: int) -> QImage:
    """The heatmap texture of class ``index`` over the whole grid (premultiplied ARGB32,
    :func:`heatmap_texture_size`); draw it over the grid's rectangle, smoothly."""
    width, height = heatmap_texture_size(tmap)
    xs, ys = texel_centres(tmap, width, height)
    pixels = np.ascontiguousarray(_premultiplied_palette()[heatmap_codes(tmap, index, xs, ys)])
    image = QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_ARGB32_Premultiplied)
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
        self._solo: str | None = None
        self._heat_class: str | None = None
        self._heat_image = QImage()
        # Live maps: the heatmap is redrawn at most every HEATMAP_LIVE_INTERVAL_MS.
        self._heat_timer = QTimer()
        self._heat_timer.setSingleShot(True)
        self._heat_timer.setInterval(HEATMAP_LIVE_INTERVAL_MS)
        self._heat_timer.timeout.connect(self._render_heatmap)

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
            self._recolour()

    def class_visibility(self) -> list[bool]:
        return list(self._visible)

    def set_confidence_shading(self, on: bool) -> None:
        if on != self._shading:
            self._shading = on
            self._recolour()

    def confidence_shading(self) -> bool:
        return self._shading

    def set_uncertain_only(self, threshold: float | None) -> None:
        """Draw only the patches whose uncertainty is at least ``threshold`` (None:
        every patch)."""
        threshold = None if threshold is None else float(threshold)
        if threshold != self._uncertain_from:
            self._uncertain_from = threshold
            self._recolour()

    def uncertain_only(self) -> float | None:
        """The uncertainty from which patches are drawn (None: all are)."""
        return self._uncertain_from

    def set_solo_class(self, name: str | None) -> None:
        """Draw only class ``name`` (None: every class the visibility ticks show). The
        ticks are kept: leaving solo draws what they say again."""
        if name != self._solo:
            self._solo = name
            self._recolour()

    def solo_class(self) -> str | None:
        """The class drawn alone (None: none is; a name the map lacks draws all)."""
        return self._solo

    def set_heatmap_class(self, name: str | None) -> None:
        """Draw the probability of class ``name`` as a smooth heatmap instead of the
        class colours (None: the class colours)."""
        if name != self._heat_class:
            self._heat_class = name
            self._render_heatmap()

    def heatmap_class(self) -> str | None:
        return self._heat_class

    def heatmap_index(self) -> int | None:
        """The index of the heatmap's class in the map shown (None: no heatmap drawn)."""
        tmap, name = self._map, self._heat_class
        if tmap is None or name is None or name not in tmap.class_names:
            return None
        return tmap.class_names.index(name)

    def refresh(self, *, live: bool = False) -> None:
        """Recolour the texture from the map's current arrays.

        ``live``: the map shown was filled in further by a mapping job; the class
        texture follows at once, a heatmap at most every ``HEATMAP_LIVE_INTERVAL_MS``
        (its last state always drawn)."""
        self._recolour()
        if not live or self.heatmap_index() is None:
            self._render_heatmap()
        elif not self._heat_timer.isActive():
            self._heat_timer.start()

    def _recolour(self) -> None:
        """Redraw the class texture (the heatmap does not depend on what changed)."""
        if self._map is None:
            self._rgba = np.zeros((0, 0, 4), dtype=np.uint8)
            self._image = QImage()
        else:
            self._rgba = colorize(
                self._map, self._visible, self._shading, self._uncertain_from, self._solo
            )
            self._image = to_qimage(self._rgba)
        self.update()

    def _render_heatmap(self) -> None:
        if not isValid(self):  # the scene went with its window before the timer fired
            return
        self._heat_timer.stop()
        index = self.heatmap_index()
        self._heat_image = QImage() if index is None else heatmap_image(self._map, index)
        self.update()

    def rgba(self) -> np.ndarray:
        """The class texture: RGBA uint8 (rows, cols, 4) before item opacity (what is
        drawn unless a heatmap is)."""
        return self._rgba.copy()

    def image(self) -> QImage:
        return QImage(self._image)

    def heatmap(self) -> QImage:
        """The heatmap texture drawn over the grid (null: no heatmap drawn)."""
        return QImage(self._heat_image)

    def describe_at(self, x: float, y: float) -> str | None:
        """What the map says at level-0 point (x, y), for a tooltip: the class and
        probability of the patch there ("Tumour epithelium 93 %"), "Background" for a
        background patch; None without a map, outside it, or for a patch not
        classified yet. Hidden classes are described too (the tooltip tells what is
        under the mouse, not what is drawn); with a heatmap its class's probability
        comes first."""
        return describe_patch(self._map, x, y, self._heat_class)

    # --- QGraphicsItem ------------------------------------------------------------------

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        if not self._heat_image.isNull():
            # Smooth: the texture's pixels are samples of a continuous field.
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(self._rect, self._heat_image)
            return
        if self._image.isNull():
            return
        # Crisp cells: each patch is one flat colour, smoothing would blur class borders.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for target, source in self._pieces:
            painter.drawImage(target, self._image, source)


def describe_patch(
    tmap: TissueMap | None, x: float, y: float, heat_class: str | None = None
) -> str | None:
    """:meth:`MapOverlay.describe_at` for any map (None: no map). With ``heat_class``
    (a class of the map other than the patch's) its probability comes first:
    "Tumour epithelium 12 % · top: Simple stroma 80 %"."""
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
    top = f"{class_label(tmap.class_names[best])} {probs[best] * 100:.0f} %"
    if heat_class is None or heat_class not in tmap.class_names:
        return top
    heat = tmap.class_names.index(heat_class)
    if heat == best:
        return top
    return f"{class_label(heat_class)} {probs[heat] * 100:.0f} % · top: {top}"


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
