"""Model > Model Info: what the model in use is, how good it is, and how it sees a slide.

What a user asks first is on top: the model's name (by its folder or file, see
:func:`histoviewer.model.describe.model_display_name`) and file, a warning when its
recorded test accuracy is weak, then architecture, test accuracy, training data, date,
input scale and fingerprint (:func:`~histoviewer.model.describe.model_summary`), then
each class with its colour swatch. The full configuration
(:func:`histoviewer.model.model_info_summary`) is in the Details section below, folded
away until asked for. A checkpoint without metadata (the recipe's ``.pth.tar``) says
that its classes and preprocessing are assumed.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.gui.legend import ColorSwatch
from histoviewer.model import model_info_summary
from histoviewer.model.describe import (
    WEAK_ACCURACY,
    SummaryRow,
    accuracy_note,
    model_display_name,
    model_summary,
    recorded_test_accuracy,
    weak_model_warning,
)

if TYPE_CHECKING:
    from histoviewer.model import Classifier

# Rows shown elsewhere in the dialog: name and file in the title, classes with their
# swatches, normalisation and the metadata note in the details and the note.
_NOT_IN_SUMMARY = {"name", "file", "classes", "normalisation", "metadata"}

_WARNING_STYLE = (
    "QLabel { background: #fdecea; color: #8a1c1c; border: 1px solid #e6a5a0;"
    " border-radius: 4px; padding: 6px; }"
)
_WEAK_STYLE = "QLabel { color: #b3261e; font-weight: bold; }"
_GOOD_STYLE = "QLabel { font-weight: bold; }"


class ModelInfoDialog(QDialog):
    """Describes a :class:`~histoviewer.model.Classifier` (see :meth:`set_model`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model Info")
        self.rows: list[SummaryRow] = []
        #: The value label of each row in the summary, by :attr:`SummaryRow.key`.
        self.summary_labels: dict[str, QLabel] = {}
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning = QLabel()
        self.warning.setObjectName("weak_model_warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(_WARNING_STYLE)
        self.accuracy_note = QLabel()
        self.accuracy_note.setObjectName("accuracy_note")
        self.accuracy_note.setWordWrap(True)
        self.accuracy_note.setEnabled(False)  # greyed: a remark, not an alarm
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.summary_box = QWidget()
        self.summary_grid = QGridLayout(self.summary_box)
        self.summary_grid.setContentsMargins(0, 0, 0, 0)
        self.summary_grid.setColumnStretch(1, 1)
        self.classes_box = QGroupBox("Classes")
        self.classes_grid = QGridLayout(self.classes_box)
        self.details_button = QToolButton()
        self.details_button.setText("Details (full configuration)")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setAutoRaise(True)
        self.details_button.toggled.connect(self.show_details)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.warning)
        layout.addWidget(self.accuracy_note)
        layout.addWidget(self.note)
        layout.addWidget(self.summary_box)
        layout.addWidget(self.classes_box)
        layout.addWidget(self.details_button)
        layout.addWidget(self.details, 10)
        layout.addStretch(1)
        layout.addWidget(buttons)
        self.show_details(False)
        self.resize(640, 620)

    def show_details(self, shown: bool) -> None:
        """Unfold (or fold away) the full configuration below the summary."""
        if self.details_button.isChecked() != shown:
            self.details_button.setChecked(shown)  # calls back here
            return
        self.details_button.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )
        self.details.setVisible(shown)

    def set_model(
        self, classifier: Classifier | None, path: str | os.PathLike | None = None
    ) -> None:
        """Describe ``classifier`` (loaded from ``path``), or say that none is loaded."""
        for grid in (self.classes_grid, self.summary_grid):
            while grid.count():
                item = grid.takeAt(0)
                if item.widget() is not None:
                    item.widget().hide()  # at once: deleteLater waits for the event loop
                    item.widget().deleteLater()
        self.summary_labels = {}
        if classifier is None:
            self.rows = []
            self.title.setText("<b>No model is loaded.</b>")
            self.note.setText(
                "Model > Load Model... loads one; Model > Train New Model trains one."
            )
            self.note.setVisible(True)
            for widget in (self.warning, self.accuracy_note, self.summary_box, self.classes_box):
                widget.setVisible(False)
            self.details_button.setVisible(False)
            self.show_details(False)
            self.details.clear()
            return
        info = classifier.info
        path = os.fspath(path) if path else None
        self.rows = model_summary(info, classifier.fingerprint, path)
        name = model_display_name(info, path)
        where = path or "not saved to a file (in memory)"
        self.title.setText(f"<b>{html.escape(name)}</b><br>{html.escape(where)}")
        self.title.setToolTip(f"Name in the model's metadata: {info.name}" if info.name else "")
        warning = weak_model_warning(info)
        self.warning.setText(f"⚠ {warning}" if warning else "")
        self.warning.setVisible(warning is not None)
        note = accuracy_note(info)
        self.accuracy_note.setText(note or "")
        self.accuracy_note.setVisible(note is not None)
        assumed = info.training.get("metadata") == "assumed (recipe)"
        self.note.setText(
            "This file carries no metadata: the recipe's eight classes, 150 px patches at "
            "0.495 µm/px and ImageNet normalisation are assumed."
            if assumed
            else ""
        )
        self.note.setVisible(assumed)
        self._fill_summary(recorded_test_accuracy(info))
        self.summary_box.setVisible(True)
        self.classes_box.setVisible(True)
        self.details_button.setVisible(True)
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

    def _fill_summary(self, accuracy: float | None) -> None:
        for row in self.rows:
            if row.key in _NOT_IN_SUMMARY:
                continue
            value = QLabel(row.value)
            value.setObjectName(f"summary_{row.key}")
            value.setWordWrap(True)
            value.setTextFormat(Qt.TextFormat.PlainText)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            if row.tooltip:
                value.setToolTip(row.tooltip)
            if row.key == "test_accuracy":
                if accuracy is None:
                    value.setEnabled(False)
                else:
                    value.setStyleSheet(_WEAK_STYLE if accuracy < WEAK_ACCURACY else _GOOD_STYLE)
            label = QLabel(f"{row.label}:")
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            if row.tooltip:
                label.setToolTip(row.tooltip)
            line = len(self.summary_labels)
            self.summary_grid.addWidget(label, line, 0)
            self.summary_grid.addWidget(value, line, 1)
            self.summary_labels[row.key] = value

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) of each summary row in the order shown, title rows first."""
        return [(row.label, row.value) for row in self.rows]

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
