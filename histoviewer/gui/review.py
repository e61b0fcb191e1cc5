"""The Review panel: the patches the model is least sure of, to check and label.

It lists the most uncertain classified patches of the map shown that carry no label
yet (:data:`REVIEW_LIMIT` of them, most uncertain first; the uncertainty is
:meth:`TissueMap.uncertainty`, the normalised entropy that confidence shading also
draws). Up and Down step through the list and the slide view follows; Enter accepts
the model's class as the patch's label and moves on; 1-8 label it with that class
instead. A labelled patch drops out of the list.

The panel also holds the threshold of View > Uncertain Only (the overlay then draws
only patches at least that uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QKeyEvent, QPalette, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.labels.store import LabelSet, cell_box, labels_by_cell
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.viewer_state import ViewerState

#: Patches listed at most.
REVIEW_LIMIT = 200
#: While a map fills in, the list is rebuilt at most once per this many ms.
REFRESH_MS = 300
#: Uncertainty from which a patch counts as uncertain (the header, Uncertain Only).
DEFAULT_THRESHOLD = 0.5
#: Keys 1..9 label with the class of that number (of those the model has).
CLASS_KEYS = {getattr(Qt.Key, f"Key_{n}"): n - 1 for n in range(1, 10)}

Cell = tuple[int, int]


@dataclass(frozen=True)
class ReviewItem:
    """One patch to review: its cell, the model's class, that class's probability and
    the patch's uncertainty (0..1)."""

    row: int
    col: int
    cls: int
    probability: float
    uncertainty: float

    @property
    def cell(self) -> Cell:
        return (self.row, self.col)


@dataclass(frozen=True)
class ReviewQueue:
    """The patches to review and the counts of the header."""

    items: list[ReviewItem]
    classified: int  # classified patches of the map
    labelled: int  # of them, those with a label
    uncertain: int  # unlabelled ones at least as uncertain as the threshold


def labelled_cells(labels: LabelSet | None, tmap: TissueMap) -> set[Cell]:
    """The cells of ``tmap`` that hold a label's centre (any class name)."""
    return set(labels_by_cell(labels, tmap))


def review_queue(
    tmap: TissueMap,
    labelled: set[Cell] = frozenset(),
    *,
    threshold: float = DEFAULT_THRESHOLD,
    limit: int = REVIEW_LIMIT,
) -> ReviewQueue:
    """The ``limit`` most uncertain classified patches of ``tmap`` not in ``labelled``,
    most uncertain first (ties: in reading order)."""
    unsure = tmap.uncertainty()
    done = np.isfinite(unsure)
    classified = int(done.sum())
    open_ = done.copy()
    n_labelled = 0
    for r, c in labelled:
        if 0 <= r < tmap.rows and 0 <= c < tmap.cols and done[r, c]:
            open_[r, c] = False
            n_labelled += 1
    flat = np.flatnonzero(open_)
    values = unsure.ravel()[flat]
    uncertain = int(np.count_nonzero(values >= threshold))
    if len(flat) > limit:
        keep = np.argpartition(-values, limit - 1)[:limit]
        flat, values = flat[keep], values[keep]
    order = np.lexsort((flat, -values))
    items = []
    for index in flat[order]:
        r, c = divmod(int(index), tmap.cols)
        probs = tmap.probs[r, c]
        best = int(np.nanargmax(probs))
        items.append(ReviewItem(r, c, best, float(probs[best]), float(unsure[r, c])))
    return ReviewQueue(items, classified, n_labelled, uncertain)


def header_text(queue: ReviewQueue | None) -> str:
    """The line above the list."""
    if queue is None or queue.classified == 0:
        return "Map the slide to review uncertain patches."
    if not queue.items:
        return f"All {queue.classified:,} classified patches are labelled."
    return (
        f"{queue.uncertain:,} uncertain patches of {queue.classified:,}"
        f" · {queue.labelled:,} labelled"
    )


def swatch(color: tuple[int, int, int], size: int = 12) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


