"""Writing a TissueMap for other tools: GeoJSON (QuPath), CSV, PNG, NPZ and a summary.

Every file is written atomically. Coordinates are level-0 pixels of the slide, origin
at the top-left corner, as QuPath expects.

What each format does with patches that were not classified:

- GeoJSON: background (glass) and pending patches are left out. The file lists only
  tissue that the model classified, so importing it into QuPath adds no thousands of
  empty tiles, and a QuPath "count by class" equals :meth:`TissueMap.counts`.
- CSV: one row per grid cell; background patches have class ``background`` and pending
  ones (a cancelled map) ``pending``, both with empty probability cells.
- PNG: background in a neutral light grey, pending cells white.
- NPZ: the whole grid (NaN probabilities where not classified, ``state`` tells why).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from histoviewer.fileio import atomic_write_bytes, atomic_write_text
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING, TissueMap

log = logging.getLogger(__name__)

#: Export formats and the file name suffix each writes after the stem.
FORMATS: dict[str, str] = {
    "geojson": ".geojson",
    "csv": ".csv",
    "png": ".png",
    "npz": ".npz",
    "summary": ".summary.json",
}
DEFAULT_FORMATS: tuple[str, ...] = ("geojson", "csv", "png", "npz", "summary")

BACKGROUND_COLOR = (224, 224, 224)
PENDING_COLOR = (255, 255, 255)
# The PNG's longest side is about this many pixels (whole pixels per patch, at least 1).
_PNG_TARGET = 1024
_PNG_MAX_CELL = 32


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """Format names from "geojson,csv" or a list; ValueError names an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower() for s in items if s.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r} (choose from {', '.join(FORMATS)})")
    if not names:
        raise ValueError(f"no export format given (choose from {', '.join(FORMATS)})")
    return list(dict.fromkeys(names))


def export_all(
    tmap: TissueMap, out_dir: str | Path, stem: str, formats: Iterable[str] = DEFAULT_FORMATS
) -> dict[str, Path]:
    """Write ``out_dir/<stem><suffix>`` for each format; returns {format: path}."""
    out_dir = Path(out_dir)
    writers = {
        "geojson": export_geojson,
        "csv": export_csv,
        "png": export_png,
        "npz": export_npz,
        "summary": export_summary,
    }
    written: dict[str, Path] = {}
    for fmt in parse_formats(formats):
        path = out_dir / f"{stem}{FORMATS[fmt]}"
        writers[fmt](tmap, path)
        written[fmt] = path
        log.info("wrote %s", path)
    return written


def probability_name(class_name: str) -> str:
    """The GeoJSON measurement name holding a class's probability."""
    return f"{class_name} probability"


def geojson_dict(tmap: TissueMap) -> dict[str, Any]:
    """A GeoJSON FeatureCollection as QuPath reads it: one square "tile" per classified patch.

    Each feature's properties hold ``objectType: "tile"``, ``classification``
    ({name, color [r, g, b]}) and ``measurements`` ({"<class> probability": p}).
    """
    labels = tmap.labels
    features = []
    rows, cols = np.nonzero(tmap.state == CLASSIFIED)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        x, y, w, h = tmap.patch_box(r, c)
        label = int(labels[r, c])
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        measurements = {
            probability_name(name): round(float(p), 6)
            for name, p in zip(tmap.class_names, tmap.probs[r, c], strict=True)
        }
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "name": f"patch r{r} c{c}",
                    "classification": {
                        "name": tmap.class_names[label],
                        "color": list(tmap.class_colors[label]),
                    },
                    "measurements": measurements,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def export_geojson(tmap: TissueMap, path: str | Path) -> None:
    """Classified patches as QuPath tiles (see :func:`geojson_dict`)."""
    atomic_write_text(path, json.dumps(geojson_dict(tmap), separators=(",", ":")))


