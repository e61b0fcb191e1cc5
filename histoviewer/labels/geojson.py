"""Patch labels as QuPath GeoJSON annotations, out and in.

Out: one annotation per labelled patch, a square in level-0 pixels with
``objectType: "annotation"`` and ``classification: {name, color: [r, g, b]}``, as
QuPath's File > Import objects reads it. A labels file written here comes back
exactly, patch for patch.

In: a FeatureCollection, a single Feature or a plain list of features (QuPath
writes all three). Polygons and MultiPolygons (holes honoured) with a
classification are turned into patch labels: an axis-aligned square about one
patch in size is taken as that patch; any other shape is tiled with patches of
the given size on the slide's grid (from its top-left corner), keeping those
whose centre lies inside it. Features without a class, and points or lines, are
counted and skipped. A class name the model does not know is refused by name.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviewer.fileio import atomic_write_chunks
from histoviewer.labels.store import Color, LabelError, LabelSet, PatchLabel, match_class
from histoviewer.mapping.grid import GridLayout, slide_patch

if TYPE_CHECKING:
    from histoviewer.model import ModelInfo
    from histoviewer.slide import SlideReader

# A square whose side is within this share of a patch's is taken as that one patch.
_SQUARE_TOLERANCE = 0.1


def labels_geojson(labels: LabelSet, colors: Mapping[str, Color] | None = None) -> dict[str, Any]:
    """A FeatureCollection of ``labels`` as QuPath annotations.

    ``colors``: class name -> colour (default: the set's own, then grey).
    """
    palette = {**labels.colors, **(colors or {})}
    features = []
    for lab in labels:
        x0, y0, x1, y1 = lab.x, lab.y, lab.x + lab.size, lab.y + lab.size
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": f"{lab.name} patch",
                    "classification": {
                        "name": lab.name,
                        "color": list(palette.get(lab.name, (128, 128, 128))),
                    },
                    "isLocked": False,
                },
            }
        )
    return {
        "type": "FeatureCollection",
        # A foreign member (QuPath ignores it): what the squares are.
        "histoviewer": {"kind": "patch labels", "slide": labels.slide_path},
        "features": features,
    }


def write_labels_geojson(
    labels: LabelSet, path: str | os.PathLike, colors: Mapping[str, Color] | None = None
) -> None:
    """Write :func:`labels_geojson` atomically; ``.gz`` names are gzip-compressed."""
    atomic_write_chunks(path, [json.dumps(labels_geojson(labels, colors), separators=(",", ":"))])


@dataclass
class ImportedLabels:
    """Labels read from GeoJSON: ``labels`` and what was left out, for the user."""

    labels: list[PatchLabel]
    features: int = 0
    skipped_unclassified: int = 0
    skipped_shapes: int = 0
    empty_shapes: int = 0
    per_class: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.labels)} labelled patches from {self.features} annotations"]
        if self.skipped_unclassified:
            parts.append(f"{self.skipped_unclassified} without a class skipped")
        if self.skipped_shapes:
            parts.append(f"{self.skipped_shapes} points or lines skipped")
        if self.empty_shapes:
            parts.append(f"{self.empty_shapes} too small to hold a patch's centre")
        return "; ".join(parts)


def read_geojson(path: str | os.PathLike) -> Any:
    """The parsed JSON of a ``.geojson`` / ``.json`` file, gzip-compressed or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LabelError(f"{path} does not exist") from None
    except OSError as exc:
        raise LabelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise LabelError(f"{path} is a damaged gzip file ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LabelError(f"{path} is not GeoJSON: {exc}") from None


def labels_from_geojson(
    data: Any,
    *,
    patch_size: int,
    class_names: Sequence[str],
    slide_size: tuple[int, int] | None = None,
    where: str = "the GeoJSON",
) -> ImportedLabels:
    """Patch labels from QuPath-style GeoJSON ``data`` (see the module's description).

    ``patch_size``: a patch's side in the slide's level-0 pixels (the model's patch at
    the slide's scale); ``class_names``: the model's classes (names are matched as
    :func:`~histoviewer.labels.store.match_class` does and stored as the model's);
    ``slide_size``: (width, height), to keep patches on the slide. Raises LabelError
    naming every class the model does not know, or when ``data`` holds no features.
    """
    if patch_size < 1:
        raise ValueError("patch_size must be positive")
    features = _features(data, where)
    out = ImportedLabels([], features=len(features))
    unknown: dict[str, int] = {}
    boxes: dict[tuple[int, int, int], str] = {}
    for feature in features:
        props = feature.get("properties") or {}
        name = _class_name(props)
        if not name:
            out.skipped_unclassified += 1
            continue
        cid = match_class(name, class_names)
        if cid is None:
            unknown[name] = unknown.get(name, 0) + 1
            continue
        polygons = _polygons(feature.get("geometry"))
        if not polygons:
            out.skipped_shapes += 1
            continue
        found = 0
        for polygon in polygons:
            for box in _patches_in(polygon, patch_size, slide_size):
                boxes[box] = class_names[cid]
                found += 1
        if not found:
            out.empty_shapes += 1
    if unknown:
        names = ", ".join(f"'{n}' ({c})" for n, c in sorted(unknown.items()))
        raise LabelError(
            f"{where} names classes the model does not know: {names}; the model's classes "
            f"are {', '.join(class_names)} (rename them in QuPath, or use a model with them)"
        )
    out.labels = [PatchLabel(x, y, s, n) for (x, y, s), n in sorted(boxes.items())]
    for lab in out.labels:
        out.per_class[lab.name] = out.per_class.get(lab.name, 0) + 1
    return out


def labels_on_slide(
    data: Any, slide: SlideReader, info: ModelInfo, where: str = "the GeoJSON"
) -> ImportedLabels:
    """:func:`labels_from_geojson` for ``slide``, tiled with ``info``'s patch at the
    slide's scale (as a map of that model cuts it) and kept on the slide."""
    return labels_from_geojson(
        data,
        patch_size=slide_patch(slide, info)[0],
        class_names=info.class_names,
        slide_size=tuple(slide.dimensions),
        where=where,
    )


def regions_from_geojson(
    data: Any, layout: GridLayout, where: str = "the GeoJSON"
) -> list[tuple[str, np.ndarray]]:
    """Named regions (QuPath annotations drawn on the slide: polygons, holes honoured)
    as masks over ``layout``'s cells (a tissue map's grid): a cell is in a region when
    its centre lies inside. A region is named by its annotation's name, else its
    class, else "region N"; repeated names get " (2)", " (3)". Features without an
    area (points, lines) are left out. Raises LabelError when none has one."""
    from matplotlib.path import Path as MplPath  # a project dependency; only when used

    cx, cy = np.meshgrid(*layout.cell_centres())
    centres = np.column_stack([cx.ravel(), cy.ravel()])
    out: list[tuple[str, np.ndarray]] = []
    seen: dict[str, int] = {}
    for feature in _features(data, where):
        polygons = _polygons(feature.get("geometry"))
        if not polygons:
            continue
        props = feature.get("properties") or {}
        name = str(props.get("name") or "").strip() or _class_name(props)
        name = name or f"region {len(out) + 1}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} ({seen[name]})"
        inside = np.zeros(len(centres), dtype=bool)
        for rings in polygons:
            part = MplPath(rings[0]).contains_points(centres)
            for hole in rings[1:]:
                part &= ~MplPath(hole).contains_points(centres)
            inside |= part
        out.append((name, inside.reshape(cx.shape)))
    if not out:
        raise LabelError(f"{where} holds no annotation with an area (polygon)")
    return out


def _features(data: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise LabelError(f"{where} is not GeoJSON: expected a FeatureCollection or features")
    if not isinstance(items, list):
        raise LabelError(f"{where} is damaged: its features are not a list")
    features = [f for f in items if isinstance(f, dict) and f.get("type", "Feature") == "Feature"]
    if not features:
        raise LabelError(f"{where} holds no annotations")
    return features


def _class_name(props: Mapping[str, Any]) -> str:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return str(cls.get("name") or "").strip()
    if isinstance(cls, str):
        return cls.strip()
    return ""


def _polygons(geometry: Any) -> list[list[np.ndarray]]:
    """Each polygon as [exterior ring, hole rings...], float64 (N, 2) arrays."""
    if not isinstance(geometry, dict):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    try:
        if kind == "Polygon":
            polys = [coords]
        elif kind == "MultiPolygon":
            polys = list(coords)
        elif kind == "GeometryCollection":
            return [p for g in geometry.get("geometries") or [] for p in _polygons(g)]
        else:
            return []
        out = []
        for poly in polys:
            rings = [np.asarray(ring, dtype=np.float64)[:, :2] for ring in poly]
            if rings and len(rings[0]) >= 3:
                out.append(rings)
        return out
    except (TypeError, ValueError, IndexError):
        return []


def _patches_in(
    rings: list[np.ndarray], patch: int, slide_size: tuple[int, int] | None
) -> list[tuple[int, int, int]]:
    exterior = rings[0]
    x0, y0 = exterior.min(axis=0)
    x1, y1 = exterior.max(axis=0)
    if len(rings) == 1 and _is_square(exterior, patch):
        return [_on_slide(round(x0), round(y0), patch, slide_size)]
    from matplotlib.path import Path as MplPath  # a project dependency; only when tiling

    first_col = max(0, int(np.floor(x0 / patch)))
    first_row = max(0, int(np.floor(y0 / patch)))
    cols = np.arange(first_col, int(np.ceil(x1 / patch)) + 1)
    rows = np.arange(first_row, int(np.ceil(y1 / patch)) + 1)
    if slide_size is not None:
        cols = cols[(cols + 1) * patch <= slide_size[0]]
        rows = rows[(rows + 1) * patch <= slide_size[1]]
    if not len(cols) or not len(rows):
        return []
    cx, cy = np.meshgrid((cols + 0.5) * patch, (rows + 0.5) * patch)
    centres = np.column_stack([cx.ravel(), cy.ravel()])
    inside = MplPath(exterior).contains_points(centres)
    for hole in rings[1:]:
        inside &= ~MplPath(hole).contains_points(centres)
    return [(int(x - patch / 2), int(y - patch / 2), patch) for x, y in centres[inside].tolist()]


def _is_square(ring: np.ndarray, patch: int) -> bool:
    pts = ring[:-1] if len(ring) > 1 and np.allclose(ring[0], ring[-1]) else ring
    if len(pts) != 4:
        return False
    xs, ys = np.unique(np.round(pts[:, 0])), np.unique(np.round(pts[:, 1]))
    if len(xs) != 2 or len(ys) != 2:
        return False
    w, h = xs[1] - xs[0], ys[1] - ys[0]
    return all(abs(side - patch) <= _SQUARE_TOLERANCE * patch for side in (w, h))


def _on_slide(
    x: int, y: int, patch: int, slide_size: tuple[int, int] | None
) -> tuple[int, int, int]:
    if slide_size is not None:
        x = max(0, min(x, slide_size[0] - patch))
        y = max(0, min(y, slide_size[1] - patch))
    return (int(x), int(y), int(patch))
