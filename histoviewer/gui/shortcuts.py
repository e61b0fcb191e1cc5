"""Help > Keyboard Shortcuts: every shortcut and mouse gesture of the main window."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.gui.widgets import resize_within_screen

#: What the mouse and keys do on the slide (not QActions).
GESTURES = (
    ("Drag", "Pan the slide"),
    ("Arrow keys", "Pan the slide"),
    ("Mouse wheel", "Zoom about the pointer"),
    ("Click a mapped patch", "Show its eight class probabilities (Patch panel)"),
    ("Hover a mapped patch", "Its class and probability as a tooltip"),
    ("Right-click", "Label the patch, and mapping commands"),
    ("Shift+drag", "Select every patch the rectangle touches (Ctrl+Shift+drag adds)"),
    ("Shift+click", "Add a patch to the selection, or drop it"),
    ("1-8 with patches selected", "Label them class 1-8 (the legend's order)"),
    ("0, Delete with patches selected", "Remove their labels"),
    ("Review panel: Up / Down", "Step through the uncertain patches; the view follows"),
    ("Review panel: Enter", "Accept the model's class as the label, then the next"),
    ("Review panel: 1-8", "Label the patch class 1-8 instead"),
    ("Esc", "Cancel choosing a region (Map Region); select no patch"),
    ("Drop a file on the window", "Open a slide, or load a model file"),
)


def research_use_text() -> str:
    return (
        "For research use only. Not for use in diagnostic procedures: every map is a "
        "model's estimate and must be checked by a pathologist."
    )


def shortcut_rows(actions: Iterable[QAction]) -> list[tuple[str, str]]:
    """(keys, what they do) for every action with a shortcut, in menu order, once each."""
    rows, seen = [], set()
    for action in actions:
        keys = action.shortcut()
        if keys.isEmpty():
            continue
        text = keys.toString(QKeySequence.SequenceFormat.NativeText)
        what = action.text().replace("&", "").removesuffix("...")
        if (text, what) not in seen:
            seen.add((text, what))
            rows.append((text, what))
    return rows


class ShortcutsDialog(QDialog):
    """A table of the window's keyboard shortcuts and mouse gestures."""

    def __init__(self, actions: Iterable[QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard Shortcuts")
        rows = shortcut_rows(actions) + list(GESTURES)
        self.table = QTableWidget(len(rows), 2, self)
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for i, (keys, what) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(keys))
            self.table.setItem(i, 1, QTableWidgetItem(what))
        rows_height = self.fontMetrics().height() + 8
        self.table.verticalHeader().setDefaultSectionSize(rows_height)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        note = QLabel(research_use_text())
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(note)
        layout.addWidget(buttons)
        resize_within_screen(self, 520, 640)

    def rows(self) -> list[tuple[str, str]]:
        return [
            (self.table.item(i, 0).text(), self.table.item(i, 1).text())
            for i in range(self.table.rowCount())
        ]
