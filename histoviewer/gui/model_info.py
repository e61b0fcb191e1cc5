"""Model > Model Info: what the model in use is and how it sees a slide.

Shows the file, each class with its colour swatch, and the text of
:func:`histoviewer.model.model_info_summary` (architecture, input size, scale,
normalisation, training data and metrics). A checkpoint without metadata (the
recipe's ``.pth.tar``) says that its classes and preprocessing are assumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from histoviewer.gui.legend import ColorSwatch, class_label
from histoviewer.model import model_info_summary

if TYPE_CHECKING:
    from histoviewer.model import Classifier


class ModelInfoDialog(QDialog):
    """Describes a :class:`~histoviewer.model.Classifier` (see :meth:`set_model`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model Info")
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.classes_box = QGroupBox("Classes")
        self.classes_grid = QGridLayout(self.classes_box)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.note)
        layout.addWidget(self.classes_box)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.resize(620, 560)

    def set_model(self, classifier: Classifier | None, path: str | None = None) -> None:
        """Describe ``classifier`` (loaded from ``path``), or say that none is loaded."""
        while self.classes_grid.count():
            item = self.classes_grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        if classifier is None:
            self.title.setText("<b>No model is loaded.</b>")
            self.note.setText(
                "Model > Load Model... loads one; Model > Train New Model trains one."
            )
            self.note.setVisible(True)
            self.classes_box.setVisible(False)
            self.details.clear()
            return
        info = classifier.info
        self.title.setText(
            f"<b>{info.name or info.arch}</b><br>{path or 'not saved to a file (in memory)'}"
        )
        assumed = info.training.get("metadata") == "assumed (recipe)"
        self.note.setText(
            "This file carries no metadata: the recipe's eight classes, 150 px patches at "
            "0.495 µm/px and ImageNet normalisation are assumed."
            if assumed
            else ""
        )
        self.note.setVisible(assumed)
        self.classes_box.setVisible(True)
        for row, (name, color) in enumerate(zip(info.class_names, info.class_colors, strict=True)):
            self.classes_grid.addWidget(ColorSwatch(color), row, 0)
            label = QLabel(class_label(name))
            label.setObjectName(f"class_{row}")
            self.classes_grid.addWidget(label, row, 1)
            rgb = QLabel(f"{name} · rgb{tuple(color)}")
            rgb.setEnabled(False)
            self.classes_grid.addWidget(rgb, row, 2)
        self.classes_grid.setColumnStretch(2, 1)
        self.details.setPlainText(model_info_summary(classifier))

    def class_rows(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(label, swatch colour) of each class as shown."""
        rows = []
        for r in range(self.classes_grid.rowCount()):
            swatch = self.classes_grid.itemAtPosition(r, 0)
            label = self.classes_grid.itemAtPosition(r, 1)
            if swatch is None or label is None:
                continue
            rows.append((label.widget().text(), swatch.widget().color))
        return rows
