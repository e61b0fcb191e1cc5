"""The Map panel: overlay controls, the legend of the eight classes and the
quantities a pathologist reports.

Each class row has a visibility checkbox, its colour, its name, its patch count,
its share of the tissue area (empty glass left out) and its area. Below the table the
map's quantities (:mod:`histoviewer.mapping.quantities`: tissue area, tumour-stroma
ratio, lymphocyte share) and, while several patches are selected, the same for them.

On a slide with true classes beside it (the demo slide,
:mod:`histoviewer.slide.demo_slide`) a line under the totals gives the map's agreement
with them (:mod:`histoviewer.mapping.agreement`), per class in its tooltip; it follows a
map being made as the counts do.

Two transient views are chosen here too (the window keeps them in the
:class:`~histoviewer.viewer_state.ViewSettings`): clicking a class's name shows only
that class (solo; again: all classes), and the "Show" box (or a row's right-click
menu) replaces the class colours with one class's probability heatmap, whose colour
bar is then shown. The same entries draw the legend burnt into exported view images
(:func:`draw_legend`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
from PySide6.QtCore import QPoint, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label, default_classes
from histoviewer.errors import HistoViewerError
from histoviewer.mapping.agreement import TITLE as AGREEMENT_TITLE
from histoviewer.mapping.agreement import (
    Agreement,
    agreement_parts,
    class_agreement_rows,
    compare_with_truth,
    model_agreement_text,
)
from histoviewer.mapping.quantities import (
    LYMPHOCYTE_DEFINITION,
    TSR_DEFINITION,
    Quantities,
    patches_text,
    percent,
    quantities,
)
from histoviewer.mapping.summary_text import ProgressCounts, format_area, map_totals_text
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.slide.demo_slide import DemoTruth

Cell = tuple[int, int]

#: The probability heatmap's colormap (matplotlib's name). Viridis: perceptually
#: uniform, readable by colour-blind users and in grey, and its likely end (green to
#: yellow) is far from the pink and purple of H&E, where magma and inferno pass through
#: reds and magentas that sink into eosin and their black low end darkens the tissue.
HEATMAP_COLORMAP = "viridis"

SHARE_TIP = "Share of the tissue area; empty glass excluded (background and Empty patches)."
TISSUE_TIP = (
    "Tissue: the area of the patches classified as a tissue class. Empty glass is left "
    "out: the background patches mapping skipped and the patches the model called Empty."
)
TSR_TIP = (
    f"Tumour-stroma ratio: {TSR_DEFINITION}. Counted by the model over the whole map (or "
    "the selected region). The clinical tumour-stroma ratio is scored by eye on the most "
    "stroma-rich field at the invasive front (Mesker 2007, van Pelt 2018): this is a "
    "measure of the same tissue, not that protocol."
)
LYMPHOCYTE_TIP = f"Lymphocyte share: {LYMPHOCYTE_DEFINITION} (empty glass left out)."
PARTIAL_TIP = (
    "Patches in scope that are neither classified nor background yet: the figures cover "
    "the classified ones only."
)
QUANTITY_TIPS = {
    "Tissue": TISSUE_TIP,
    "Tumour-stroma ratio": TSR_TIP,
    "Lymphocytes": LYMPHOCYTE_TIP,
    "Partial": PARTIAL_TIP,
}
AGREEMENT_TIP = (
    "The map against the true classes stored beside this slide: the share of the "
    "patches decided so far whose class is the true one. Patches mapping skipped as "
    "glass count as Empty; patches not classified yet are not compared."
)
SOLO_TIP = "Click: show only this class (again: all classes). Right-click: more."


@cache
def heatmap_lut(name: str = HEATMAP_COLORMAP) -> np.ndarray:
    """uint8 (256, 3): matplotlib's colormap ``name`` sampled at 256 steps (read-only).
    Imports matplotlib, on first use only."""
    import matplotlib  # about 0.25 s; only once a heatmap is asked for

    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))
    lut = np.rint(np.asarray(rgba)[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@dataclass(frozen=True)
class LegendEntry:
    name: str
    label: str
    color: tuple[int, int, int]
    count: int
    share: float | None  # of the tissue area, 0..1; None: not tissue (empty glass)
    area_mm2: float


def legend_entries(tmap: TissueMap, q: Quantities | None = None) -> list[LegendEntry]:
    """One entry per class of ``tmap`` (``q``: its quantities, if already known)."""
    q = quantities(tmap) if q is None else q
    return [
        LegendEntry(c.name, class_label(c.name), c.color, c.patches, c.share, c.area_mm2)
        for c in q.classes
    ]


def share_text(share: float | None) -> str:
    """'38.2 %'; '–' for a class that is not tissue."""
    return percent(share)


def quantity_rows(q: Quantities) -> list[tuple[str, str, str]]:
    """(name, figure, rest) lines of the Map panel's quantities: tissue, tumour-stroma
    ratio, lymphocytes, and how much of the scope is not classified yet (if any); the
    figure is what the eye looks for ("38.2 %"), the rest says of what and on how many
    patches."""
    tsr, lym = q.tumour_stroma_ratio, q.lymphocyte_share
    rows = [("Tissue", format_area(q.tissue_area_mm2), f"· {patches_text(q.tissue_patches)}")]
    if tsr.value is None:
        rows.append(("Tumour-stroma ratio", "–", f"({tsr.note})"))
    else:
        rows.append(
            (
                "Tumour-stroma ratio",
                percent(tsr.value),
                f"stroma · {q.stroma_category} · {patches_text(tsr.patches)}",
            )
        )
    if lym.value is None:
        rows.append(("Lymphocytes", "–", f"({lym.note})"))
    else:
        rows.append(("Lymphocytes", percent(lym.value), f"of tissue · {patches_text(lym.patches)}"))
    if q.pending_patches:
        rows.append(("Partial", patches_text(q.pending_patches), "not classified yet"))
    return rows


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


class ClassNameLabel(QLabel):
    """A class's name in the legend; a left click emits :attr:`clicked`."""

    clicked = Signal()

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(
            event.position().toPoint()
        ):
            self.clicked.emit()
            event.accept()
            return
        super().mouseReleaseEvent(event)


