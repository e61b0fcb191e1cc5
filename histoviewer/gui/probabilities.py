"""The Patch panel: what the model said about the patch the user clicked.

Shows the patch image, the predicted class, the pathologist's label of the
selected patch(es) with a "Label as" choice, its grid position and slide
coordinates, and the eight class probabilities as a sorted bar chart.

The panel asks for little height: given less room than it would like, the image
shrinks (down to :data:`IMAGE_MIN_SIZE`); the chart keeps all eight classes (a
pathologist reads the runner-up as much as the winner), and a shorter dock (wrapped
in a scroll area) scrolls. A model with more classes than :data:`CHART_MIN_ROWS` shows
its most probable ones and sums up the rest.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PySide6.QtCore import QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPaintEvent, QPalette, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

#: Edge of the patch image when there is room (px).
IMAGE_SIZE = 150
#: Smallest the patch image shrinks to in a short panel (px).
IMAGE_MIN_SIZE = 40
#: Chart rows shown however short the panel (the most probable classes): all eight
#: of the Kather classes.
CHART_MIN_ROWS = 8


class ProbabilityChart(QWidget):
    """Horizontal bars, most probable class first: colour, name, bar, percentage.

    Its preferred height shows every class; given less (down to
    :data:`CHART_MIN_ROWS` rows) it shows the most probable ones and, in the last
    row, how many more there are.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[tuple[str, tuple[int, int, int], float]] = []
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def set_entries(self, entries: list[tuple[str, tuple[int, int, int], float]]) -> None:
        """(label, colour, probability) per class, in any order; shown sorted."""
        self._entries = sorted(entries, key=lambda e: -e[2])
        self.updateGeometry()
        self.update()

    def entries(self) -> list[tuple[str, float]]:
        """(label, probability) as drawn, top to bottom."""
        return [(label, p) for label, _, p in self._entries]

    def _row_height(self) -> int:
        return self.fontMetrics().height() + 6

    def sizeHint(self) -> QSize:
        return QSize(240, self._height_for(len(self._entries)))

    def minimumSizeHint(self) -> QSize:
        return QSize(180, self._height_for(min(len(self._entries), CHART_MIN_ROWS)))

    def _height_for(self, rows: int) -> int:
        return max(1, rows) * self._row_height() + 4

    def shown_rows(self) -> int:
        """How many class rows fit the chart's height now (the rest are summed up)."""
        fit = max(1, (self.height() - 4) // self._row_height())
        return min(len(self._entries), fit)

    def paintEvent(self, event: object) -> None:
        if not self._entries:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = self.fontMetrics()
        rh = self._row_height()
        name_w = max(fm.horizontalAdvance(label) for label, _, _ in self._entries) + 8
        value_w = fm.horizontalAdvance("100.0 %") + 6
        bar_x = name_w
        bar_w = max(10, self.width() - name_w - value_w - 2)
        text = self.palette().color(self.foregroundRole())
        track = QColor(text)
        track.setAlpha(28)
        entries = self._entries
        shown = self.shown_rows()
        if shown < len(entries):  # the last row that fits says what does not
            entries = entries[: shown - 1]
            rest = self._entries[shown - 1 :]
            more = f"+ {len(rest)} more ({sum(p for *_, p in rest) * 100:.1f} %)"
            p.setPen(text)
            p.drawText(
                QRectF(0, 2 + (shown - 1) * rh, self.width(), rh),
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                more,
            )
        for i, (label, color, prob) in enumerate(entries):
            top = 2 + i * rh
            p.setPen(text)
            p.drawText(
                QRectF(0, top, name_w, rh),
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                label,
            )
            bar = QRectF(bar_x, top + 3, bar_w, rh - 6)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(track)
            p.drawRoundedRect(bar, 2, 2)
            p.setBrush(QColor(*color))
            p.drawRoundedRect(QRectF(bar.x(), bar.y(), bar_w * prob, bar.height()), 2, 2)
            p.setPen(text)
            p.drawText(
                QRectF(bar_x + bar_w, top, value_w, rh),
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                f"{prob * 100:.1f} %",
            )
        p.end()


class PatchImage(QWidget):
    """The patch's pixels, drawn as large as fits (aspect kept, at most
    :data:`IMAGE_SIZE`, shrinking to :data:`IMAGE_MIN_SIZE`), with a thin frame."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap = QPixmap()
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setMaximumHeight(IMAGE_SIZE + 2)

    def pixmap(self) -> QPixmap:
        """The image shown (null when none)."""
        return QPixmap(self._pixmap)

    def setPixmap(self, pixmap: QPixmap) -> None:
        self._pixmap = QPixmap(pixmap)
        self.update()

    def clear(self) -> None:
        self._pixmap = QPixmap()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(IMAGE_SIZE + 2, IMAGE_SIZE + 2)

    def minimumSizeHint(self) -> QSize:
        return QSize(IMAGE_MIN_SIZE + 2, IMAGE_MIN_SIZE + 2)

    def image_rect(self) -> QRect:
        """Where the image is drawn: centred, square, as big as fits (inside the frame)."""
        side = max(0, min(self.width(), self.height(), IMAGE_SIZE + 2) - 2)
        return QRect((self.width() - side) // 2, (self.height() - side) // 2, side, side)

    def paintEvent(self, event: QPaintEvent) -> None:
        if self._pixmap.isNull():
            return
        target = self.image_rect()
        if target.isEmpty():
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        scaled = self._pixmap.size().scaled(target.size(), Qt.AspectRatioMode.KeepAspectRatio)
        inner = QRect(0, 0, scaled.width(), scaled.height())
        inner.moveCenter(target.center())
        painter.drawPixmap(inner, self._pixmap)
        painter.setPen(self.palette().color(QPalette.ColorRole.Mid))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(inner.adjusted(-1, -1, 0, 0))
        painter.end()


def color_icon(color: tuple[int, int, int], size: int = 12) -> QIcon:
    """A square of ``color`` with a thin dark edge, for menus and lists of classes."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*color))
    painter = QPainter(pixmap)
    painter.setPen(QColor(0, 0, 0, 140))
    painter.drawRect(0, 0, size - 1, size - 1)
    painter.end()
    return QIcon(pixmap)


def _plain(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("■ ", "").strip()


def _swatch(color: tuple[int, int, int] | None) -> str:
    if color is None:
        return ""
    r, g, b = color
    return f"<span style='color: rgb({r},{g},{b});'>■</span> "


class PatchPanel(QWidget):
    """Details of one patch of a :class:`TissueMap`; :meth:`show_patch` fills it.

    Its label row (:meth:`show_label`, hidden by :meth:`clear`) gives the label of the
    selected patches and a "Label as" choice of the classes set with
    :meth:`set_label_classes`; choosing emits ``labelChosen`` with the class index, or
    None for "Remove label".
    """

    labelChosen = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.label_text = QLabel()
        self.label_text.setTextFormat(Qt.TextFormat.RichText)
        self.label_text.setWordWrap(True)
        self.label_combo = QComboBox()
        self.label_combo.setToolTip(
            "Label the selected patches as a class (keys 1-8 on the slide; 0 or Delete "
            "removes the label)"
        )
        self.label_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.label_combo.activated.connect(self._on_label_activated)
        self.label_row = QWidget()
        row = QHBoxLayout(self.label_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label_text, 1)
        row.addWidget(self.label_combo)
        self._label_choices = 0
        self.set_label_classes([])
        self.position = QLabel()
        self.position.setWordWrap(True)
        self.position.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.image = PatchImage()
        self.chart = ProbabilityChart()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(self.title)
        layout.addWidget(self.label_row)
        layout.addWidget(self.image)
        layout.addWidget(self.position)
        layout.addWidget(self.chart)
        layout.addStretch(1)
        self.row_col: tuple[int, int] | None = None
        self.clear()

    def heightForWidth(self, width: int) -> int:
        """The least height the panel works in at ``width`` (its word-wrapped text
        whole, the image and chart at their smallest).

        A scroll area that resizes its widget gives it at least this, so in a short
        dock the image shrinks and the chart keeps its most probable classes before
        the panel scrolls; with room, both grow back to their preferred sizes.
        """
        height = super().heightForWidth(width)
        if height < 0:
            return height
        for part in (self.image, self.chart):
            if not part.isHidden():
                height -= max(0, part.sizeHint().height() - part.minimumSizeHint().height())
        return max(height, self.minimumSizeHint().height())

    def clear(self) -> None:
        self.row_col = None
        self.title.setText("<i>Click a patch on the map to inspect it.</i>")
        self.position.clear()
        self.image.clear()
        self.image.setVisible(False)
        self.chart.set_entries([])
        self.chart.setVisible(False)
        self.label_row.setVisible(False)

    # --- labels -------------------------------------------------------------------------

    def set_label_classes(self, classes: list[tuple[str, tuple[int, int, int]]]) -> None:
        """The classes "Label as" offers: (label, colour) each, in the model's order."""
        combo = self.label_combo
        combo.clear()
        combo.addItem("Label as...")
        for i, (label, color) in enumerate(classes):
            key = f"{i + 1}  " if i < 9 else ""
            combo.addItem(color_icon(color), f"{key}{label}", i)
        combo.addItem("Remove label", None)
        self._label_choices = len(classes)
        combo.setEnabled(bool(classes))

    def label_choices(self) -> list[str]:
        """The texts of the "Label as" choices (classes, then Remove label)."""
        return [self.label_combo.itemText(i) for i in range(1, self.label_combo.count())]

    def choose_label(self, index: int | None) -> None:
        """Act as if the user chose class ``index`` (None: Remove label) in the row."""
        self.labelChosen.emit(index)

    def show_label(
        self, groups: list[tuple[str, tuple[int, int, int] | None, int]], selected: int
    ) -> None:
        """Show the labels of the ``selected`` patches: ``groups`` gives (label or
        "none", its colour or None, how many) for each label among them."""
        if selected <= 1:
            name, color, _ = groups[0] if groups else ("none", None, 1)
            text = f"Label: {_swatch(color)}<b>{name}</b>" if color else "Label: none"
        elif all(c is None for _, c, _ in groups):
            text = f"<b>{selected} patches selected</b>, none labelled"
        else:
            parts = ", ".join(
                f"{_swatch(c)}{n} {count}" if c is not None else f"{count} unlabelled"
                for n, c, count in groups
            )
            text = f"<b>{selected} patches selected</b>: {parts}"
        self.label_text.setText(text)
        self.label_row.setVisible(True)

    def label_shown(self) -> str:
        """The label row's text without markup ("" while it is hidden)."""
        if self.label_row.isHidden():
            return ""
        return _plain(self.label_text.text())

    def _on_label_activated(self, row: int) -> None:
        self.label_combo.setCurrentIndex(0)
        if row <= 0:
            return
        self.labelChosen.emit(row - 1 if row <= self._label_choices else None)

    def show_patch(
        self, tmap: TissueMap, row: int, col: int, pixels: np.ndarray | None = None
    ) -> None:
        """Describe patch (row, col); ``pixels`` is its RGB image (h, w, 3) uint8."""
        self.row_col = (row, col)
        x, y, w, h = tmap.patch_box(row, col)
        mpp = tmap.mpp
        self.position.setText(
            f"Row {row + 1} of {tmap.rows}, column {col + 1} of {tmap.cols}\n"
            f"x {x:,}–{x + w:,} px, y {y:,}–{y + h:,} px\n"
            f"x {x * mpp:,.0f} µm, y {y * mpp:,.0f} µm ({w * mpp:.0f} µm wide)"
        )
        state = int(tmap.state[row, col])
        if state == CLASSIFIED:
            probs = tmap.probs[row, col]
            best = int(np.nanargmax(probs))
            r, g, b = tmap.class_colors[best]
            self.title.setText(
                f"<span style='color: rgb({r},{g},{b}); font-size: 16pt;'>■</span> "
                f"<b>{class_label(tmap.class_names[best])}</b> "
                f"({probs[best] * 100:.1f} %)"
            )
            self.chart.set_entries(
                [
                    (class_label(n), c, float(p) if math.isfinite(p) else 0.0)
                    for n, c, p in zip(tmap.class_names, tmap.class_colors, probs, strict=True)
                ]
            )
            self.chart.setVisible(True)
        else:
            why = "background, skipped" if state == BACKGROUND else "not classified yet"
            self.title.setText(f"<b>No prediction</b> ({why})")
            self.chart.set_entries([])
            self.chart.setVisible(False)
        self._set_image(pixels)

    def predicted(self) -> str | None:
        """The predicted class's label, None without a prediction."""
        entries = self.chart.entries()
        return entries[0][0] if entries else None

    def _set_image(self, pixels: np.ndarray | None) -> None:
        if pixels is None:
            self.image.clear()
            self.image.setVisible(False)
            return
        pixels = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
        h, w, _ = pixels.shape
        qimage = QImage(pixels.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.image.setPixmap(QPixmap.fromImage(qimage))  # scaled as drawn
        self.image.setVisible(True)
