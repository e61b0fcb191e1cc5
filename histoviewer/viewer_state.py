"""The viewer's state, without Qt: what is open, shown and running, and who must know.

:class:`ViewerState` holds the open slide, the model in use, the tissue map shown,
the selected patch, the mapping and drawing settings and the jobs running. Each
change emits a `psygnal <https://psygnal.readthedocs.io>`_ signal; the window's
controllers and widgets (``histoviewer.gui``) change the state through its methods
and listen to its signals, so none of them needs to know the others, as napari's
``components`` (the model) and ``_qt`` (its views) are split.

The state keeps a few rules whatever changes it: a new slide or model drops the map
shown and the selection (the map was made for the old pair), a map shown clears a
selected patch that lies outside it. It owns nothing: the window closes slide
readers and the controllers run the jobs.

All signals are emitted on the thread that changed the state; in the viewer that is
always the GUI thread (workers report through queued Qt signals first).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from psygnal import Signal

if TYPE_CHECKING:
    from histoviewer.labels.store import Box, Color, LabelSet
    from histoviewer.mapping.tissue_map import TissueMap
    from histoviewer.model import Classifier
    from histoviewer.slide import SlideReader

#: The jobs the state tracks (see :meth:`ViewerState.set_running`).
MAPPING = "mapping"
LOADING_MODEL = "loading model"
TRAINING = "training"


@dataclass(frozen=True)
class MappingSettings:
    """How Analysis > Map Tissue runs.

    ``stride`` is in model pixels (0: the model's patch size, non-overlapping),
    ``device`` a name for ``histoviewer.device.resolve_device`` ("auto" picks a
    GPU when there is one), ``skip_background`` leaves empty glass unclassified,
    ``tta`` classifies each patch in its 8 flips and rotations (8x slower; the map's
    uncertainty then includes how far they disagree).
    """

    stride: int = 0
    device: str = "auto"
    batch_size: int = 64
    skip_background: bool = True
    tta: bool = False


@dataclass(frozen=True)
class ViewSettings:
    """How the map overlay is drawn. ``uncertain_only`` draws only the patches whose
    uncertainty is at least ``uncertain_threshold`` (View > Uncertain Only).

    Two transient views, never kept across runs, each a class *name* (so that they
    outlive a new map of the same model; the window drops one the map shown lacks):
    ``solo_class`` draws only that class, whatever the per-class visibility ticks say
    (they are kept, and rule again once solo ends); ``heatmap_class`` draws that
    class's probability as a smooth heatmap instead of the class colours. At most one
    of them is set: the window's commands that choose one leave the other.
    """

    overlay_visible: bool = True
    opacity: float = 0.45
    confidence_shading: bool = False
    uncertain_only: bool = False
    uncertain_threshold: float = 0.5
    solo_class: str | None = None
    heatmap_class: str | None = None


Cell = tuple[int, int]


class ViewerState:
    """The slide, model, map, selection, settings and jobs of one viewer window.

    Signals (arguments in brackets):

    - ``slide_changed`` [new reader or None, old reader or None]: a slide was opened,
      replaced or closed. The map and selection were dropped just before.
    - ``slide_scale_changed`` [reader]: the open slide's µm/px was set.
    - ``model_changed`` [classifier or None, path or None].
    - ``map_changed`` [map or None]: another map is shown (or none).
    - ``map_updated`` [map]: the map shown was filled in further (a mapping batch).
    - ``selection_changed`` [(row, col) or None].
    - ``labels_changed`` [LabelSet or None]: the open slide's patch labels were loaded,
      changed, undone or redone (the window's label controller saves them).
    - ``mapping_settings_changed`` [MappingSettings], ``view_settings_changed``
      [ViewSettings].
    - ``jobs_changed`` []: a job started or ended (:meth:`is_running`).
    - ``message`` [text, milliseconds]: a passing status message for the user.
    """

    slide_changed = Signal(object, object)
    slide_scale_changed = Signal(object)
    model_changed = Signal(object, object)
    map_changed = Signal(object)
    map_updated = Signal(object)
    selection_changed = Signal(object)
    labels_changed = Signal(object)
    mapping_settings_changed = Signal(object)
    view_settings_changed = Signal(object)
    jobs_changed = Signal()
    message = Signal(str, int)

    def __init__(
        self,
        mapping_settings: MappingSettings | None = None,
        view_settings: ViewSettings | None = None,
    ) -> None:
        self._slide: SlideReader | None = None
        self._classifier: Classifier | None = None
        self._model_path: str | None = None
        self._map: TissueMap | None = None
        self._map_live = False
        self._selection: Cell | None = None
        self._mapping_settings = mapping_settings or MappingSettings()
        self._view_settings = view_settings or ViewSettings()
        self._running: set[str] = set()
        self._labels: LabelSet | None = None
        # Label changes, each {box: name before} / {box: name after}, for undo and redo.
        self._undo: list[tuple[dict[Box, str | None], dict[Box, str | None]]] = []
        self._redo: list[tuple[dict[Box, str | None], dict[Box, str | None]]] = []

    # --- reading ------------------------------------------------------------------------

    @property
    def slide(self) -> SlideReader | None:
        return self._slide

    @property
    def classifier(self) -> Classifier | None:
        return self._classifier

    @property
    def model_path(self) -> str | None:
        """The file the model in use came from (None: fresh from memory, or no model)."""
        return self._model_path

    @property
    def tissue_map(self) -> TissueMap | None:
        """The map shown: the one being filled in while mapping, else the last result."""
        return self._map

    @property
    def map_is_live(self) -> bool:
        """Whether the map shown is still being filled in by a mapping job."""
        return self._map is not None and self._map_live

    @property
    def selection(self) -> Cell | None:
        """The selected patch (row, col) of the map shown."""
        return self._selection

    @property
    def mapping_settings(self) -> MappingSettings:
        return self._mapping_settings

    @property
    def view_settings(self) -> ViewSettings:
        return self._view_settings

    @property
    def labels(self) -> LabelSet | None:
        """The patch labels of the open slide (None: no slide, or not loaded yet)."""
        return self._labels

    @property
    def can_undo_labels(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo_labels(self) -> bool:
        return bool(self._redo)

    def is_running(self, job: str) -> bool:
        """Whether ``job`` (MAPPING, LOADING_MODEL, TRAINING) is running."""
        return job in self._running

    # --- changing -----------------------------------------------------------------------

    def set_slide(self, reader: SlideReader | None) -> None:
        """Show ``reader`` (None: no slide); the map and selection go with the old one."""
        old = self._slide
        if reader is old:
            return
        self.set_map(None)
        self.set_labels(None)
        self._slide = reader
        self.slide_changed.emit(reader, old)

    def scale_changed(self) -> None:
        """The open slide's scale was set: its patches differ, so the map goes."""
        if self._slide is None:
            return
        self.set_map(None)
        self.slide_scale_changed.emit(self._slide)

    def set_model(self, classifier: Classifier | None, path: str | None = None) -> None:
        """Use ``classifier`` (from the file ``path``, if any); the map shown goes."""
        self.set_map(None)
        self._classifier = classifier
        self._model_path = str(path) if path and classifier is not None else None
        self.model_changed.emit(classifier, self._model_path)

    def set_map(self, tmap: TissueMap | None, *, live: bool = False) -> None:
        """Show ``tmap``; ``live`` while a mapping job fills it in."""
        if tmap is self._map and live == self._map_live:
            return
        self._map = tmap
        self._map_live = live and tmap is not None
        if self._selection is not None and not self._holds(self._selection):
            self.set_selection(None)
        self.map_changed.emit(tmap)

    def map_grew(self) -> None:
        """The map shown was filled in further (by the job filling it in)."""
        if self._map is not None:
            self.map_updated.emit(self._map)

    def set_selection(self, cell: Cell | None) -> None:
        """Select patch ``cell`` (row, col) of the map shown; None (or a cell outside
        the map) selects nothing."""
        if cell is not None:
            cell = (int(cell[0]), int(cell[1]))
            if not self._holds(cell):
                cell = None
        if cell == self._selection:
            return
        self._selection = cell
        self.selection_changed.emit(cell)

    def set_labels(self, labels: LabelSet | None) -> None:
        """Show ``labels`` (the open slide's, loaded from the store); undo starts afresh."""
        self._labels = labels
        self._undo.clear()
        self._redo.clear()
        self.labels_changed.emit(labels)

    def label_boxes(self, boxes: list[Box], name: str | None, color: Color | None = None) -> bool:
        """Label the patches ``boxes`` (level-0 x, y, size) ``name``; None removes their
        labels. One undo step; False when there are no labels to change or nothing
        changed."""
        colors = {name: color} if name is not None and color is not None else None
        return self.apply_labels({tuple(box): name for box in boxes}, colors)

    def apply_labels(
        self, changes: dict[Box, str | None], colors: dict[str, Color] | None = None
    ) -> bool:
        """Set each box's label (None removes it) as one undo step, whatever the classes
        (an import, a relabelled cell whose old label had another box); False when there
        are no labels or nothing changed."""
        if self._labels is None or not changes:
            return False
        for name, color in (colors or {}).items():
            if name in set(changes.values()):
                self._labels.colors[name] = color
        before = self._labels.apply(changes)
        after = {box: changes[box] for box in before}
        if all(before[b] == after[b] for b in before):
            return False
        self._undo.append((before, after))
        self._redo.clear()
        self.labels_changed.emit(self._labels)
        return True

    def undo_labels(self) -> bool:
        """Undo the last label change; False when there is none."""
        if self._labels is None or not self._undo:
            return False
        before, after = self._undo.pop()
        self._labels.apply(before)
        self._redo.append((before, after))
        self.labels_changed.emit(self._labels)
        return True

    def redo_labels(self) -> bool:
        """Redo the last undone label change; False when there is none."""
        if self._labels is None or not self._redo:
            return False
        before, after = self._redo.pop()
        self._labels.apply(after)
        self._undo.append((before, after))
        self.labels_changed.emit(self._labels)
        return True

    def set_mapping_settings(self, settings: MappingSettings) -> None:
        if settings != self._mapping_settings:
            self._mapping_settings = settings
            self.mapping_settings_changed.emit(settings)

    def update_view_settings(self, **changes: Any) -> None:
        """Change some of the view settings (overlay_visible, opacity,
        confidence_shading, uncertain_only, uncertain_threshold)."""
        settings = replace(self._view_settings, **changes)
        if settings != self._view_settings:
            self._view_settings = settings
            self.view_settings_changed.emit(settings)

    def set_running(self, job: str, running: bool) -> None:
        """Record that ``job`` started (True) or ended (False)."""
        before = job in self._running
        if running:
            self._running.add(job)
        else:
            self._running.discard(job)
        if before != running:
            self.jobs_changed.emit()

    def notify(self, text: str, milliseconds: int = 8000) -> None:
        """A passing message for the user (the window's status bar)."""
        self.message.emit(text, milliseconds)

    def _holds(self, cell: Cell) -> bool:
        tmap = self._map
        return tmap is not None and 0 <= cell[0] < tmap.rows and 0 <= cell[1] < tmap.cols
