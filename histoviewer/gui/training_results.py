"""The test results of a finished training run: accuracy, macro F1, per-class scores
and the confusion matrix (rows: true class, columns: predicted), as Qt tables."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.gui.legend import ColorSwatch, class_label

_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_CENTER = Qt.AlignmentFlag.AlignCenter


def _table(rows: int, cols: int) -> QTableWidget:
    table = QTableWidget(rows, cols)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    table.verticalHeader().setDefaultSectionSize(22)
    return table


def _item(text: str, align: Qt.AlignmentFlag = _RIGHT) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setTextAlignment(align)
    return item


class ResultsPanel(QWidget):
    """Shows :func:`histoviewer.training.classification_metrics` output."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("The test results appear here when a run has finished.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.per_class = _table(0, 5)
        self.per_class.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Images"])
        self.per_class.verticalHeader().setVisible(False)
        self.per_class.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.confusion = _table(0, 0)
        self.confusion.setToolTip("Rows: true class; columns: predicted class")
        confusion_box = QVBoxLayout()
        confusion_box.addWidget(QLabel("Confusion matrix (rows: true class, columns: predicted)"))
        confusion_box.addWidget(self.confusion)
        per_class_box = QVBoxLayout()
        per_class_box.addWidget(QLabel("Per class"))
        per_class_box.addWidget(self.per_class)
        tables = QHBoxLayout()
        tables.addLayout(per_class_box, 1)
        tables.addLayout(confusion_box, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(tables, 1)
        self.metrics: dict[str, Any] | None = None

    def clear(self) -> None:
        self.metrics = None
        self.summary.setText("The test results appear here when a run has finished.")
        self.per_class.setRowCount(0)
        self.confusion.setRowCount(0)
        self.confusion.setColumnCount(0)

    def set_results(
        self,
        metrics: dict[str, Any],
        colors: list[tuple[int, int, int]] | None = None,
        *,
        best_epoch: int | None = None,
        scale: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """Show ``metrics``; ``colors`` give each class its swatch; ``scale`` (the run's
        :func:`~histoviewer.training.trainer.scale_summary`) and ``notes`` go under the
        headline."""
        self.metrics = metrics
        names = list(metrics["class_names"])
        colors = colors or [(128, 128, 128)] * len(names)
        text = (
            f"<b>Test accuracy {metrics['accuracy'] * 100:.1f} %</b> · macro F1 "
            f"{metrics['macro_f1']:.3f} · {metrics['n']:,} test images"
        )
        if best_epoch:
            text += f" · model of epoch {best_epoch} (lowest validation loss)"
        if scale:
            assumed = " (assumed)" if scale.get("mpp_assumed") else ""
            text += (
                f"<br>Patches: {scale['patch_size']} px at {scale['mpp']:.4g} µm/px "
                f"({scale['patch_microns']:.4g} µm of tissue); tiles at "
                f"{scale['tile_mpp']:g} µm/px{assumed}"
            )
        for note in notes or []:
            text += f"<br><i>Note: {html.escape(note, quote=False)}</i>"
        self.summary.setText(text)

        self.per_class.setRowCount(len(names))
        for row, (entry, color) in enumerate(zip(metrics["per_class"], colors, strict=True)):
            self.per_class.setCellWidget(row, 0, _class_cell(entry["name"], color))
            for col, key in enumerate(("precision", "recall", "f1"), start=1):
                self.per_class.setItem(row, col, _item(f"{entry[key]:.3f}"))
            self.per_class.setItem(row, 4, _item(f"{entry['support']:,}"))
        self.per_class.resizeColumnsToContents()
        self.per_class.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)

        matrix = metrics["confusion_matrix"]
        n = len(names)
        self.confusion.setRowCount(n)
        self.confusion.setColumnCount(n)
        # Numbered columns keep eight classes narrow enough to sit beside the scores.
        self.confusion.setHorizontalHeaderLabels([str(i + 1) for i in range(n)])
        self.confusion.setVerticalHeaderLabels([f"{i + 1} {name}" for i, name in enumerate(names)])
        for c, name in enumerate(names):
            self.confusion.horizontalHeaderItem(c).setToolTip(f"predicted {name}")
        for r in range(n):
            total = max(1, sum(matrix[r]))
            for c in range(n):
                value = int(matrix[r][c])
                item = _item(str(value), _CENTER)
                share = value / total
                # Row-normalised shading: the diagonal is dark where a class is recognised.
                shade = QColor.fromRgbF(0.0, 0.45, 0.70, 0.08 + 0.8 * share) if value else None
                if shade is not None:
                    item.setBackground(shade)
                    if share > 0.55:
                        item.setForeground(QColor("white"))
                item.setToolTip(f"true {names[r]}, predicted {names[c]}: {value} ({share:.0%})")
                self.confusion.setItem(r, c, item)
        for c in range(n):
            self.confusion.setColumnWidth(c, 38)

    def per_class_rows(self) -> list[tuple[str, str, str, str, str]]:
        """The per-class table as text: (class, precision, recall, F1, images)."""
        rows = []
        for r in range(self.per_class.rowCount()):
            label = self.per_class.cellWidget(r, 0).findChild(QLabel, "class_name")
            cells = [self.per_class.item(r, c).text() for c in range(1, 5)]
            rows.append((label.text(), *cells))
        return rows

    def confusion_values(self) -> list[list[int]]:
        return [
            [int(self.confusion.item(r, c).text()) for c in range(self.confusion.columnCount())]
            for r in range(self.confusion.rowCount())
        ]


def _class_cell(name: str, color: tuple[int, int, int]) -> QWidget:
    cell = QWidget()
    row = QHBoxLayout(cell)
    row.setContentsMargins(4, 0, 4, 0)
    row.addWidget(ColorSwatch(color))
    label = QLabel(class_label(name))
    label.setObjectName("class_name")
    label.setToolTip(name)
    row.addWidget(label, 1)
    return cell
