"""The labels of one slide and where they are kept.

A label says "this patch is that class". It is stored as the patch's box in the
slide's level-0 pixels (``x``, ``y``, ``size``) and the class *name*, not as a grid
cell or a class index: a label then stays where it was put when the map is redone
with another stride or another model, and it can be cut again at any model's scale
(its centre is what counts, see :mod:`histoviewer.labels.extract`).

:class:`LabelStore` keeps one JSON file per slide in the user's data folder (not the
map cache, which may be cleared: labels are the pathologist's work). Files are
written atomically, so a crash leaves the last good file; a damaged file is moved
aside, never overwritten, and reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_text, storage_error
from histoviewer.mapping.grid import GridLayout

log = logging.getLogger(__name__)

FORMAT_NAME = "histoviewer.labels"
FORMAT_VERSION = 1
LABELS_ENV = "HISTOVIEWER_LABELS_DIR"

Box = tuple[int, int, int]  # x, y, size in level-0 pixels
Color = tuple[int, int, int]


class LabelError(HistoViewerError):
    """Labels that cannot be read or used (damaged file, unknown class, wrong slide)."""


@dataclass(frozen=True)
class PatchLabel:
    """One labelled patch: its level-0 box and class name."""

    x: int
    y: int
    size: int
    name: str

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.size)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.size / 2, self.y + self.size / 2)


def match_class(name: str, class_names: Sequence[str]) -> int | None:
    """The index of ``name`` among ``class_names``, ignoring case and a Kather folder
    prefix ("01_TUMOR" and "Tumor" both match "tumor"); None when it is not there."""
    from histoviewer.classes import default_classes, name_from_folder

    wanted = {name.strip().lower(), name_from_folder(name.strip())}
    for c in default_classes():  # "Tumour epithelium", as the legend shows it
        if c.label.lower() == name.strip().lower():
            wanted.add(c.name)
    for i, known in enumerate(class_names):
        if known.lower() in wanted:
            return i
    return None


class LabelSet:
    """The labels of one slide: a box -> class name mapping, plus each class's colour.

    ``slide`` is the slide's identity (:func:`histoviewer.mapping.tissue_map.slide_identity`
    or ``SlideReader.identity()``). Changing methods return what they replaced, as a
    ``{box: old name or None}`` mapping that :meth:`apply` restores (undo).
    """

    def __init__(
        self,
        slide: Mapping[str, Any] | None = None,
        labels: Iterable[PatchLabel] = (),
        colors: Mapping[str, Color] | None = None,
    ) -> None:
        self.slide: dict[str, Any] = dict(slide or {})
        self._labels: dict[Box, str] = {}
        self.colors: dict[str, Color] = {k: _color(v) for k, v in (colors or {}).items()}
        for label in labels:
            self._labels[label.box] = label.name

    # --- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[PatchLabel]:
        for (x, y, size), name in sorted(self._labels.items()):
            yield PatchLabel(x, y, size, name)

    def __contains__(self, box: object) -> bool:
        return box in self._labels

    def get(self, box: Box) -> str | None:
        return self._labels.get(_box(box))

    def counts(self) -> dict[str, int]:
        """Labels per class name, most first."""
        out: dict[str, int] = {}
        for name in self._labels.values():
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def slide_path(self) -> str:
        return str(self.slide.get("path") or "")

    # --- changing -----------------------------------------------------------------------

    def set(
        self, boxes: Iterable[Box], name: str | None, color: Color | None = None
    ) -> dict[Box, str | None]:
        """Label every box ``name`` (None: remove their labels); returns what was there."""
        changes = {_box(b): name for b in boxes}
        if name is not None and color is not None:
            self.colors[name] = _color(color)
        return self.apply(changes)

    def apply(self, changes: Mapping[Box, str | None]) -> dict[Box, str | None]:
        """Set each box's label (None removes it); returns the previous values."""
        before: dict[Box, str | None] = {}
        for box, name in changes.items():
            box = _box(box)
            before[box] = self._labels.get(box)
            if name is None:
                self._labels.pop(box, None)
            else:
                self._labels[box] = str(name)
        return before

    def clear(self) -> dict[Box, str | None]:
        return self.apply({box: None for box in list(self._labels)})

    # --- files --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "slide": self.slide,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "colors": {k: list(v) for k, v in sorted(self.colors.items())},
            "labels": [
                {"x": lab.x, "y": lab.y, "size": lab.size, "class": lab.name} for lab in self
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "the labels") -> LabelSet:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise LabelError(f"{where} is not a HistoViewer labels file")
        if data.get("version") != FORMAT_VERSION:
            raise LabelError(
                f"{where} is a labels file of version {data.get('version')!r}, which this "
                f"version of HistoViewer cannot read (it reads version {FORMAT_VERSION})"
            )
        try:
            labels = [
                PatchLabel(int(d["x"]), int(d["y"]), int(d["size"]), str(d["class"]))
                for d in data.get("labels") or []
            ]
            colors = {str(k): _color(v) for k, v in (data.get("colors") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelError(f"{where} is damaged: a label lacks or garbles {exc}") from None
        if any(lab.size <= 0 for lab in labels):
            raise LabelError(f"{where} is damaged: a label has no size")
        return cls(data.get("slide") or {}, labels, colors)


def _box(box: Any) -> Box:
    x, y, size = box
    return (int(x), int(y), int(size))


def _color(value: Any) -> Color:
    r, g, b = (int(v) for v in value)
    return (r, g, b)


# --------------------------------------------------------------------------- storage


def user_data_dir() -> Path:
    """The platform's per-user data folder + histoviewer."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "histoviewer"


def default_labels_dir() -> Path:
    """$HISTOVIEWER_LABELS_DIR, else :func:`user_data_dir` + labels."""
    if env := os.environ.get(LABELS_ENV):
        return Path(env).expanduser()
    return user_data_dir() / "labels"


def slide_key(slide: Mapping[str, Any]) -> str:
    """What files a slide's labels under: its path, byte size and dimensions.

    Not its modification time: touching or re-saving metadata must not lose labels.
    """
    payload = {
        "path": str(slide.get("path") or ""),
        "size": slide.get("size"),
        "dimensions": [int(v) for v in slide.get("dimensions") or ()],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class StoredLabels:
    """One slide's labels file: the slide's path, how many labels, per class, the file."""

    slide_path: str
    count: int
    counts: dict[str, int]
    file: Path


class LabelStore:
    """Every slide's labels, one JSON file each under ``root`` (:func:`default_labels_dir`)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_labels_dir()

    def path_for(self, slide: Mapping[str, Any]) -> Path:
        return self.root / f"{slide_key(slide)}.json"

    def load(self, slide: Mapping[str, Any]) -> LabelSet:
        """The labels of ``slide`` (an empty set when it has none).

        A damaged file is renamed ``*.damaged-<time>.json`` (kept for the user, never
        overwritten) and LabelError says so; the caller starts from an empty set.
        """
        path = self.path_for(slide)
        if not path.is_file():
            return LabelSet(slide)
        try:
            labels = LabelSet.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError, LabelError) as exc:
            aside = path.with_name(f"{path.stem}.damaged-{time.strftime('%Y%m%d-%H%M%S')}.json")
            try:
                path.replace(aside)
            except OSError:
                aside = path
            reason = exc if isinstance(exc, LabelError) else f"cannot read {path}: {exc}"
            raise LabelError(
                f"the labels of this slide could not be read ({reason}); the file was kept "
                f"as {aside}"
            ) from None
        labels.slide = {**labels.slide, **dict(slide)}
        return labels

    def save(self, labels: LabelSet) -> Path:
        """Write ``labels`` atomically (an empty set removes the slide's file)."""
        path = self.path_for(labels.slide)
        try:
            if len(labels) == 0:
                path.unlink(missing_ok=True)
                return path
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(labels.to_dict(), indent=1))
        except OSError as exc:
            raise storage_error(path, exc) from exc
        return path

    def slides(self) -> list[StoredLabels]:
        """Every slide with labels, by slide path (unreadable files are skipped)."""
        out = []
        for file in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            if ".damaged-" in file.name:
                continue
            try:
                labels = LabelSet.from_dict(json.loads(file.read_text(encoding="utf-8")))
            except (OSError, ValueError, LabelError):
                continue
            if len(labels):
                out.append(StoredLabels(labels.slide_path, len(labels), labels.counts(), file))
        return sorted(out, key=lambda s: s.slide_path)