class ColorBar(QWidget):
    """The heatmap's key: the colormap from 0 % to 100 % with ticks under it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lut = np.zeros((256, 3), dtype=np.uint8)
        self._image = QImage()
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_lut(self, lut: np.ndarray) -> None:
        """The colormap, uint8 (256, 3)."""
        self._lut = np.ascontiguousarray(lut, dtype=np.uint8)
        row = np.ascontiguousarray(
            np.concatenate([self._lut, np.full((256, 1), 255, np.uint8)], axis=1)[None]
        )
        self._image = QImage(row.data, 256, 1, 4 * 256, QImage.Format.Format_RGBA8888).copy()
        self.update()

    def lut(self) -> np.ndarray:
        return self._lut.copy()

    def _bar_height(self) -> int:
        return max(8, self.fontMetrics().height() * 2 // 3)

    def sizeHint(self) -> QSize:
        size = super().sizeHint()
        size.setHeight(self._bar_height() + self.fontMetrics().height() + 4)
        size.setWidth(160)
        return size

    def minimumSizeHint(self) -> QSize:
        size = self.sizeHint()
        size.setWidth(self.fontMetrics().horizontalAdvance("0 %  50 %  100 %") + 8)
        return size

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        fm = self.fontMetrics()
        margin = fm.horizontalAdvance("100 %") // 2  # room for the outer ticks' text
        bar = QRectF(margin, 1, max(1, self.width() - 2 * margin), self._bar_height())
        if not self._image.isNull():
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(bar, self._image)
        painter.setPen(QPen(self.palette().windowText().color(), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(bar.adjusted(0, 0, -1, -1))
        top = bar.bottom() + 2
        for frac, text in ((0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")):
            x = bar.left() + frac * (bar.width() - 1)
            half = fm.horizontalAdvance(text) / 2
            painter.drawText(
                QRectF(x - half, top, 2 * half, fm.height()),
                int(Qt.AlignmentFlag.AlignCenter),
                text,
            )
        painter.end()


class QuantitiesBlock(QFrame):
    """A title and the quantities of one scope (:func:`quantity_rows`), each line with
    its definition as a tooltip; word-wrapped for a narrow dock."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 2, 0, 0)
        self._layout.setSpacing(1)
        self._layout.addWidget(self.title)
        self._lines: list[QLabel] = []
        self._texts: list[str] = []
        self.set_title(title)

    def set_title(self, title: str) -> None:
        self.title.setText(f"<b>{title}</b>")

    def title_text(self) -> str:
        return self.title.text().removeprefix("<b>").removesuffix("</b>")

    def set_quantities(self, q: Quantities) -> None:
        rows = quantity_rows(q)
        while len(self._lines) < len(rows):
            line = QLabel()
            line.setWordWrap(True)
            line.setTextFormat(Qt.TextFormat.RichText)
            line.setContentsMargins(8, 0, 0, 0)
            self._layout.addWidget(line)
            self._lines.append(line)
        self._texts = []
        for line, (name, figure, rest) in zip(self._lines, rows, strict=False):
            line.setText(f"{name} <b>{_nbsp(figure)}</b> {_nbsp(rest)}")
            line.setToolTip(QUANTITY_TIPS.get(name, ""))
            line.setVisible(True)
            self._texts.append(f"{name} {figure} {rest}")
        for line in self._lines[len(rows) :]:
            line.setVisible(False)

    def texts(self) -> list[str]:
        """The lines as shown, as plain text ("Tissue 7.65 mm² · 981 patches", ...)."""
        return list(self._texts)

    def line_labels(self) -> list[QLabel]:
        return [line for line in self._lines if not line.isHidden()]