class ReviewList(QTreeWidget):
    """The list of patches; Enter and the number keys ask to label the current one.

    Number keys are taken before the window's shortcuts (1-4 zoom to a magnification
    elsewhere) while the list has the focus.
    """

    acceptRequested = Signal()
    classRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(4)
        self.setHeaderLabels(["Patch", "Class", "Prob.", "Unsure"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAllColumnsShowFocus(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setMinimumHeight(90)
        head = self.header()
        head.setStretchLastSection(False)
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._own_key(event):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.acceptRequested.emit()
        elif self._own_key(event) and key in CLASS_KEYS:
            self.classRequested.emit(CLASS_KEYS[key])
        else:
            super().keyPressEvent(event)

    @staticmethod
    def _own_key(event: QKeyEvent) -> bool:
        plain = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        own = (*CLASS_KEYS, Qt.Key.Key_Return, Qt.Key.Key_Enter)
        return plain == Qt.KeyboardModifier.NoModifier and event.key() in own


class ReviewPanel(QWidget):
    """The Review dock's widget; it follows ``state`` (map, labels, selection).

    Signals: ``patchChosen(x, y)`` (level-0 centre of the patch stepped to: the window
    centres the view there), ``uncertainOnlyToggled(bool)`` (its checkbox) and
    ``thresholdChanged(float)``.
    """

    patchChosen = Signal(float, float)
    uncertainOnlyToggled = Signal(bool)
    thresholdChanged = Signal(float)

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._queue: ReviewQueue | None = None
        self._rows: dict[Cell, int] = {}
        # Not wrapped: a wrapping label gives the panel a height-for-width, and the dock's
        # scroll area then asks for the list's preferred height and scrolls.
        self.header = QLabel()
        self.header.setToolTip(
            "Uncertain: at least as uncertain as the threshold below. The list goes on "
            "with the next most uncertain patches (greyed)."
        )
        self.hint = QLabel("↑↓ step · Enter accepts the class · 1–8 sets one")
        self.hint.setToolTip(
            "Up / Down: the next patch, shown on the slide\n"
            "Enter: label the patch the model's class\n"
            "1-8: label it class 1-8 (the Map panel's order)"
        )
        self.hint.setEnabled(False)  # greyed: help, not data
        self.list = ReviewList()
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.acceptRequested.connect(lambda: self.label_current(None))
        self.list.classRequested.connect(self.label_current)
        self.uncertain_only = QCheckBox("Show only uncertain")
        self.uncertain_only.setToolTip(
            "Draw only the patches at least this uncertain (View > Uncertain Only)"
        )
        self.uncertain_only.toggled.connect(self.uncertainOnlyToggled)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(DEFAULT_THRESHOLD)
        self.threshold.setToolTip(
            "Uncertainty from which a patch counts as uncertain: the entropy of its class "
            "probabilities, 0 (one class certain) to 1 (all classes equally likely)"
        )
        self.threshold.valueChanged.connect(self._on_threshold)

        controls = QHBoxLayout()
        controls.addWidget(self.uncertain_only)
        controls.addStretch(1)
        controls.addWidget(QLabel("from"))
        controls.addWidget(self.threshold)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addLayout(controls)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        state.map_changed.connect(self._on_map_changed)
        state.map_updated.connect(self._on_map_updated)
        state.labels_changed.connect(self._on_labels_changed)
        state.selection_changed.connect(self._on_selection_changed)
        self.refresh()

    # --- reading ------------------------------------------------------------------------

    def items(self) -> list[ReviewItem]:
        """The patches listed, top to bottom."""
        return list(self._queue.items) if self._queue else []

    def current(self) -> ReviewItem | None:
        """The patch of the list's current row (None: none)."""
        index = self.list.indexOfTopLevelItem(self.list.currentItem())
        items = self.items()
        return items[index] if 0 <= index < len(items) else None

    def threshold_value(self) -> float:
        return float(self.threshold.value())

    # --- changing -----------------------------------------------------------------------

    def set_threshold(self, value: float) -> None:
        self.threshold.setValue(float(value))

    def refresh(self) -> None:
        """Rebuild the list from the map shown and the labels; the current patch stays
        current while it is listed, else the row where it was does."""
        self._timer.stop()
        tmap = self.state.tissue_map
        before = self.current()
        row_before = self.list.currentIndex().row()
        if tmap is None:
            self._queue = None
        else:
            labelled = labelled_cells(self.state.labels, tmap)
            self._queue = review_queue(tmap, labelled, threshold=self.threshold_value())
        self.header.setText(header_text(self._queue))
        items = self.items()
        self._rows = {item.cell: i for i, item in enumerate(items)}
        self.list.blockSignals(True)
        try:
            self.list.clear()
            if tmap is not None:
                threshold = self.threshold_value()
                rows = [self._tree_item(tmap, item, threshold) for item in items]
                self.list.addTopLevelItems(rows)
            if before is not None and before.cell in self._rows:
                row = self._rows[before.cell]
            elif row_before >= 0 and items:
                row = min(row_before, len(items) - 1)
            else:
                row = -1
            if row >= 0:
                self.list.setCurrentItem(self.list.topLevelItem(row))
        finally:
            self.list.blockSignals(False)
        self.list.setVisible(bool(items))
        self.hint.setVisible(bool(items))

    def step_to(self, row: int) -> None:
        """Make row ``row`` current: select its patch and show it in the view."""
        if 0 <= row < self.list.topLevelItemCount():
            item = self.list.topLevelItem(row)
            if item is self.list.currentItem():
                self._on_current_changed(item, None)
            else:
                self.list.setCurrentItem(item)

    def label_current(self, class_index: int | None = None) -> bool:
        """Label the current patch ``class_index`` (None: the model's class) and step to
        the next; False when nothing was labelled."""
        item = self.current()
        tmap = self.state.tissue_map
        if item is None or tmap is None:
            return False
        cls = item.cls if class_index is None else int(class_index)
        if not 0 <= cls < tmap.num_classes:
            return False
        if self.state.labels is None:
            self.state.notify("Labels cannot be set yet: no labels are open for this slide.")
            return False
        row = self.list.currentIndex().row()
        box = cell_box(tmap, item.row, item.col)
        changed = self.state.label_boxes([box], tmap.class_names[cls], tmap.class_colors[cls])
        if changed:
            self.state.notify(
                f"Patch {item.row + 1}, {item.col + 1} labelled "
                f"{class_label(tmap.class_names[cls])} (Ctrl+Z undoes)",
                6000,
            )
        self.refresh()  # labels_changed may be queued or throttled: drop the patch now
        following = self.current()
        if following is not None and following.cell == item.cell:
            row += 1  # still listed (its label did not count for it): go past it
        self.step_to(min(row, self.list.topLevelItemCount() - 1))
        return changed

    # --- following the state ------------------------------------------------------------

    def _on_map_changed(self, tmap: TissueMap | None) -> None:
        self.refresh()

    def _on_map_updated(self, tmap: TissueMap) -> None:
        if not self._timer.isActive():  # throttle, not debounce: a long job still shows
            self._timer.start()

    def _on_labels_changed(self, labels: LabelSet | None) -> None:
        self.refresh()

    def _on_selection_changed(self, cell: Cell | None) -> None:
        row = self._rows.get(cell) if cell is not None else None
        if row is None or row == self.list.currentIndex().row():
            return
        self.list.blockSignals(True)
        self.list.setCurrentItem(self.list.topLevelItem(row))
        self.list.blockSignals(False)

    def _on_current_changed(self, item: QTreeWidgetItem | None, _: object) -> None:
        patch = self.current()
        tmap = self.state.tissue_map
        if patch is None or tmap is None:
            return
        self.state.set_selection(patch.cell)
        x, y, w, h = tmap.patch_box(patch.row, patch.col)
        self.patchChosen.emit(x + w / 2, y + h / 2)

    def _on_threshold(self, value: float) -> None:
        self.refresh()
        self.thresholdChanged.emit(float(value))

    def _tree_item(self, tmap: TissueMap, item: ReviewItem, threshold: float) -> QTreeWidgetItem:
        name = tmap.class_names[item.cls]
        row = QTreeWidgetItem(
            [
                f"{item.row + 1}, {item.col + 1}",
                class_label(name),
                f"{item.probability * 100:.0f} %",
                f"{item.uncertainty:.2f}",
            ]
        )
        row.setIcon(1, swatch(tmap.class_colors[item.cls]))
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for col in (2, 3):
            row.setTextAlignment(col, right)
        row.setToolTip(0, "Row, column of the patch in the map (from 1, as the Patch panel)")
        if item.uncertainty < threshold:  # listed, but not counted as uncertain: greyed
            dim = self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
            for col in range(self.list.columnCount()):
                row.setForeground(col, dim)
        return row