def export_csv(tmap: TissueMap, path: str | Path) -> None:
    """One row per patch: row, col, x, y, width, height, class, then one column per class.

    Coordinates are the patch's level-0 box; probability cells are empty for
    background and pending patches.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "col", "x", "y", "width", "height", "class", *tmap.class_names])
    labels = tmap.labels
    empty = [""] * tmap.num_classes
    for r in range(tmap.rows):
        for c in range(tmap.cols):
            x, y, w, h = tmap.patch_box(r, c)
            state = tmap.state[r, c]
            if state == CLASSIFIED:
                name = tmap.class_names[int(labels[r, c])]
                probs = [f"{p:.6f}" for p in tmap.probs[r, c].tolist()]
            else:
                name = "background" if state == BACKGROUND else "pending"
                probs = empty
            writer.writerow([r, c, x, y, w, h, name, *probs])
    atomic_write_text(path, buffer.getvalue())


def map_image(tmap: TissueMap) -> np.ndarray:
    """uint8 (rows, cols, 3): each patch in its class colour, background grey, pending white."""
    palette = np.array([*tmap.class_colors, BACKGROUND_COLOR, PENDING_COLOR], dtype=np.uint8)
    index = tmap.labels.astype(np.int64)
    index[tmap.state == BACKGROUND] = tmap.num_classes
    index[tmap.state == PENDING] = tmap.num_classes + 1
    return palette[index]


def png_scale(rows: int, cols: int) -> int:
    """Whole pixels per patch so that the longest side is about 1024 px."""
    return int(min(max(1, _PNG_TARGET // max(rows, cols, 1)), _PNG_MAX_CELL))


def export_png(tmap: TissueMap, path: str | Path) -> None:
    """The map as a colour image, each patch a square of :func:`png_scale` pixels."""
    k = png_scale(tmap.rows, tmap.cols)
    image = np.repeat(np.repeat(map_image(tmap), k, axis=0), k, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def export_npz(tmap: TissueMap, path: str | Path) -> None:
    """The map's arrays (readable by ``TissueMap.load``) plus self-describing extras.

    Arrays: ``probs`` (rows, cols, C) float32 NaN where not classified, ``state``
    (0 pending, 1 classified, 2 background), ``labels`` (-1 where not classified),
    ``class_names``, ``x`` and ``y`` (level-0 top-left of each column / row),
    ``metadata`` (JSON text). No pickled objects.
    """
    x = tmap.origin[0] + np.arange(tmap.cols, dtype=np.int64) * tmap.stride
    y = tmap.origin[1] + np.arange(tmap.rows, dtype=np.int64) * tmap.stride
    extra = {
        "labels": tmap.labels,
        "class_names": np.array(tmap.class_names),
        "x": x,
        "y": y,
    }
    tmap.save(path, extra=extra)


def summarize(tmap: TissueMap) -> dict[str, Any]:
    """Class counts, fractions of the classified tissue and areas in mm2, plus provenance."""
    counts = tmap.counts()
    fractions = tmap.fractions()
    areas = tmap.areas_mm2()
    return {
        "slide": tmap.slide,
        "model": tmap.model,
        "patches": tmap.rows * tmap.cols,
        "grid": {
            "rows": tmap.rows,
            "cols": tmap.cols,
            "patch_size_px": tmap.patch_size,
            "stride_px": tmap.stride,
            "stride_model_px": tmap.stride_model,
            "mpp": tmap.mpp,
        },
        "classified": tmap.classified_count,
        "background": tmap.background_count,
        "pending": tmap.pending_count,
        "complete": tmap.complete,
        "elapsed_s": round(tmap.elapsed, 3),
        "tissue_area_mm2": round(tmap.classified_count * tmap.patch_area_mm2, 6),
        "classes": [
            {
                "name": name,
                "color": list(color),
                "count": counts[name],
                "fraction": round(fractions[name], 6),
                "area_mm2": round(areas[name], 6),
            }
            for name, color in zip(tmap.class_names, tmap.class_colors, strict=True)
        ],
    }


def export_summary(tmap: TissueMap, path: str | Path) -> None:
    """:func:`summarize` as an indented JSON file."""
    atomic_write_text(path, json.dumps(summarize(tmap), indent=2) + "\n")


def summary_line(tmap: TissueMap, *, limit: int = 8) -> str:
    """Class fractions as one short line, largest first: "tumor 41.2 %, stroma 20.0 %, ..."."""
    fractions = sorted(tmap.fractions().items(), key=lambda kv: -kv[1])
    shown = [f"{name} {100 * f:.1f} %" for name, f in fractions[:limit] if f > 0]
    return ", ".join(shown) if shown else "no tissue classified"


__all__ = [
    "BACKGROUND_COLOR",
    "DEFAULT_FORMATS",
    "FORMATS",
    "PENDING_COLOR",
    "export_all",
    "export_csv",
    "export_geojson",
    "export_npz",
    "export_png",
    "export_summary",
    "geojson_dict",
    "map_image",
    "parse_formats",
    "summarize",
    "summary_line",
]