# --------------------------------------------------------------------------- on a map


def cell_box(layout: GridLayout, row: int, col: int) -> Box:
    """The label box of patch (row, col) of a grid or map: the patch as read."""
    x, y, size, _ = layout.patch_box(row, col)
    return (int(x), int(y), int(size))


def labels_by_cell(
    labels: LabelSet | None, layout: GridLayout | None
) -> dict[tuple[int, int], list[PatchLabel]]:
    """The labels whose centre lies in each cell of ``layout`` (a label made on a map of
    another stride or model, or imported, counts where its centre is)."""
    out: dict[tuple[int, int], list[PatchLabel]] = {}
    if layout is None or not labels:
        return out
    items = list(labels)
    cx = np.array([lab.x + lab.size / 2 for lab in items])
    cy = np.array([lab.y + lab.size / 2 for lab in items])
    cols, rows = layout.cells_at(cx, cy)
    for i in np.flatnonzero((cols >= 0) & (rows >= 0)).tolist():
        out.setdefault((int(rows[i]), int(cols[i])), []).append(items[i])
    return out


def cell_labels(
    labels: LabelSet | None, layout: GridLayout | None, class_names: Sequence[str]
) -> dict[tuple[int, int], int]:
    """``{(row, col): class index}`` of the patches of ``layout`` that hold a label's
    centre, for labels whose class is among ``class_names`` (others are left out)."""
    ids: dict[str, int | None] = {}
    out: dict[tuple[int, int], int] = {}
    for cell, found in labels_by_cell(labels, layout).items():
        name = found[-1].name
        if name not in ids:
            ids[name] = match_class(name, class_names)
        if ids[name] is not None:
            out[cell] = ids[name]  # type: ignore[assignment]
    return out