def _nbsp(text: str) -> str:
    """``text`` as HTML whose numbers stay with their units when the line wraps
    ("38.2 %", "420 patches")."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"(\d) ", r"\1&nbsp;", text)


class LegendPanel(QWidget):
    """Overlay controls, one row per class, and the quantities.

    Signals: ``overlayToggled(bool)``, ``opacityChanged(float)`` (0..1),
    ``shadingToggled(bool)``, ``classVisibilityChanged(int, bool)``,
    ``soloChosen(object)`` (a class name to show alone, None: all classes; a click on
    a class's name or its row's menu) and ``heatmapChosen(object)`` (a class name
    whose probability heatmap to show, None: the class colours; the "Show" box or a
    row's menu). The panel does not change the view itself: the window answers with
    :meth:`set_view_mode`.
    """

    overlayToggled = Signal(bool)
    opacityChanged = Signal(float)
    shadingToggled = Signal(bool)
    classVisibilityChanged = Signal(int, bool)
    soloChosen = Signal(object)
    heatmapChosen = Signal(object)

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
        self.show_box = QComboBox()
        self.show_box.setToolTip(
            "What the overlay draws: each patch's class, or one class's probability as a "
            "smooth heatmap (View > Probability Heatmap)"
        )
        self.show_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.show_box.setMinimumContentsLength(12)
        self.show_box.activated.connect(self._show_box_chosen)
        self.color_bar = ColorBar()
        self.color_bar_title = QLabel()
        self.color_bar_title.setWordWrap(True)
        self.color_bar_title.setToolTip(
            f"The heatmap's colours ({HEATMAP_COLORMAP}, perceptually uniform): the "
            "probability the model gives the class at each patch, interpolated smoothly "
            "between patch centres; unlikely tissue is drawn nearly transparent, "
            "unmapped glass not at all."
        )
        self.color_bar.setToolTip(self.color_bar_title.toolTip())

        toggles_row = QHBoxLayout()
        toggles_row.addWidget(self.show_overlay)
        toggles_row.addWidget(self.shading)
        toggles_row.addStretch(1)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity, 1)
        opacity_row.addWidget(self.opacity_label)
        show_row = QHBoxLayout()
        show_label = QLabel("Show")
        show_label.setBuddy(self.show_box)
        show_row.addWidget(show_label)
        show_row.addWidget(self.show_box, 1)
        self.heatmap_key = QWidget()
        key_layout = QVBoxLayout(self.heatmap_key)
        key_layout.setContentsMargins(0, 0, 0, 0)
        key_layout.setSpacing(1)
        key_layout.addWidget(self.color_bar_title)
        key_layout.addWidget(self.color_bar)
        self.heatmap_key.setVisible(False)

        self._grid = QGridLayout()
        self._grid.setHorizontalSpacing(8)
        self._grid.setVerticalSpacing(1)
        self._grid.setColumnStretch(2, 1)
        for col, text in ((2, "Class"), (3, "Patches"), (4, "Share"), (5, "Area")):
            head = QLabel(f"<b>{text}</b>")
            align = Qt.AlignmentFlag.AlignLeft if col == 2 else Qt.AlignmentFlag.AlignRight
            self._grid.addWidget(head, 0, col, alignment=align)
            if text == "Share":
                head.setToolTip(SHARE_TIP)
                self.share_header = head
            elif text == "Class":
                head.setToolTip(SOLO_TIP)
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
        # The map against the slide's true classes (the demo slide), when it has them.
        self.agreement_label = QLabel()
        self.agreement_label.setWordWrap(True)
        self.agreement_label.setTextFormat(Qt.TextFormat.RichText)
        self.agreement_label.setVisible(False)
        self.quantities_block = QuantitiesBlock("Quantities")
        self.quantities_block.setVisible(False)
        self.region_block = QuantitiesBlock("Selected region")
        self.region_block.setVisible(False)
        self.region_block.setToolTip(
            "The patches selected with Shift+drag (Ctrl+Shift+drag adds, Shift+click adds "
            "or drops one; Esc clears)"
        )

        # Compact: in a short dock (a scroll area) the panel scrolls only below this.
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(toggles_row)
        layout.addLayout(opacity_row)
        layout.addLayout(show_row)
        layout.addWidget(self.heatmap_key)
        layout.addSpacing(2)
        layout.addLayout(self._grid)
        layout.addWidget(self.summary)
        layout.addWidget(self.status)
        layout.addWidget(self.agreement_label)
        layout.addWidget(self.quantities_block)
        layout.addWidget(self.region_block)
        layout.addStretch(1)
        self._map: TissueMap | None = None
        self._live = False
        self._progress: ProgressCounts | None = None
        self._quantities: Quantities | None = None
        self._region_cells: list[Cell] = []
        self._region_mask: np.ndarray | None = None
        self._region_map: TissueMap | None = None
        self._region_quantities: Quantities | None = None
        self._solo: str | None = None
        self._heat: str | None = None
        self._truth: DemoTruth | None = None
        self._truth_problem = ""
        self._agreement: Agreement | None = None
        self._agreement_plain = ""
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
            label = ClassNameLabel(class_label(name))
            label.setToolTip(SOLO_TIP)
            label.clicked.connect(lambda i=i: self._name_clicked(i))
            count, share, area = QLabel("–"), QLabel("–"), QLabel("–")
            for w in (count, share, area):
                w.setAlignment(right)
            share.setToolTip(SHARE_TIP)
            row = i + 1
            self._grid.addWidget(box, row, 0)
            self._grid.addWidget(swatch, row, 1)
            self._grid.addWidget(label, row, 2)
            self._grid.addWidget(count, row, 3)
            self._grid.addWidget(share, row, 4)
            self._grid.addWidget(area, row, 5)
            for w in (swatch, label, count, share, area):
                w.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
                w.customContextMenuRequested.connect(
                    lambda pos, i=i, w=w: self._show_row_menu(i, w.mapToGlobal(pos))
                )
            self._rows.append((box, swatch, label, count, share, area))
        self._names = list(names)
        self._fill_show_box()
        self._show_mode()

    def class_visibility(self) -> list[bool]:
        return [box.isChecked() for box, *_ in self._rows]

    def class_names(self) -> list[str]:
        """The classes of the rows, in order."""
        return list(self._names)

    # --- solo and heatmap -----------------------------------------------------------------

    def set_view_mode(self, solo: str | None, heatmap: str | None) -> None:
        """Show which class is drawn alone (``solo``) or as a heatmap (``heatmap``):
        its row highlighted, the others dimmed, the "Show" box and the colour bar to
        match. Names the rows lack are shown as no solo, no heatmap."""
        if (solo, heatmap) == (self._solo, self._heat) and self._mode_shown():
            return  # the window calls this for every view setting (opacity drags)
        self._solo, self._heat = solo, heatmap
        self._show_mode()

    def _mode_shown(self) -> bool:
        index = self.show_box.findData(self.heatmap_class()) if self.heatmap_class() else 0
        return self.show_box.currentIndex() == max(index, 0)

    def solo_class(self) -> str | None:
        """The class shown alone, as the panel shows it (None: none)."""
        return self._solo if self._solo in self._names else None

    def heatmap_class(self) -> str | None:
        """The class whose heatmap is shown, as the panel shows it (None: none)."""
        return self._heat if self._heat in self._names else None

    def _name_clicked(self, index: int) -> None:
        name = self._names[index]
        self.soloChosen.emit(None if self.solo_class() == name else name)

    def _fill_show_box(self) -> None:
        box = self.show_box
        box.blockSignals(True)
        box.clear()
        box.addItem("Classes", None)
        for name in self._names:
            box.addItem(f"Probability: {class_label(name)}", name)
        box.blockSignals(False)

    def _show_box_chosen(self, index: int) -> None:
        self.heatmapChosen.emit(self.show_box.itemData(index))

    def row_menu(self, index: int) -> QMenu:
        """The right-click menu of class row ``index`` (the caller shows and deletes it)."""
        name = self._names[index]
        menu = QMenu(self)
        solo = menu.addAction("Show Only This Class")
        solo.setCheckable(True)
        solo.setChecked(self.solo_class() == name)
        solo.triggered.connect(lambda: self.soloChosen.emit(name))
        every = menu.addAction("Show All Classes")
        every.setEnabled(self.solo_class() is not None or self.heatmap_class() is not None)
        every.triggered.connect(lambda: self.soloChosen.emit(None))
        menu.addSeparator()
        heat = menu.addAction("Probability Heatmap of This Class")
        heat.setCheckable(True)
        heat.setChecked(self.heatmap_class() == name)
        heat.triggered.connect(lambda on: self.heatmapChosen.emit(name if on else None))
        return menu

    def _show_row_menu(self, index: int, where: QPoint) -> None:
        menu = self.row_menu(index)
        menu.exec(where)
        menu.deleteLater()

    def _show_mode(self) -> None:
        solo, heat = self.solo_class(), self.heatmap_class()
        dim = QColor(self.palette().windowText().color())
        dim.setAlpha(100)
        dimmed = f"QLabel {{ color: rgba({dim.red()},{dim.green()},{dim.blue()},{dim.alpha()}); }}"
        for name, (_, _, label, count, share, area) in zip(self._names, self._rows, strict=True):
            chosen = name in (solo, heat)
            faded = (solo is not None or heat is not None) and not chosen
            for w in (label, count, share, area):
                w.setStyleSheet(dimmed if faded else "")
            font = label.font()
            font.setBold(chosen)
            label.setFont(font)
        index = self.show_box.findData(heat) if heat is not None else 0
        if self.show_box.currentIndex() != max(index, 0):
            self.show_box.setCurrentIndex(max(index, 0))
        self.heatmap_key.setVisible(heat is not None)
        if heat is not None:
            self.color_bar_title.setText(f"Probability of {class_label(heat)}")
            if not self.color_bar.lut().any():
                self.color_bar.set_lut(heatmap_lut())

    # --- map and quantities ---------------------------------------------------------------

    def set_map(
        self,
        tmap: TissueMap | None,
        *,
        live: bool = False,
        progress: ProgressCounts | None = None,
    ) -> None:
        """Show counts, shares and quantities of ``tmap`` (None clears them).

        ``live``: a map a running job fills in. Its background is known only from
        the job's progress reports (``progress``, or the last one given to
        :meth:`set_progress` for this map): with one the summary reads "412 of 981
        tissue patches classified · 108 background patches skipped", the totals the
        progress bar counts; before the first, "412 patches classified so far".
        A map that is not live is summed up from its own patch states
        (:func:`~histoviewer.mapping.summary_text.map_totals_text`). A selected region
        of another map is dropped.
        """
        if tmap is not self._map or not live:
            self._progress = None  # a report belongs to one live map
        if progress is not None:
            self._progress = progress
        self._map = tmap
        self._live = live and tmap is not None
        if tmap is not self._region_map:
            self._drop_region()
        if tmap is None:
            for _, _, _, count, share, area in self._rows:
                for w in (count, share, area):
                    w.setText("–")
            self.summary.setText("No map yet. Analysis > Map Tissue makes one.")
            self.set_status("")
            self._quantities = None
            self.quantities_block.setVisible(False)
            self._update_agreement()
            return
        if tmap.class_names != self._names:
            self.set_classes(tmap.class_names, tmap.class_colors)
        else:
            for (_, swatch, *_), color in zip(self._rows, tmap.class_colors, strict=True):
                swatch.set_color(color)
        self._quantities = q = quantities(tmap)
        for row, entry in zip(self._rows, legend_entries(tmap, q), strict=True):
            row[3].setText(f"{entry.count:,}")
            row[4].setText(share_text(entry.share))
            row[5].setText(format_area(entry.area_mm2))
        self.quantities_block.set_quantities(q)
        self.quantities_block.setVisible(True)
        self._update_region()
        self._update_summary()
        self._update_agreement()

    def map_quantities(self) -> Quantities | None:
        """The quantities of the whole map shown (None: no map)."""
        return self._quantities

    def set_region(self, cells: list[Cell]) -> None:
        """The patches (row, col) of the map shown that are selected: with 2 or more
        their quantities are shown under the map's (fewer hide them)."""
        tmap = self._map
        rc = np.array(sorted({(int(r), int(c)) for r, c in cells}), dtype=np.intp).reshape(-1, 2)
        if tmap is not None:  # cells of the map only
            rows, cols = rc[:, 0], rc[:, 1]
            rc = rc[(rows >= 0) & (rows < tmap.rows) & (cols >= 0) & (cols < tmap.cols)]
        if tmap is None or len(rc) < 2:
            self._drop_region()
            return
        mask = np.zeros(tmap.state.shape, dtype=bool)
        mask[rc[:, 0], rc[:, 1]] = True
        self._region_cells = [(int(r), int(c)) for r, c in rc]
        self._region_mask = mask
        self._region_map = tmap
        self._update_region()

    def region_cells(self) -> list[Cell]:
        """The selected patches whose quantities are shown (empty: none are)."""
        return list(self._region_cells)

    def region_quantities(self) -> Quantities | None:
        """The quantities of the selected region (None: fewer than 2 patches selected)."""
        return self._region_quantities

    def _drop_region(self) -> None:
        self._region_cells = []
        self._region_mask = None
        self._region_map = None
        self._region_quantities = None
        self.region_block.setVisible(False)

    def _update_region(self) -> None:
        if self._map is None or self._region_mask is None:
            return
        q = quantities(self._map, self._region_mask)
        self._region_quantities = q
        self.region_block.set_title(f"Selected region ({patches_text(q.patches)})")
        self.region_block.set_quantities(q)
        self.region_block.setVisible(True)

    # --- agreement with the true classes ----------------------------------------------

    def set_truth(self, truth: DemoTruth | None, problem: str = "") -> None:
        """The true classes of the open slide (None: it has none), with which every map
        shown is compared; ``problem``: why a truth file beside the slide is not used
        (shown instead of the figure)."""
        self._truth = truth
        self._truth_problem = problem if truth is None else ""
        self._update_agreement()

    def agreement(self) -> Agreement | None:
        """The map's agreement with the true classes as shown (None: not shown)."""
        return self._agreement

    def agreement_text(self) -> str:
        """The agreement line as plain text ("" when hidden)."""
        return "" if self.agreement_label.isHidden() else self._agreement_plain

    def _update_agreement(self) -> None:
        self._agreement = None
        tmap = self._map
        if tmap is None or (self._truth is None and not self._truth_problem):
            self.agreement_label.setVisible(False)
            return
        if self._truth is None:
            self._show_agreement("–", self._truth_problem)
            return
        try:
            result = compare_with_truth(tmap, self._truth)
        except HistoViewerError as exc:
            self._show_agreement("–", str(exc))
            return
        self._agreement = result
        self._show_agreement(*agreement_parts(result), tip=_agreement_tip(result))

    def _show_agreement(self, figure: str, rest: str, tip: str = "") -> None:
        """'<title>: <b>figure</b> (rest)', as the quantities' lines are set."""
        self._agreement_plain = f"{AGREEMENT_TITLE}: {figure} ({rest})"
        label = self.agreement_label
        label.setText(f"{AGREEMENT_TITLE}: <b>{_nbsp(figure)}</b> {_nbsp(f'({rest})')}")
        label.setToolTip(tip)
        label.setVisible(True)

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

    def name_label(self, index: int) -> ClassNameLabel:
        """The name of class row ``index`` (a click on it toggles solo)."""
        return self._rows[index][2]  # type: ignore[return-value]


