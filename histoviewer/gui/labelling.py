"""Labelling patches on the slide: the pathologist says "this patch is that class".

:class:`LabelController` keeps the open slide's labels (a
:class:`~histoviewer.labels.store.LabelSet` in the
:class:`~histoviewer.viewer_state.ViewerState`) loaded from and saved to a
:class:`~histoviewer.labels.store.LabelStore`, and gives the ways to change them:

- selecting: a click selects one patch (the window does that); Shift+drag selects
  every map cell the rectangle touches (Ctrl+Shift+drag adds them to the selection),
  Shift+click adds or drops one, Esc selects nothing. The
  multi-selection lives here (the state knows one selected patch: the one the Patch
  panel describes) and is tinted on the view (:class:`CellSelectionLayer`);
- labelling the selection: keys 1-8 (class N of the map's model), 0 / Delete /
  Backspace to remove, the view's context menu (Label as, Remove Label) and the
  Patch panel's "Label as" row. While patches are selected the number keys label
  them; otherwise 1-4 keep choosing a magnification and 0 fits the slide;
- Undo / Redo, File > Import / Export Labels (QuPath GeoJSON).

Labels are stored as the cell's patch box (``cell_box``) with the class *name* and
colour. Every change is saved at once (atomically); a slide without a file (the
demo) keeps its labels in memory only. Each labelled patch is framed in its class
colour by a :class:`LabelLayer`, also without a map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QKeyEvent
from PySide6.QtWidgets import QLabel, QMenu

from histoviewer.classes import class_label
from histoviewer.errors import StorageError
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.gui.label_layer import (
    CELL_SELECTION_Z,
    LABEL_Z,
    CellSelectionLayer,
    LabelLayer,
)
from histoviewer.gui.probabilities import PatchPanel, color_icon
from histoviewer.gui.slideview import SlideView
from histoviewer.labels.geojson import labels_on_slide, read_geojson, write_labels_geojson
from histoviewer.labels.store import (
    Box,
    Color,
    LabelError,
    LabelSet,
    LabelStore,
    PatchLabel,
    cell_box,
    labels_by_cell,
)
from histoviewer.mapping.quantities import patches_text
from histoviewer.mapping.tissue_map import slide_identity
from histoviewer.viewer_state import ViewerState

if TYPE_CHECKING:
    from histoviewer.mapping.tissue_map import TissueMap
    from histoviewer.slide import SlideReader

log = logging.getLogger(__name__)

Cell = tuple[int, int]

GEOJSON_OPEN_FILTER = "GeoJSON (*.geojson *.json *.geojson.gz *.json.gz);;All files (*)"
GEOJSON_SAVE_FILTER = "GeoJSON (*.geojson);;Compressed GeoJSON (*.geojson.gz);;JSON (*.json)"
_GEOJSON_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")
SELECT_FIRST_TEXT = "Select patches on the map first: click one, or Shift+drag over several."

_DIGITS = [getattr(Qt.Key, f"Key_{i}") for i in range(1, 10)]
_REMOVE_KEYS = (Qt.Key.Key_0, Qt.Key.Key_Delete, Qt.Key.Key_Backspace)


def labelled_text(count: int) -> str:
    """'1 labelled patch', '42 labelled patches'."""
    return f"{count:,} labelled patch" + ("" if count == 1 else "es")


def cells_in(tmap: TissueMap, rect: QRectF) -> list[Cell]:
    """The cells of ``tmap`` that the level-0 rectangle ``rect`` touches, row by row."""
    ex, ey = tmap.cell_edges()
    c0 = max(0, int(np.searchsorted(ex, rect.left(), side="right")) - 1)
    c1 = min(tmap.cols - 1, int(np.searchsorted(ex, rect.right(), side="left")) - 1)
    r0 = max(0, int(np.searchsorted(ey, rect.top(), side="right")) - 1)
    r1 = min(tmap.rows - 1, int(np.searchsorted(ey, rect.bottom(), side="left")) - 1)
    # A rectangle without height (a drag along a row) still touches the cells it lies in.
    r1, c1 = max(r1, min(r0, tmap.rows - 1)), max(c1, min(c0, tmap.cols - 1))
    return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


class LabelController(QObject):
    """Loads, saves, selects, draws and changes the open slide's patch labels.

    ``view`` gets the label and selection layers, its keys and context menu;
    ``panel`` (the Patch panel) shows the selection's labels and offers "Label as".
    :attr:`count_label` is a status-bar widget saying how many patches are labelled.

    Signal ``cellsSelected(list)``: the multi-selection (Shift+drag, Shift+click,
    :meth:`select_cells`) changed; its cells, sorted (row, col) tuples, empty when it
    was cleared. A plain click's single patch is the state's selection, not this.
    """

    cellsSelected = Signal(list)

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        store: LabelStore,
        view: SlideView,
        panel: PatchPanel,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.dialogs = dialogs
        self.store = store
        self.view = view
        self.panel = panel
        self.layer = LabelLayer()
        view.add_layer(self.layer, LABEL_Z)
        self.selection_layer = CellSelectionLayer()
        view.add_layer(self.selection_layer, CELL_SELECTION_Z)
        self.count_label = QLabel()
        self.count_label.setVisible(False)
        self._cells: set[Cell] = set()  # the multi-selection; empty: state.selection only
        self._announced: frozenset[Cell] = frozenset()  # the last cellsSelected
        self._by_cell: dict[Cell, list[PatchLabel]] = {}
        self._persist = False  # the open slide has a file to key its labels by
        self._quiet = False  # loading: redraw once, afterwards
        self._save_failed = False

        state.slide_changed.connect(self._on_slide_changed)
        state.labels_changed.connect(self._on_labels_changed)
        state.map_changed.connect(self._on_map_changed)
        state.model_changed.connect(lambda *args: self._redraw())
        state.selection_changed.connect(self._on_selection_changed)
        view.clicked.connect(self._on_plain_click)
        view.patchesSelected.connect(self.select_area)
        view.shiftClicked.connect(self._on_shift_click)
        panel.labelChosen.connect(self.label_selection)
        view.installEventFilter(self)
        view.viewport().installEventFilter(self)

    # --- selection ----------------------------------------------------------------------

    def selected_cells(self) -> list[Cell]:
        """The patches a label goes to: the multi-selection, else the selected patch."""
        if self._cells:
            return sorted(self._cells)
        return [self.state.selection] if self.state.selection is not None else []

    def select_cells(self, cells: list[Cell] | set[Cell], *, add: bool = False) -> None:
        """Select ``cells`` of the map shown (``add``: to those selected already); the
        Patch panel describes the first. Cells outside the map are left out."""
        tmap = self.state.tissue_map
        if tmap is None:
            return
        chosen = {(int(r), int(c)) for r, c in cells if 0 <= r < tmap.rows and 0 <= c < tmap.cols}
        if add:
            chosen |= set(self.selected_cells())
        self._cells = chosen
        anchor = self.state.selection
        if anchor not in chosen:
            anchor = min(chosen) if chosen else None
        self.state.set_selection(anchor)
        self._show_selection()

    def select_area(self, rect: QRectF, add: bool = False) -> None:
        """Shift+drag: select every cell the level-0 ``rect`` touches (``add``: add them
        to the selection)."""
        tmap = self.state.tissue_map
        if tmap is None:
            self.state.notify("Map the slide first: labels are given to the map's patches.")
            return
        cells = cells_in(tmap, rect)
        if cells:
            self.select_cells(cells, add=add)

    def clear_selection(self) -> None:
        """Select nothing (Esc)."""
        self._cells.clear()
        self.state.set_selection(None)
        self._show_selection()

    def _on_shift_click(self, x: float, y: float) -> None:
        tmap = self.state.tissue_map
        cell = tmap.patch_at(x, y) if tmap is not None else None
        if cell is None:
            return
        cells = set(self.selected_cells())
        cells ^= {cell}
        self._cells = cells
        if cell in cells:
            self.state.set_selection(cell)
        elif self.state.selection not in cells:
            self.state.set_selection(min(cells) if cells else None)
        self._show_selection()

    def _on_plain_click(self, x: float, y: float) -> None:
        if self._cells:
            self._cells.clear()
            self._show_selection()

    def _on_selection_changed(self, cell: Cell | None) -> None:
        if self._cells and (cell is None or cell not in self._cells):
            self._cells.clear()
        self._show_selection()

    def _show_selection(self) -> None:
        """Tint the multi-selection and show its labels in the Patch panel."""
        tmap = self.state.tissue_map
        if tmap is None or not self._cells:
            self.selection_layer.set_boxes([])
        else:
            ex, ey = tmap.cell_edges()
            self.selection_layer.set_boxes(
                [(ex[c], ey[r], ex[c + 1], ey[r + 1]) for r, c in self._cells]
            )
        if frozenset(self._cells) != self._announced:  # every change passes here
            self._announced = frozenset(self._cells)
            self.cellsSelected.emit(sorted(self._cells))
        cells = self.selected_cells()
        if tmap is None or not cells:
            return  # the window has cleared the Patch panel
        groups: dict[str, int] = {}
        for cell in cells:
            found = self._by_cell.get(cell)
            name = found[-1].name if found else ""
            groups[name] = groups.get(name, 0) + 1
        colors = self._colors()
        order = {n: i for i, n in enumerate(tmap.class_names)}
        entries = [
            (class_label(name) if name else "none", colors.get(name) if name else None, n)
            for name, n in sorted(groups.items(), key=lambda g: (not g[0], order.get(g[0], 99)))
        ]
        self.panel.show_label(entries, len(cells))

    # --- labelling ----------------------------------------------------------------------

    def label_selection(self, index: int | None) -> bool:
        """Label the selected patches class ``index`` of the map's model (None: remove
        their labels). One undo step; False when nothing was selected or changed."""
        tmap, labels = self.state.tissue_map, self.state.labels
        cells = self.selected_cells()
        if tmap is None or labels is None or not cells:
            self.state.notify(SELECT_FIRST_TEXT, 6000)
            return False
        wanted = [cell_box(tmap, r, c) for r, c in cells]
        present = [lab.box for cell in cells for lab in self._by_cell.get(cell, ())]
        if index is None:
            changed = self.state.label_boxes(list(dict.fromkeys(present + wanted)), None)
            if changed:
                self._tell(f"Label removed from {patches_text(len(cells))}")
            return changed
        if not 0 <= index < len(tmap.class_names):
            return False
        name, color = tmap.class_names[index], tmap.class_colors[index]
        # A label of the same cell with another box (another stride, imported) goes, in
        # the same undo step.
        changes: dict[Box, str | None] = dict.fromkeys(present)
        changes.update(dict.fromkeys(wanted, name))
        changed = self.state.apply_labels(changes, {name: color})
        if changed:
            self._tell(f"{patches_text(len(cells)).capitalize()} labelled {class_label(name)}")
        return changed

    def undo(self) -> bool:
        """Edit > Undo: take back the last label change."""
        done = self.state.undo_labels()
        if done:
            self._tell("Label change undone")
        return done

    def redo(self) -> bool:
        """Edit > Redo: make the last undone label change again."""
        done = self.state.redo_labels()
        if done:
            self._tell("Label change redone")
        return done

    def _tell(self, what: str) -> None:
        labels = self.state.labels
        count = len(labels) if labels is not None else 0
        self.state.notify(f"{what} · {labelled_text(count)} on this slide (Ctrl+Z undoes)")

    # --- keys and context menu ------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress) and isinstance(
            event, QKeyEvent
        ):
            act = self._key_command(event)
            if act is not None:
                # ShortcutOverride accepted: the key reaches us, not a window shortcut
                # (1-4 are the magnifications while nothing is selected).
                event.accept()
                if kind == QEvent.Type.KeyPress:
                    act()
                return True
        elif kind == QEvent.Type.ContextMenu and isinstance(event, QContextMenuEvent):
            viewport = self.view.viewport()
            pos = event.pos() if watched is viewport else viewport.mapFrom(self.view, event.pos())
            point = self.view.map_to_slide(pos)
            menu = self.context_menu(point.x(), point.y())
            menu.exec(event.globalPos())
            menu.deleteLater()
            return True
        return super().eventFilter(watched, event)

    def _key_command(self, event: QKeyEvent) -> Callable[[], object] | None:
        """What a key pressed on the view does to the labels (None: not ours)."""
        extra = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if extra != Qt.KeyboardModifier.NoModifier or self.state.slide is None:
            return None
        if self.view.is_selecting_region():
            return None
        key = event.key()
        cells = self.selected_cells()
        tmap = self.state.tissue_map
        if not cells or tmap is None:
            return None
        if key == Qt.Key.Key_Escape:
            return self.clear_selection
        if key in _DIGITS and _DIGITS.index(key) < len(tmap.class_names):
            index = _DIGITS.index(key)
            return lambda: self.label_selection(index)
        if key in _REMOVE_KEYS:
            return lambda: self.label_selection(None)
        return None

    def context_menu(self, x: float, y: float) -> QMenu:
        """The view's right-click menu at level-0 (x, y): Label as and Remove Label for
        the patch there (selected first, unless it is among the selected ones), then
        the view's own actions (the mapping commands). The caller shows and deletes it."""
        menu = QMenu(self.view)
        tmap = self.state.tissue_map
        cell = tmap.patch_at(x, y) if tmap is not None else None
        if cell is not None and cell not in self.selected_cells():
            self._cells.clear()
            self.state.set_selection(cell)
            self._show_selection()
        cells = self.selected_cells()
        if tmap is not None and cell is not None and cells:
            title = "Label as" if len(cells) == 1 else f"Label {len(cells)} Patches as"
            submenu = menu.addMenu(title)
            for i, (name, color) in enumerate(
                zip(tmap.class_names, tmap.class_colors, strict=True)
            ):
                key = f"\t{i + 1}" if i < 9 else ""
                action = submenu.addAction(color_icon(color), f"{class_label(name)}{key}")
                action.triggered.connect(lambda _=False, n=i: self.label_selection(n))
            remove = menu.addAction(
                ("Remove Label" if len(cells) == 1 else "Remove Labels") + "\tDel"
            )
            remove.setEnabled(any(self._by_cell.get(c) for c in cells))
            remove.triggered.connect(lambda: self.label_selection(None))
            menu.addSeparator()
        menu.addActions(self.view.actions())
        return menu

    # --- loading and saving ---------------------------------------------------------------

    def _on_slide_changed(self, reader: SlideReader | None, old: SlideReader | None) -> None:
        self._cells.clear()
        self._save_failed = False
        if reader is None:
            self._persist = False
            return
        identity = slide_identity(reader)
        self._persist = getattr(reader, "path", None) is not None
        labels = LabelSet(identity)
        if self._persist:
            try:
                labels = self.store.load(identity)
            except LabelError as exc:
                self.dialogs.show_warning("Labels not read", str(exc))
        self._quiet = True
        try:
            self.state.set_labels(labels)
        finally:
            self._quiet = False
        self._redraw()

    def _on_labels_changed(self, labels: LabelSet | None) -> None:
        if self._quiet:
            return
        self._redraw()
        if labels is not None:
            self._save(labels)

    def _save(self, labels: LabelSet) -> None:
        if not self._persist:
            return
        try:
            self.store.save(labels)
        except StorageError as exc:
            if not self._save_failed:
                self.dialogs.show_error(
                    "Labels not saved",
                    f"{exc}\n\nThe labels stay in this window; the next change tries to "
                    "save them again.",
                )
            else:
                self.state.notify(f"Labels still not saved: {exc}", 15000)
            self._save_failed = True
            return
        if self._save_failed:
            self._save_failed = False
            self.state.notify("The labels are saved again.")

    def _on_map_changed(self, tmap: TissueMap | None) -> None:
        self._cells.clear()
        if tmap is not None:
            self.panel.set_label_classes(
                [
                    (class_label(n), c)
                    for n, c in zip(tmap.class_names, tmap.class_colors, strict=True)
                ]
            )
        self._redraw()

    def _colors(self) -> dict[str, Color]:
        """Class colours: the labels' own, the model's over them, the map's over those."""
        colors: dict[str, Color] = dict(self.state.labels.colors) if self.state.labels else {}
        if (clf := self.state.classifier) is not None:
            colors.update(zip(clf.info.class_names, clf.info.class_colors, strict=True))
        if (tmap := self.state.tissue_map) is not None:
            colors.update(zip(tmap.class_names, tmap.class_colors, strict=True))
        return colors

    def _redraw(self) -> None:
        labels = self.state.labels
        self._by_cell = labels_by_cell(labels, self.state.tissue_map)
        self.layer.set_labels(labels, self._colors())
        count = len(labels) if labels is not None else 0
        self.count_label.setText(f"{count:,} labelled")
        self.count_label.setVisible(count > 0)
        if labels is not None and count:
            per_class = ", ".join(f"{class_label(n)} {k}" for n, k in labels.counts().items())
            self.count_label.setToolTip(f"{labelled_text(count)} on this slide: {per_class}")
        self._show_selection()

    # --- GeoJSON --------------------------------------------------------------------------

    def _start_folder(self) -> str:
        slide = self.state.slide
        path = getattr(slide, "path", None) if slide is not None else None
        return str(Path(path).parent) if path else ""

    def choose_import(self) -> None:
        """File > Import Labels: ask for a QuPath GeoJSON file and add its labels."""
        if not self._ready_to_import():
            return
        if path := self.dialogs.ask_open_file(
            "Import Labels (GeoJSON)", self._start_folder(), GEOJSON_OPEN_FILTER
        ):
            self.import_geojson(path)

    def _ready_to_import(self) -> bool:
        if self.state.slide is None:
            self.dialogs.show_info("No slide", "Open a slide first (File > Open Slide...).")
            return False
        if self.state.classifier is None or self.state.labels is None:
            self.dialogs.show_info(
                "No model",
                "Labels name the model's classes: load the model to label for first "
                "(Model > Load Model...).",
            )
            return False
        return True

    def import_geojson(self, path: str | Path) -> int | None:
        """Add the labels of a QuPath GeoJSON file (.geojson, .json, .gz) to the open
        slide's, cut into patches of the model's size at the slide's scale. Returns how
        many patches were labelled (None: nothing imported, a dialog said why)."""
        if not self._ready_to_import():
            return None
        slide, info = self.state.slide, self.state.classifier.info
        try:
            imported = labels_on_slide(read_geojson(path), slide, info, Path(path).name)
        except LabelError as exc:
            self.dialogs.show_error("Cannot import labels", str(exc))
            return None
        colors = dict(zip(info.class_names, info.class_colors, strict=True))
        # One undo step for the whole import.
        self.state.apply_labels({lab.box: lab.name for lab in imported.labels}, colors)
        self.state.notify(
            f"Imported {imported.summary()} from {Path(path).name} · "
            f"{labelled_text(len(self.state.labels))} on this slide",
            15000,
        )
        return len(imported.labels)

    def choose_export(self) -> None:
        """File > Export Labels: ask where, then write the labels as QuPath GeoJSON."""
        slide, labels = self.state.slide, self.state.labels
        if slide is None or labels is None:
            return
        if not labels:
            self.dialogs.show_info(
                "No labels",
                "This slide has no labels yet: select patches on the map and press 1-8.",
            )
            return
        stem = Path(slide.path).stem if getattr(slide, "path", None) else "slide"
        suggestion = str(Path(self._start_folder()) / f"{stem}.labels.geojson")
        if path := self.dialogs.ask_save_file(
            "Export Labels (GeoJSON)", suggestion, GEOJSON_SAVE_FILTER
        ):
            if not path.lower().endswith(_GEOJSON_SUFFIXES):
                path += ".geojson"
            self.export_geojson(path)

    def export_geojson(self, path: str | Path) -> bool:
        """Write the open slide's labels to ``path`` as QuPath GeoJSON annotations (in
        the model's class colours); False and a dialog when it cannot be written."""
        labels = self.state.labels
        if labels is None:
            return False
        try:
            write_labels_geojson(labels, path, self._colors())
        except (StorageError, OSError) as exc:
            self.dialogs.show_error("Cannot export labels", str(exc))
            return False
        self.state.notify(f"Exported {labelled_text(len(labels))} to {path}", 10000)
        return True
