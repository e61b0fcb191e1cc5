"""The test results of a finished training run: accuracy, macro F1, per-class scores
and the confusion matrix (rows: true class, columns: predicted), as Qt tables.

A run tested on the canonical (random over tiles) split measures how well the model
knows the specimens it trained on. When a cross-validation by specimen was run beside
it (``unseen``: its summary, ``report["unseen_specimens"]``), the two figures stand
side by side at the top, each with what it means, and the per-class table and the
confusion matrix switch between the test split and the unseen specimens (every
fold's test tiles pooled); a per-fold table says which specimens each fold held out.
A class with no test tile is not scored: its scores read "–", never 0.

A fine-tuning run (``fine_tune``: report.json's ``fine_tune``) shows first how the
model did on the held-out labels, and on the held-out tiles mixed in, before and after
fine-tuning, and which classes it was not trained on; the per-class table and the
confusion matrix are the fine-tuned model's on all the held-out patches.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QRadioButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from histoviewer.classes import class_label
from histoviewer.gui.legend import ColorSwatch
from histoviewer.training.crossval import TILE_SPLIT_MEANING, UNSEEN_MEANING

_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_CENTER = Qt.AlignmentFlag.AlignCenter
_LEFT = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
_ROW_HEIGHT = 22
#: What an unscored figure shows, and why (a class with no tile in the tested set).
NOT_SCORED = "–"
NOT_SCORED_TIP = "No tiles of this class here: not scored"
#: The two views of the per-class table and the confusion matrix.
TEST_VIEW, UNSEEN_VIEW = "test", "unseen"
#: The rows of a fine-tuning run's before / after table, in order.
FINETUNE_GROUPS = {"labels": "Held-out labels", "tiles": "Held-out tiles"}
FINETUNE_TIPS = {
    "labels": "Labelled patches held out of every slide's labels: never trained on",
    "tiles": "Tiles mixed in from the tile dataset, held out: never trained on",
}
_BETTER, _WORSE = QColor(0, 110, 40), QColor(176, 0, 32)


def _table(rows: int, cols: int) -> QTableWidget:
    table = QTableWidget(rows, cols)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    table.verticalHeader().setDefaultSectionSize(_ROW_HEIGHT)
    return table


def _fit_height(table: QTableWidget) -> None:
    """Show every row without a scroll bar of its own (the panel scrolls instead)."""
    header = table.horizontalHeader().sizeHint().height()
    table.setFixedHeight(table.rowCount() * _ROW_HEIGHT + header + 2 * table.frameWidth() + 2)


def _item(text: str, align: Qt.AlignmentFlag = _RIGHT) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setTextAlignment(align)
    return item


def _score(value: float | None) -> QTableWidgetItem:
    if value is None:
        item = _item(NOT_SCORED, _CENTER)
        item.setToolTip(NOT_SCORED_TIP)
        return item
    return _item(f"{value:.3f}")


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def _figure_box(figure: QLabel, meaning: QLabel) -> QFrame:
    box = QFrame()
    box.setFrameShape(QFrame.Shape.StyledPanel)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(8, 6, 8, 6)
    layout.setSpacing(2)
    layout.addWidget(figure)
    layout.addWidget(meaning)
    layout.addStretch(1)
    return box


def _label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _meaning_label() -> QLabel:
    """Smaller, quieter text under a figure (the theme's placeholder colour)."""
    label = _label()
    font = QFont(label.font())
    if font.pointSizeF() > 0:
        font.setPointSizeF(font.pointSizeF() * 0.9)
    label.setFont(font)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


class ResultsPanel(QWidget):
    """Shows :func:`histoviewer.training.classification_metrics` output, and beside it
    the unseen-specimen figures of a cross-validation when there are some."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # The two figures of a run with a cross-validation, side by side.
        self.test_figure = _label()
        self.test_meaning = _meaning_label()
        self.unseen_figure = _label()
        self.unseen_meaning = _meaning_label()
        self.figures = QWidget()
        figures = QHBoxLayout(self.figures)
        figures.setContentsMargins(0, 0, 0, 0)
        figures.addWidget(_figure_box(self.test_figure, self.test_meaning), 1)
        figures.addWidget(_figure_box(self.unseen_figure, self.unseen_meaning), 1)
        self.figures.setVisible(False)

        # A fine-tuning run's scores before and after, and the classes not trained on.
        self.finetune_title = _label()
        self.finetune_table = _table(0, 3)
        self.finetune_table.setHorizontalHeaderLabels(
            ["Scored on", "Accuracy before → after", "Macro F1 before → after"]
        )
        self.finetune_table.verticalHeader().setVisible(False)
        header = self.finetune_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.untrained_label = _label()
        self.finetune_box = QWidget()
        finetune = QVBoxLayout(self.finetune_box)
        finetune.setContentsMargins(0, 0, 0, 4)
        finetune.addWidget(self.finetune_title)
        finetune.addWidget(self.finetune_table)
        finetune.addWidget(self.untrained_label)
        self.finetune_box.setVisible(False)

        self.summary = _label("The test results appear here when a run has finished.")
        # The model's scale and the run's notes, under the tables: the figures and the
        # tables are what a user looks for first.
        self.details = _label("")
        self.details.setVisible(False)

        # Which results the per-class table and the confusion matrix show.
        self.test_button = QRadioButton("Test split")
        self.unseen_button = QRadioButton("Unseen specimens")
        self.test_button.setChecked(True)
        self.view_group = QButtonGroup(self)
        self.view_group.addButton(self.test_button)
        self.view_group.addButton(self.unseen_button)
        self.test_button.toggled.connect(self._show_view)
        self.views = QWidget()
        views = QHBoxLayout(self.views)
        views.setContentsMargins(0, 0, 0, 0)
        views.addWidget(QLabel("Per class and confusion matrix of:"))
        views.addWidget(self.test_button)
        views.addWidget(self.unseen_button)
        views.addStretch(1)
        self.views.setVisible(False)

        self.per_class = _table(0, 5)
        self.per_class.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Images"])
        self.per_class.verticalHeader().setVisible(False)
        self.per_class.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.confusion = _table(0, 0)
        self.confusion.setToolTip("Rows: true class; columns: predicted class")
        self.per_class_title = QLabel("Per class")
        self.confusion_title = QLabel("Confusion matrix (rows: true class, columns: predicted)")
        self.confusion_title.setWordWrap(True)
        self.per_class_title.setWordWrap(True)
        # Titles in one row, tables in the next: a title that wraps keeps both tables'
        # rows level.
        tables = QGridLayout()
        tables.addWidget(self.per_class_title, 0, 0, Qt.AlignmentFlag.AlignBottom)
        tables.addWidget(self.confusion_title, 0, 1, Qt.AlignmentFlag.AlignBottom)
        tables.addWidget(self.per_class, 1, 0, Qt.AlignmentFlag.AlignTop)
        tables.addWidget(self.confusion, 1, 1, Qt.AlignmentFlag.AlignTop)
        tables.setColumnStretch(0, 1)
        tables.setColumnStretch(1, 1)

        self.per_fold = _table(0, 5)
        self.per_fold.setHorizontalHeaderLabels(
            ["Fold", "Specimens held out", "Tiles", "Accuracy", "Classes not tested"]
        )
        tips = (
            "Each fold's model was trained on the other folds' specimens",
            "The specimens this fold's model never saw: its test tiles",
            "Test tiles of this fold",
            "Accuracy of this fold's model on its held-out specimens",
            "Classes with no tile in this fold's specimens: this fold cannot test them",
        )
        for col, tip in enumerate(tips):
            self.per_fold.horizontalHeaderItem(col).setToolTip(tip)
        self.per_fold.verticalHeader().setVisible(False)
        header = self.per_fold.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col in (0, 2, 3, 4):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.per_fold_title = QLabel()
        self.per_fold_box = QWidget()
        per_fold_layout = QVBoxLayout(self.per_fold_box)
        per_fold_layout.setContentsMargins(0, 0, 0, 0)
        per_fold_layout.addWidget(self.per_fold_title)
        per_fold_layout.addWidget(self.per_fold)
        self.per_fold_box.setVisible(False)

        # Two figures, a per-fold table and eight classes are more than the dialog's
        # lower half holds: the panel scrolls as a whole, its tables never on their own.
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.finetune_box)
        layout.addWidget(self.figures)
        layout.addWidget(self.views)
        layout.addLayout(tables)
        layout.addWidget(self.details)
        layout.addWidget(self.per_fold_box)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(content)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.metrics: dict[str, Any] | None = None
        self.unseen: dict[str, Any] | None = None
        self.fine_tune: dict[str, Any] | None = None
        self._colors: list[tuple[int, int, int]] = []

    def clear(self) -> None:
        self.metrics = None
        self.summary.setVisible(True)
        self.details.clear()
        self.details.setVisible(False)
        self.unseen = None
        self.fine_tune = None
        self.finetune_box.setVisible(False)
        self.finetune_table.setRowCount(0)
        self.figures.setVisible(False)
        self.views.setVisible(False)
        self.per_fold_box.setVisible(False)
        self.summary.setText("The test results appear here when a run has finished.")
        self.per_class.setRowCount(0)
        self.confusion.setRowCount(0)
        self.confusion.setColumnCount(0)
        self.per_fold.setRowCount(0)

    def set_results(
        self,
        metrics: dict[str, Any],
        colors: list[tuple[int, int, int]] | None = None,
        *,
        best_epoch: int | None = None,
        scale: dict[str, Any] | None = None,
        notes: list[str] | None = None,
        unseen: dict[str, Any] | None = None,
        test_split: str = "tile",
        test_specimens: list[str] | None = None,
        fine_tune: dict[str, Any] | None = None,
    ) -> None:
        """Show ``metrics``; ``colors`` give each class its swatch; ``scale`` (the run's
        :func:`~histoviewer.training.trainer.scale_summary`) and ``notes`` go under the
        tables (``details``).

        ``unseen``: the unseen-specimen summary of a cross-validation run beside this
        run (report.json's ``unseen_specimens``), shown as a second figure, a view of
        the tables and a per-fold table. ``test_split``: the report's ``test_split``;
        "specimen" (a run that held out ``test_specimens``) says so in the headline.
        ``fine_tune``: report.json's ``fine_tune`` of a run that fine-tuned a model, shown
        as a before / after table above the per-class scores. The view shown is the test
        split's."""
        self.metrics = metrics
        self.unseen = unseen
        self.fine_tune = fine_tune
        names = list(metrics["class_names"])
        self._colors = list(colors or [(128, 128, 128)] * len(names))
        accuracy = _percent(metrics["accuracy"])
        figures = f"macro F1 {metrics['macro_f1']:.3f} · {metrics['n']:,} test images"
        if unseen is not None:
            # The figures stand in their boxes above; the model and scale come here.
            self._show_figures(metrics, unseen)
            lines = ["The model to use is the final model, trained on the canonical split"]
        elif fine_tune is not None:
            lines = [f"<b>Held-out accuracy after fine-tuning {accuracy}</b> · {figures}"]
        elif test_split == "specimen":
            which = f" ({', '.join(test_specimens)})" if test_specimens else ""
            lines = [f"<b>Test accuracy on unseen specimens{which}: {accuracy}</b> · {figures}"]
        else:
            lines = [f"<b>Test accuracy {accuracy}</b> · {figures}"]
        if best_epoch and unseen is not None:
            lines[0] += f": its epoch {best_epoch} (lowest validation loss)"
        elif best_epoch:
            lines[0] += f" · model of epoch {best_epoch} (lowest validation loss)"
        if scale:
            assumed = " (assumed)" if scale.get("mpp_assumed") else ""
            lines.append(
                f"Patches: {scale['patch_size']} px at {scale['mpp']:.4g} µm/px "
                f"({scale['patch_microns']:.4g} µm of tissue); tiles at "
                f"{scale['tile_mpp']:g} µm/px{assumed}"
            )
        lines += [f"<i>Note: {html.escape(note, quote=False)}</i>" for note in notes or []]
        # A single run's headline comes first; beside two figures (their own headline)
        # the final model's line joins the scale and notes under the tables.
        headline, rest = (lines[0], lines[1:]) if unseen is None else ("", lines)
        self.summary.setText(headline)
        self.summary.setVisible(bool(headline))
        self.details.setText("<br>".join(rest))
        self.details.setVisible(bool(rest))
        self.figures.setVisible(unseen is not None)
        self.views.setVisible(unseen is not None)
        self.finetune_box.setVisible(fine_tune is not None)
        if fine_tune is not None:
            self._show_fine_tune(fine_tune)
        if unseen is not None:
            self._show_per_fold(unseen)
        self.test_button.blockSignals(True)
        self.test_button.setChecked(True)
        self.test_button.blockSignals(False)
        self._show_view()

    def _show_figures(self, metrics: dict[str, Any], unseen: dict[str, Any]) -> None:
        self.test_figure.setText(
            f"<b>Test accuracy {_percent(metrics['accuracy'])}</b> (tiles of specimens seen "
            "in training)"
        )
        meaning = html.escape(TILE_SPLIT_MEANING, quote=False)
        self.test_meaning.setText(
            f"{meaning}<br>Macro F1 {metrics['macro_f1']:.3f} · {metrics['n']:,} test tiles."
        )
        folds = unseen["folds"]
        spread = (
            f"{unseen['fold_accuracy_mean'] * 100:.1f} ± {unseen['fold_accuracy_sd'] * 100:.1f} %"
        )
        self.unseen_figure.setText(
            f"<b>Unseen specimens {_percent(unseen['accuracy'])}</b> ({folds}-fold "
            f"cross-validation by specimen, per fold {spread})"
        )
        specimens = len(unseen.get("specimens") or [])
        untested = unseen.get("untested") or []
        missing = f" No tile of {', '.join(untested)}: not tested." if untested else ""
        self.unseen_meaning.setText(
            f"{html.escape(UNSEEN_MEANING, quote=False)}<br>Macro F1 {unseen['macro_f1']:.3f} · "
            f"{unseen['n']:,} tiles of {specimens} specimens.{html.escape(missing, quote=False)}"
        )

    def _show_fine_tune(self, fine_tune: dict[str, Any]) -> None:
        start = (fine_tune.get("start_model") or {}).get("name") or "the model"
        self.finetune_title.setText(
            f"<b>Fine-tuned from {html.escape(start, quote=False)}</b>: patches held out of "
            "training, scored with the model before and after fine-tuning"
        )
        compared = fine_tune.get("compared") or {}
        rows = [key for key in FINETUNE_GROUPS if key in compared]
        self.finetune_table.setRowCount(len(rows))
        for row, key in enumerate(rows):
            c = compared[key]
            name = _item(f"{FINETUNE_GROUPS[key]} ({c['n']:,})", _LEFT)
            name.setToolTip(FINETUNE_TIPS[key])
            accuracy = _change(c["before_accuracy"], c["after_accuracy"], _percent)
            f1 = _change(c["before_macro_f1"], c["after_macro_f1"], "{:.3f}".format)
            for col, item in enumerate((name, accuracy, f1)):
                self.finetune_table.setItem(row, col, item)
        _fit_height(self.finetune_table)
        self.finetune_table.setVisible(bool(rows))
        untrained = list(fine_tune.get("untrained_classes") or [])
        if untrained:
            names = ", ".join(class_label(n) for n in untrained)
            one = len(untrained) == 1
            self.untrained_label.setText(
                f"Not trained on {names} (no labels or tiles of "
                f"{'it' if one else 'them'}): the model keeps what it knew of "
                f"{'that class' if one else 'those classes'}."
            )
        else:
            self.untrained_label.setText("Every class of the model was trained on.")

    def finetune_rows(self) -> list[tuple[str, str, str]]:
        """The before / after table as text: (scored on, accuracy, macro F1)."""
        return [
            tuple(self.finetune_table.item(r, c).text() for c in range(3))
            for r in range(self.finetune_table.rowCount())
        ]

    def _show_per_fold(self, unseen: dict[str, Any]) -> None:
        rows = unseen.get("per_fold") or []
        self.per_fold_title.setText(
            f"Per fold: each model tested on the specimens it never saw (accuracy "
            f"{unseen['fold_accuracy_mean'] * 100:.1f} ± "
            f"{unseen['fold_accuracy_sd'] * 100:.1f} % across the {len(rows)} folds)"
        )
        self.per_fold.setRowCount(len(rows))
        for row, fold in enumerate(rows):
            specimens = ", ".join(fold.get("test_specimens") or [])
            untested = list(fold.get("untested") or [])
            untrained = list(fold.get("untrained") or [])
            missing = _item(", ".join(untested) or "none", _LEFT)
            if untrained:
                missing.setText(
                    f"{missing.text()}; never trained on {', '.join(untrained)}"
                    if untested
                    else f"never trained on {', '.join(untrained)}"
                )
                missing.setToolTip(
                    f"No training tile of {', '.join(untrained)} in this fold: its model "
                    "cannot learn them, and their test tiles count as errors"
                )
            cells = (
                _item(str(fold["fold"]), _CENTER),
                _item(specimens, _LEFT),
                _item(f"{fold['test_tiles']:,}"),
                _item(_percent(fold["accuracy"])),
                missing,
            )
            for col, item in enumerate(cells):
                self.per_fold.setItem(row, col, item)
            self.per_fold.item(row, 1).setToolTip(specimens)
        _fit_height(self.per_fold)

    # --- the two views ------------------------------------------------------------------

    def show_view(self, name: str) -> None:
        """Show the per-class table and the confusion matrix of the test split
        (:data:`TEST_VIEW`) or of the unseen specimens (:data:`UNSEEN_VIEW`, pooled over
        the folds; only with a cross-validation)."""
        if name not in (TEST_VIEW, UNSEEN_VIEW):
            raise ValueError(f"no view {name!r}")
        (self.unseen_button if name == UNSEEN_VIEW else self.test_button).setChecked(True)

    def view(self) -> str:
        """The view shown: :data:`TEST_VIEW` or :data:`UNSEEN_VIEW`."""
        unseen = self.unseen is not None and self.unseen_button.isChecked()
        return UNSEEN_VIEW if unseen else TEST_VIEW

    def _show_view(self) -> None:
        if self.metrics is None:
            return
        unseen = self.view() == UNSEEN_VIEW
        shown = self.unseen if unseen and self.unseen is not None else self.metrics
        if self.unseen is None and self.fine_tune is not None:
            self.per_class_title.setText("Per class, all held-out patches, after fine-tuning")
            self.confusion_title.setText(
                "Confusion matrix after fine-tuning (rows: true class, columns: predicted)"
            )
        elif self.unseen is None:
            self.per_class_title.setText("Per class")
            self.confusion_title.setText("Confusion matrix (rows: true class, columns: predicted)")
        elif unseen:
            self.per_class_title.setText(
                f"Per class, unseen specimens (all {self.unseen['folds']} folds' test tiles)"
            )
            self.confusion_title.setText(
                "Confusion matrix, unseen specimens (rows: true, columns: predicted)"
            )
        else:
            self.per_class_title.setText("Per class, test split")
            self.confusion_title.setText(
                "Confusion matrix, test split (rows: true, columns: predicted)"
            )
        self.per_fold_box.setVisible(unseen)
        self._fill_tables(shown)

    def _fill_tables(self, metrics: dict[str, Any]) -> None:
        names = list(metrics["class_names"])
        colors = self._colors if len(self._colors) == len(names) else [(128, 128, 128)] * len(names)
        self.per_class.setRowCount(len(names))
        for row, (entry, color) in enumerate(zip(metrics["per_class"], colors, strict=True)):
            self.per_class.setCellWidget(row, 0, _class_cell(entry["name"], color))
            for col, key in enumerate(("precision", "recall", "f1"), start=1):
                self.per_class.setItem(row, col, _score(entry.get(key)))
            self.per_class.setItem(row, 4, _item(f"{entry['support']:,}"))
        self.per_class.resizeColumnsToContents()
        self.per_class.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        _fit_height(self.per_class)

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
        _fit_height(self.confusion)

    # --- what the tables show, as text (tests, accessibility) ---------------------------

    def per_class_rows(self) -> list[tuple[str, str, str, str, str]]:
        """The per-class table as text: (class, precision, recall, F1, images)."""
        rows = []
        for r in range(self.per_class.rowCount()):
            label = self.per_class.cellWidget(r, 0).findChild(QLabel, "class_name")
            cells = [self.per_class.item(r, c).text() for c in range(1, 5)]
            rows.append((label.text(), *cells))
        return rows

    def per_class_tooltips(self) -> list[tuple[str, str, str]]:
        """The tooltips of the precision, recall and F1 cells, row by row."""
        return [
            tuple(self.per_class.item(r, c).toolTip() for c in range(1, 4))
            for r in range(self.per_class.rowCount())
        ]

    def confusion_values(self) -> list[list[int]]:
        """The confusion matrix shown (of the view shown)."""
        return [
            [int(self.confusion.item(r, c).text()) for c in range(self.confusion.columnCount())]
            for r in range(self.confusion.rowCount())
        ]

    def per_fold_rows(self) -> list[tuple[str, str, str, str, str]]:
        """The per-fold table as text: (fold, specimens, tiles, accuracy, not tested)."""
        return [
            tuple(self.per_fold.item(r, c).text() for c in range(5))
            for r in range(self.per_fold.rowCount())
        ]


def _change(before: float, after: float, shown: Any) -> QTableWidgetItem:
    """'50.0 % → 100.0 %': green when better, red when worse (beyond rounding)."""
    item = _item(f"{shown(before)} → {shown(after)}", _CENTER)
    if after - before > 0.0005:
        item.setForeground(_BETTER)
    elif before - after > 0.0005:
        item.setForeground(_WORSE)
    return item


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
