"""The Map panel: overlay controls and the legend of the eight classes.

Each class row has a visibility checkbox, its colour, its name, its patch count
and its share of the mapped tissue (% and mm2). The same entries draw the
legend burnt into exported view images (:func:`draw_legend`).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import default_classes
from histoviewer.mapping.summary_text import ProgressCounts, format_area, map_totals_text
from histoviewer.mapping.tissue_map import TissueMap


def class_label(name: str) -> str:
    """What the user reads for a class id: 'tumor' -> 'Tumour epithelium'."""
    for c in default_classes():
        if c.name == name:
            return c.label
    return name.capitalize()


@dataclass(frozen=True)
class LegendEntry:
    name: str
    label: str
    color: tuple[int, int, int]
    count: int
    share: float  # of classified patches, 0..1
    area_mm2: float


def legend_entries(tmap: TissueMap) -> list[LegendEntry]:
    counts, shares, areas = tmap.counts(), tmap.fractions(), tmap.areas_mm2()
    return [
        LegendEntry(n, class_label(n), c, counts[n], shares[n], areas[n])
        for n, c in zip(tmap.class_names, tmap.class_colors, strict=True)
    ]


class ColorSwatch(QFrame):
    """A small filled square in a class colour."""

    def __init__(self, color: tuple[int, int, int], size: int = 14) -> None:
        super().__init__()
        self.setFixedSize(size, size)
        self.set_color(color)

    def set_color(self, color: tuple[int, int, int]) -> None:
        self.color = tuple(color)
        r, g, b = self.color
        self.setStyleSheet(
            f"background-color: rgb({r},{g},{b}); border: 1px solid rgba(0,0,0,90);"
            "border-radius: 2px;"
        )


class LegendPanel(QWidget):
    """Overlay controls plus one row per class.

    Signals: ``overlayToggled(bool)``, ``opacityChanged(float)`` (0..1),
    ``shadingToggled(bool)`` and ``classVisibilityChanged(int, bool)``.
    """

    overlayToggled = Signal(bool)
    opacityChanged = Signal(float)
    shadingToggled = Signal(bool)
    classVisibilityChanged = Signal(int, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.show_overlay = QCheckBox("Show overlay")
        self.show_overlay.setChecked(True)
        self.show_overlay.toggled.connect(self.overlayToggled)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity_label = QLabel("45 %")
        self.opacity_label.setMinimumWidth(self.fontMetrics().horizontalAdvance("100 %"))
        self.opacity.valueChanged.connect(self._opacity_moved)
        self.shading = QCheckBox("Confidence shading")
        self.shading.setToolTip("Draw patches fainter where the model is unsure")
        self.shading.toggled.connect(self.shadingToggled)

        toggles_row = QHBoxLayout()
        toggles_row.addWidget(self.show_overlay)
        toggles_row.addWidget(self.shading)
        toggles_row.addStretch(1)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity, 1)
        opacity_row.addWidget(self.opacity_label)

        self._grid = QGridLayout()
        self._grid.setHorizontalSpacing(8)
        self._grid.setVerticalSpacing(1)
        self._grid.setColumnStretch(2, 1)
        for col, text in ((2, "Class"), (3, "Patches"), (4, "Share"), (5, "Area")):
            head = QLabel(f"<b>{text}</b>")
            align = Qt.AlignmentFlag.AlignLeft if col == 2 else Qt.AlignmentFlag.AlignRight
            self._grid.addWidget(head, 0, col, alignment=align)
        self._rows: list[tuple[QCheckBox, ColorSwatch, QLabel, QLabel, QLabel, QLabel]] = []
        self.summary = QLabel("No map yet. Analysis > Map Tissue makes one.")
        self.summary.setWordWrap(True)
        # What kind of map this is when it is not simply finished ("Partial map: ...").
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet(
            "QLabel { background: #fff4d6; color: #5a4300; border: 1px solid #e0c36a;"
            " border-radius: 3px; padding: 4px; }"
        )
        self.status.setVisible(False)

        # Compact: in a short dock (a scroll area) the panel scrolls only below this.
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(toggles_row)
        layout.addLayout(opacity_row)
        layout.addSpacing(2)
        layout.addLayout(self._grid)
        layout.addWidget(self.summary)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._map: TissueMap | None = None
        self._live = False
        self._progress: ProgressCounts | None = None
        self.set_classes([c.name for c in default_classes()], [c.color for c in default_classes()])

    # --- overlay controls ---------------------------------------------------------------

    def set_opacity(self, value: float) -> None:
        self.opacity.setValue(round(value * 100))

    def _opacity_moved(self, value: int) -> None:
        self.opacity_label.setText(f"{value} %")
        self.opacityChanged.emit(value / 100)

    # --- classes ------------------------------------------------------------------------

    def set_classes(self, names: list[str], colors: list[tuple[int, int, int]]) -> None:
        """One row per class (keeps the visibility ticks of rows that stay)."""
        old = [box.isChecked() for box, *_ in self._rows]
        for widgets in self._rows:
            for w in widgets:
                self._grid.removeWidget(w)
                # Hidden now: deleteLater waits for the event loop, and until then the
                # old rows would be drawn over the new ones (a model with fewer classes).
                w.hide()
                w.deleteLater()
        self._rows = []
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for i, (name, color) in enumerate(zip(names, colors, strict=True)):
            box = QCheckBox()
            box.setChecked(old[i] if i < len(old) else True)
            box.setToolTip(f"Show {class_label(name)} in the overlay")
            box.toggled.connect(lambda on, i=i: self.classVisibilityChanged.emit(i, on))
            swatch = ColorSwatch(color)
            label = QLabel(class_label(name))
            label.setToolTip(name)
            count, share, area = QLabel("–"), QLabel("–"), QLabel("–")
            for w in (count, share, area):
                w.setAlignment(right)
            row = i + 1
            self._grid.addWidget(box, row, 0)
            self._grid.addWidget(swatch, row, 1)
            self._grid.addWidget(label, row, 2)
            self._grid.addWidget(count, row, 3)
            self._grid.addWidget(share, row, 4)
            self._grid.addWidget(area, row, 5)
            self._rows.append((box, swatch, label, count, share, area))
        self._names = list(names)

    def class_visibility(self) -> list[bool]:
        return [box.isChecked() for box, *_ in self._rows]

    def set_map(
        self,
        tmap: TissueMap | None,
        *,
        live: bool = False,
        progress: ProgressCounts | None = None,
    ) -> None:
        """Show counts and shares of ``tmap`` (None clears them).

        ``live``: a map a running job fills in. Its background is known only from
        the job's progress reports (``progress``, or the last one given to
        :meth:`set_progress` for this map): with one the summary reads "412 of 981
        tissue patches classified · 108 background patches skipped", the totals the
        progress bar counts; before the first, "412 patches classified so far".
        A map that is not live is summed up from its own patch states
        (:func:`~histoviewer.mapping.summary_text.map_totals_text`).
        """
        if tmap is not self._map or not live:
            self._progress = None  # a report belongs to one live map
        if progress is not None:
            self._progress = progress
        self._map = tmap
        self._live = live and tmap is not None
        if tmap is None:
            for _, _, _, count, share, area in self._rows:
                for w in (count, share, area):
                    w.setText("–")
            self.summary.setText("No map yet. Analysis > Map Tissue makes one.")
            self.set_status("")
            return
        if tmap.class_names != self._names:
            self.set_classes(tmap.class_names, tmap.class_colors)
        else:
            for (_, swatch, *_), color in zip(self._rows, tmap.class_colors, strict=True):
                swatch.set_color(color)
        for row, entry in zip(self._rows, legend_entries(tmap), strict=True):
            row[3].setText(f"{entry.count:,}")
            row[4].setText(f"{entry.share * 100:.1f} %")
            row[5].setText(format_area(entry.area_mm2))
        self._update_summary()

    def set_progress(self, progress: ProgressCounts | None) -> None:
        """The running job's latest report (a MapProgress: ``done``, ``total``,
        ``skipped``) for the live map shown; refreshes the summary. Ignored unless the
        map shown is live."""
        if not self._live:
            return
        self._progress = progress
        self._update_summary()

    def summary_text(self) -> str:
        """The totals line as shown (empty without a map)."""
        if self._map is None:
            return ""
        return map_totals_text(self._map, self._progress, live=self._live)

    def _update_summary(self) -> None:
        self.summary.setText(self.summary_text())

    def set_status(self, text: str) -> None:
        """A highlighted note under the summary ("Partial map: ..."); "" hides it."""
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def row_texts(self) -> list[tuple[str, str, str, str]]:
        """(class label, patches, share, area) per row as shown."""
        return [(r[2].text(), r[3].text(), r[4].text(), r[5].text()) for r in self._rows]


def draw_legend(painter: QPainter, x: float, y: float, entries: list[LegendEntry]) -> QRectF:
    """Paint a compact legend box with its top-left at (x, y); returns its rectangle.

    Used for exported view images, where the Qt panel is not part of the picture.
    """
    font = QFont(painter.font())
    font.setPointSizeF(max(font.pointSizeF(), 9.0))
    painter.setFont(font)
    fm = QFontMetrics(font)
    pad, line_h = 8, fm.height() + 4
    sw = fm.height() - 2
    texts = [f"{e.label}  {e.share * 100:.1f} %" for e in entries]
    width = pad * 3 + sw + max((fm.horizontalAdvance(t) for t in texts), default=0)
    height = pad * 2 + line_h * len(entries)
    box = QRectF(x, y, width, height)
    painter.save()
    painter.setPen(QPen(QColor(0, 0, 0, 110)))
    painter.setBrush(QColor(255, 255, 255, 225))
    painter.drawRoundedRect(box, 4, 4)
    for i, (entry, text) in enumerate(zip(entries, texts, strict=True)):
        top = y + pad + i * line_h
        painter.setBrush(QColor(*entry.color))
        painter.setPen(QPen(QColor(0, 0, 0, 90)))
        painter.drawRect(QRectF(x + pad, top + (line_h - sw) / 2, sw, sw))
        painter.setPen(QColor(20, 20, 20))
        painter.drawText(
            QRectF(x + pad * 2 + sw, top, width, line_h),
            int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
            text,
        )
    painter.restore()
    return box
