"""The Patch panel: what the model said about the patch the user clicked.

Shows the patch image, the predicted class, its grid position and slide
coordinates, and the eight class probabilities as a sorted bar chart.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from histoviewer.gui.legend import class_label
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

IMAGE_SIZE = 150


class ProbabilityChart(QWidget):
    """Horizontal bars, most probable class first: colour, name, bar, percentage."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[tuple[str, tuple[int, int, int], float]] = []
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

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
        return QSize(240, max(1, len(self._entries)) * self._row_height() + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(180, self.sizeHint().height())

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
        for i, (label, color, prob) in enumerate(self._entries):
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


class PatchPanel(QWidget):
    """Details of one patch of a :class:`TissueMap`; :meth:`show_patch` fills it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.position = QLabel()
        self.position.setWordWrap(True)
        self.position.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.image = QLabel()
        self.image.setFixedSize(IMAGE_SIZE, IMAGE_SIZE)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setStyleSheet("border: 1px solid palette(mid);")
        self.chart = ProbabilityChart()
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.image, alignment=Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.position)
        layout.addWidget(self.chart)
        layout.addStretch(1)
        self.row_col: tuple[int, int] | None = None
        self.clear()

    def clear(self) -> None:
        self.row_col = None
        self.title.setText("<i>Click a patch on the map to inspect it.</i>")
        self.position.clear()
        self.image.clear()
        self.image.setVisible(False)
        self.chart.set_entries([])
        self.chart.setVisible(False)

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
        pixmap = QPixmap.fromImage(qimage).scaled(
            IMAGE_SIZE,
            IMAGE_SIZE,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self.image.setPixmap(pixmap)
        self.image.setVisible(True)