def _agreement_tip(result: Agreement) -> str:
    """The tooltip of the agreement line: what it measures, then a table of the
    agreement of each true class (its recall)."""
    rows = "".join(
        f"<tr><td>{_nbsp(label)}</td><td align='right'>{_nbsp(figure)}</td>"
        f"<td align='right'>{_nbsp(count)}</td></tr>"
        for label, figure, count in class_agreement_rows(result)
    )
    pending = result.total - result.compared
    note = f" {patches_text(pending)} not classified yet." if pending else ""
    return (
        f"<p>{AGREEMENT_TIP}</p><p>{model_agreement_text(result)}{note}</p>"
        "<table cellspacing='4'>"
        "<tr><th align='left'>True class</th><th>Agreement</th><th>Patches</th></tr>"
        f"{rows}</table>"
    )


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
    texts = [e.label if e.share is None else f"{e.label}  {e.share * 100:.1f} %" for e in entries]
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


def draw_heatmap_key(painter: QPainter, x: float, y: float, label: str) -> QRectF:
    """Paint the heatmap's key (its title, the colour bar from 0 to 100 %) in a box with
    its top-left at (x, y); returns its rectangle. For exported view images of a heatmap,
    where the class legend would say what the picture does not show."""
    font = QFont(painter.font())
    font.setPointSizeF(max(font.pointSizeF(), 9.0))
    painter.setFont(font)
    fm = QFontMetrics(font)
    pad, line_h, bar_w, bar_h = 8, fm.height() + 4, 220, 12
    title = f"Probability of {label}"
    width = pad * 2 + max(bar_w, fm.horizontalAdvance(title))
    height = pad * 2 + line_h * 2 + bar_h
    box = QRectF(x, y, width, height)
    lut = heatmap_lut()
    painter.save()
    painter.setPen(QPen(QColor(0, 0, 0, 110)))
    painter.setBrush(QColor(255, 255, 255, 225))
    painter.drawRoundedRect(box, 4, 4)
    painter.setPen(QColor(20, 20, 20))
    left, top = x + pad, y + pad
    align_v = Qt.AlignmentFlag.AlignVCenter
    painter.drawText(QRectF(left, top, width, line_h), int(align_v), title)
    bar_top = top + line_h
    for i in range(bar_w):  # one LUT step per column
        painter.fillRect(
            QRectF(left + i, bar_top, 1, bar_h), QColor(*lut[round(i * 255 / (bar_w - 1))])
        )
    ticks = bar_top + bar_h
    a = Qt.AlignmentFlag
    for text, where in (("0 %", a.AlignLeft), ("50 %", a.AlignHCenter), ("100 %", a.AlignRight)):
        painter.drawText(QRectF(left, ticks, bar_w, line_h), int(align_v | where), text)
    painter.restore()
    return box
