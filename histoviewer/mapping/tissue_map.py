"""TissueMap: the result of mapping a slide, one class-probability vector per patch.

A map is a grid of ``rows`` x ``cols`` patches with, for each, a state
(:data:`PENDING`, :data:`CLASSIFIED` or :data:`BACKGROUND`) and the model's class
probabilities (NaN where the patch was not classified). It knows its grid geometry in
level-0 pixels, the slide and model it came from, and can be saved to and loaded from
a pickle-free ``.npz`` file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes
from histoviewer.mapping.grid import GridLayout, PatchGrid

log = logging.getLogger(__name__)

PENDING = 0
CLASSIFIED = 1
BACKGROUND = 2

FORMAT_NAME = "histoviewer.tissuemap"
FORMAT_VERSION = 1


class TissueMapError(HistoViewerError):
    """A saved tissue map cannot be read (damaged, not a map, or a newer format)."""


@dataclass
class TissueMap(GridLayout):
    """Class probabilities over a patch grid.

    ``probs`` is float32 (rows, cols, C), NaN where not classified; ``state`` is uint8
    (rows, cols). ``patch_size``, ``stride``, ``origin`` and ``extent`` (the area the
    grid covers: the slide's size) are in level-0 pixels of the slide, ``mpp`` its
    level-0 microns per pixel; ``stride_model`` is the stride in model pixels. The
    geometry (patch boxes, cells, lookup) is that of
    :class:`~histoviewer.mapping.grid.GridLayout`. ``slide`` and ``model`` are JSON-safe
    identity dicts (the model's has name, arch, fingerprint, input_size, patch_size,
    mpp). ``warnings`` lists the doubts found before mapping (``{"kind", "message"}``,
    see :mod:`histoviewer.mapping.checks`). ``complete`` is False for a
    map whose mapping was cancelled. ``spread`` (float32 (rows, cols), NaN where not
    classified) is set for a map made with test-time augmentation (``tta``): how far
    the 8 flips and rotations of each patch disagree (:meth:`uncertainty` "tta"); its
    ``probs`` are then their mean. ``settings`` (JSON-safe) records how the map was
    made: stride, background skipping and its threshold, test-time augmentation,
    precision and backend (see :func:`~histoviewer.mapping.engine.map_slide`).
    """

    probs: np.ndarray
    state: np.ndarray
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    patch_size: int
    stride: int
    mpp: float
    origin: tuple[int, int] = (0, 0)
    stride_model: int = 150
    extent: tuple[int, int] = (0, 0)
    slide: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    complete: bool = False
    warnings: list[dict[str, str]] = field(default_factory=list)
    spread: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_colors = [tuple(int(v) for v in c) for c in self.class_colors]
        self.class_names = [str(n) for n in self.class_names]
        self.origin = (int(self.origin[0]), int(self.origin[1]))
        self.extent = (int(self.extent[0]), int(self.extent[1]))

    # --- construction -------------------------------------------------------------------

    @classmethod
    def empty(
        cls,
        grid: PatchGrid,
        class_names: list[str],
        class_colors: list[tuple[int, int, int]],
        *,
        mpp: float,
        slide: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
    ) -> TissueMap:
        """A map of ``grid`` with every patch pending."""
        n = len(class_names)
        return cls(
            probs=np.full((grid.rows, grid.cols, n), np.nan, dtype=np.float32),
            state=np.zeros((grid.rows, grid.cols), dtype=np.uint8),
            class_names=list(class_names),
            class_colors=list(class_colors),
            patch_size=grid.patch_size,
            stride=grid.stride,
            mpp=float(mpp),
            origin=grid.origin,
            stride_model=grid.stride_model,
            extent=grid.extent,
            slide=dict(slide or {}),
            model=dict(model or {}),
        )

    # --- geometry -----------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.state.shape[0])

    @property
    def cols(self) -> int:
        return int(self.state.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- statistics ---------------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """int16 (rows, cols): the most probable class, -1 where not classified."""
        out = np.full(self.state.shape, -1, dtype=np.int16)
        done = self.state == CLASSIFIED
        if done.any():
            out[done] = np.argmax(self.probs[done], axis=-1)
        return out

    def uncertainty(self, kind: str = "entropy") -> np.ndarray:
        """float32 (rows, cols) in [0, 1], NaN where not classified: how unsure the model
        is of each patch.

        ``kind`` "entropy" (default): the entropy of the class probabilities over its
        largest possible value, log(C) (0: one class certain, 1: all classes equally
        likely); "margin": 1 minus the gap between the two most probable classes;
        "tta": the spread of the 8 flips and rotations (all NaN for a map made without).
        The Review panel, confidence shading and exports all use the entropy.
        """
        out = np.full(self.state.shape, np.nan, dtype=np.float32)
        done = self.state == CLASSIFIED
        if kind == "tta":
            if self.spread is not None:
                out[done] = self.spread[done]
            return out
        if not done.any() or self.num_classes < 2:
            return out
        p = np.clip(self.probs[done].astype(np.float64), 0.0, 1.0)
        if kind == "entropy":
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
            value = h / math.log(self.num_classes)
        elif kind == "margin":
            top = np.sort(p, axis=-1)
            value = 1.0 - (top[:, -1] - top[:, -2])
        else:
            raise ValueError(f"unknown uncertainty {kind!r}: use 'entropy', 'margin' or 'tta'")
        out[done] = np.clip(value, 0.0, 1.0)
        return out

    @property
    def classified_count(self) -> int:
        return int(np.count_nonzero(self.state == CLASSIFIED))

    @property
    def background_count(self) -> int:
        return int(np.count_nonzero(self.state == BACKGROUND))

    @property
    def pending_count(self) -> int:
        return int(np.count_nonzero(self.state == PENDING))

    def counts(self) -> dict[str, int]:
        """Classified patches per class (argmax), in class order."""
        labels = self.labels
        hist = np.bincount(labels[labels >= 0].ravel(), minlength=self.num_classes)
        return {name: int(hist[i]) for i, name in enumerate(self.class_names)}

    def fractions(self) -> dict[str, float]:
        """Share of each class among the classified (tissue) patches; zeros if none."""
        counts = self.counts()
        total = sum(counts.values())
        return {k: (v / total if total else 0.0) for k, v in counts.items()}

    def cell_areas_mm2(self) -> np.ndarray:
        """float64 (rows, cols): the slide area each patch stands for, in mm2.

        Cells tile the slide (see :mod:`histoviewer.mapping.grid`): with overlapping
        or gapped patches each stands for its share of the grid, and cells at the
        slide's edges count only what lies on the slide, so areas add up to the
        mapped area instead of counting overlaps twice or glass past the edge.
        """
        mm_per_px = self.mpp / 1000.0
        return self.cell_areas() * (mm_per_px * mm_per_px)

    def areas_mm2(self) -> dict[str, float]:
        """Area per class in mm2: the summed cells of its classified patches."""
        labels = self.labels
        done = labels >= 0
        sums = np.bincount(
            labels[done].ravel(), weights=self.cell_areas_mm2()[done], minlength=self.num_classes
        )
        return {name: float(sums[i]) for i, name in enumerate(self.class_names)}

    @property
    def classified_area_mm2(self) -> float:
        """Area of all classified (tissue) patches' cells in mm2."""
        return float(self.cell_areas_mm2()[self.state == CLASSIFIED].sum())

    # --- files --------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-safe (stored in the .npz as a JSON string)."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "class_names": self.class_names,
            "class_colors": [list(c) for c in self.class_colors],
            "patch_size": int(self.patch_size),
            "stride": int(self.stride),
            "origin": list(self.origin),
            "rows": self.rows,
            "cols": self.cols,
            "mpp": float(self.mpp),
            "stride_model": int(self.stride_model),
            "extent": list(self.extent),
            "slide": _json_safe(self.slide),
            "model": _json_safe(self.model),
            "elapsed": float(self.elapsed),
            "complete": bool(self.complete),
            "warnings": _json_safe(self.warnings),
            "settings": _json_safe(self.settings),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`save` writes: probs, state, the metadata JSON string, and
        ``spread`` for a map made with test-time augmentation."""
        out = {
            "probs": np.ascontiguousarray(self.probs, dtype=np.float32),
            "state": np.ascontiguousarray(self.state, dtype=np.uint8),
            "metadata": np.array(json.dumps(self.metadata())),
        }
        if self.spread is not None:
            out["spread"] = np.ascontiguousarray(self.spread, dtype=np.float32)
        return out

    def save(self, path: str | Path, *, extra: dict[str, np.ndarray] | None = None) -> None:
        """Write the map atomically to ``path`` (.npz, no pickled objects).

        ``extra`` arrays are stored beside the map's own (exports use it to add
        labels and coordinates); :meth:`load` ignores them.
        """
        arrays = {**(extra or {}), **self.arrays()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> TissueMap:
        """Read a map written by :meth:`save`.

        Raises TissueMapError for a missing, damaged or foreign file, or one written by
        a newer HistoViewer (unknown format version).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("probs", "state", "metadata")}
                spread = data["spread"] if "spread" in data.files else None
        except FileNotFoundError:
            raise TissueMapError(
                f"cannot read tissue map {path}: the file does not exist"
            ) from None
        except KeyError as exc:
            raise TissueMapError(
                f"{path} is not a HistoViewer tissue map (it has no {exc} array)"
            ) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise TissueMapError(
                f"cannot read tissue map {path}: the file is damaged or not a map ({exc})"
            ) from None
        try:
            meta = json.loads(str(arrays["metadata"]))
        except (ValueError, TypeError):
            raise TissueMapError(f"{path} is damaged: its metadata is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise TissueMapError(f"{path} is not a HistoViewer tissue map")
        version = meta.get("version")
        if version != FORMAT_VERSION:
            raise TissueMapError(
                f"{path} is a tissue map of format version {version!r}, which this version "
                f"of HistoViewer cannot read (it reads version {FORMAT_VERSION})"
            )
        tmap = cls._from_parts(path, arrays["probs"], arrays["state"], meta)
        if spread is not None:
            if spread.dtype != np.float32 or spread.shape != tmap.state.shape:
                raise TissueMapError(f"{path} is damaged: its spread does not match its map")
            tmap.spread = spread
        return tmap

    @classmethod
    def _from_parts(
        cls, path: Path, probs: np.ndarray, state: np.ndarray, meta: dict[str, Any]
    ) -> TissueMap:
        try:
            names = list(meta["class_names"])
            rows, cols = int(meta["rows"]), int(meta["cols"])
            tmap = cls(
                probs=probs,
                state=state,
                class_names=names,
                class_colors=[tuple(c) for c in meta["class_colors"]],
                patch_size=int(meta["patch_size"]),
                stride=int(meta["stride"]),
                mpp=float(meta["mpp"]),
                origin=tuple(meta["origin"]),
                stride_model=int(meta["stride_model"]),
                extent=tuple(meta.get("extent") or (0, 0)),
                slide=dict(meta.get("slide") or {}),
                model=dict(meta.get("model") or {}),
                elapsed=float(meta.get("elapsed", 0.0)),
                complete=bool(meta.get("complete", False)),
                warnings=[
                    {"kind": str(w["kind"]), "message": str(w["message"])}
                    for w in meta.get("warnings") or []
                ],
                settings=dict(meta.get("settings") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TissueMapError(
                f"{path} is damaged: its metadata lacks or garbles {exc}"
            ) from None
        ok = (
            probs.dtype == np.float32
            and state.dtype == np.uint8
            and probs.shape == (rows, cols, len(names))
            and state.shape == (rows, cols)
            and len(tmap.class_colors) == len(names)
            and np.isin(state, (PENDING, CLASSIFIED, BACKGROUND)).all()
            and tmap.patch_size > 0
            and tmap.stride > 0
            and min(tmap.extent) >= 0
            and math.isfinite(tmap.mpp)
            and tmap.mpp > 0
        )
        if not ok:
            raise TissueMapError(f"{path} is damaged: its arrays do not match its metadata")
        return tmap


def _json_safe(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and paths turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def slide_identity(slide) -> dict:
    """What a tissue map records about its slide (JSON-safe)."""
    ident: dict = {}
    # Readers without a file (in-memory) may know no identity beyond their size.
    with contextlib.suppress(AttributeError, AssertionError, NotImplementedError, OSError):
        ident.update(slide.identity())
    ident.setdefault("dimensions", list(slide.dimensions))
    ident["format"] = getattr(slide, "format_name", "")
    ident["mpp"] = float(slide.mpp)
    ident["mpp_source"] = getattr(slide, "mpp_source", "")
    if getattr(slide, "path", None) is not None:
        ident.setdefault("path", str(slide.path))
    return ident
