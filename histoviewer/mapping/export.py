"""Writing a TissueMap for other tools: GeoJSON (QuPath), CSV, PNG, NPZ and a summary.

Every file is written atomically. Coordinates are level-0 pixels of the slide, origin
at the top-left corner, as QuPath expects. Every file records the slide's scale and
where it came from (read from the file, given by the user, or assumed), because every
area and every patch position rests on it.

What each format does with patches that were not classified:

- GeoJSON: one square tile per classified patch, drawn as its cell (the part of the
  slide the patch stands for; cells tile the slide without overlap, so QuPath's areas
  add up). Background (glass) and pending patches are left out: importing it into
  QuPath adds no thousands of empty tiles, and a QuPath "count by class" equals
  :meth:`TissueMap.counts`.
- CSV: ``#`` header lines (slide, scale, model, grid), then one row per grid cell with
  the box of the patch the model saw; background patches have class ``background``
  and pending ones (a cancelled map) ``pending``, both with empty probability cells.
- PNG: background in a neutral light grey, pending cells white, the legend beside.
- NPZ: the whole grid (NaN probabilities where not classified, ``state`` tells why).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from histoviewer import __version__
from histoviewer.fileio import atomic_write_bytes, atomic_write_chunks, atomic_write_text
from histoviewer.mapping.quantities import quantities, quantity_lines
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING, TissueMap
from histoviewer.slide.mpp import ASSUMED

log = logging.getLogger(__name__)

#: Export formats and the file name suffix each writes after the stem: the viewer's
#: File > Export and ``histoviewer map`` name a slide's exports alike,
#: ``<slide name><suffix>`` (:func:`export_name`).
FORMATS: dict[str, str] = {
    "geojson": ".geojson",
    "geojson.gz": ".geojson.gz",
    "csv": ".csv",
    "png": ".png",
    "npz": ".npz",
    "summary": ".summary.json",
    "report": ".report.pdf",
    "classes-tiff": ".classes.ome.tif",
    "probabilities-tiff": ".probabilities.ome.tif",
}
DEFAULT_FORMATS: tuple[str, ...] = ("geojson", "csv", "png", "npz", "summary")
#: What each format is, in a few words (help texts, dialogs).
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "geojson": "QuPath tiles, one per tissue patch",
    "geojson.gz": "the same, gzip-compressed (QuPath reads it)",
    "csv": "one row per patch",
    "png": "the map with its legend",
    "npz": "NumPy arrays of the whole grid",
    "summary": "quantities, settings and provenance (JSON)",
    "report": "a PDF report to keep",
    "classes-tiff": "pyramidal OME-TIFF of the class map at the slide's size",
    "probabilities-tiff": "pyramidal OME-TIFF, one uint8 channel per class probability",
}

#: The longest side of the slide picture a report shows (pixels).
REPORT_THUMBNAIL = 1024
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


def export_name(stem: str, fmt: str) -> str:
    """The file name of format ``fmt`` for a slide named ``stem``: "CMU-1.geojson"."""
    return f"{stem}{FORMATS[fmt]}"


def slide_stem(tmap: TissueMap) -> str:
    """The name exports of ``tmap`` are given: its slide file's name without the
    extension ("slide" for a map of an in-memory slide)."""
    path = str((tmap.slide or {}).get("path") or "")
    return Path(path).stem if path else "slide"


Region = tuple[str, np.ndarray]  # a name and a bool (rows, cols) mask over the map


def write_export(
    tmap: TissueMap,
    fmt: str,
    path: str | Path,
    *,
    thumbnail: np.ndarray | None = None,
    regions: Sequence[Region] = (),
) -> Path:
    """Write ``tmap`` in format ``fmt`` to ``path`` (atomically).

    ``thumbnail`` (RGB of the whole slide) and ``regions`` are for the report and the
    summary; the other formats ignore them.
    """
    fmt = parse_formats([fmt])[0]
    path = Path(path)
    if fmt == "report":
        from histoviewer.mapping.report import write_report

        write_report(tmap, path, thumbnail=thumbnail, regions=list(regions))
    elif fmt == "summary":
        export_summary(tmap, path, regions=regions)
    elif fmt in ("classes-tiff", "probabilities-tiff"):
        from histoviewer.mapping import ome_tiff

        write = (
            ome_tiff.export_class_tiff
            if fmt == "classes-tiff"
            else ome_tiff.export_probability_tiff
        )
        write(tmap, path)
    else:
        writers = {
            "geojson": export_geojson,
            "geojson.gz": export_geojson,
            "csv": export_csv,
            "png": export_png,
            "npz": export_npz,
        }
        writers[fmt](tmap, path)
    log.info("wrote %s", path)
    return path


def export_all(
    tmap: TissueMap,
    out_dir: str | Path,
    stem: str,
    formats: Iterable[str] = DEFAULT_FORMATS,
    *,
    thumbnail: np.ndarray | None = None,
    regions: Sequence[Region] = (),
) -> dict[str, Path]:
    """Write ``out_dir/<stem><suffix>`` for each format; returns {format: path}.

    See :func:`write_export` for ``thumbnail`` and ``regions``.
    """
    out_dir = Path(out_dir)
    return {
        fmt: write_export(
            tmap, fmt, out_dir / export_name(stem, fmt), thumbnail=thumbnail, regions=regions
        )
        for fmt in parse_formats(formats)
    }


def estimate_bytes(cells: int, num_classes: int, formats: Iterable[str]) -> int:
    """About the most the exports of a map of ``cells`` patches will take on disk.

    Generous per-patch figures (measured: about 490 bytes per patch in GeoJSON and
    100 in CSV with 8 classes), so that a run checked against it up front does not
    fail for space after hours of inference.
    """
    per_cell = {
        # A polygon, a class, one probability per class and the uncertainty.
        "geojson": 240 + 48 * (num_classes + 1),
        # gzip takes GeoJSON's repetitive text to about a fifth (a third, to be safe).
        "geojson.gz": (240 + 48 * (num_classes + 1)) // 3,
        "csv": 48 + 12 * (num_classes + 1),
        # float32 probabilities and uncertainty, state, labels (uncompressed)
        "npz": 20 + 4 * num_classes,
        "png": 0,
        "summary": 0,
        "report": 0,
        # Compressed tiles of flat cells: well under a byte a pixel; a patch's cell
        # holds tens of thousands of pixels, and its pyramid a third more.
        "classes-tiff": 2048,
        "probabilities-tiff": 2048 * num_classes,
    }
    fixed = {
        "png": 3 * (_PNG_TARGET + _PNG_MAX_CELL) ** 2,
        "summary": 64 * 1024,
        "report": 8 * 1024 * 1024,
        "classes-tiff": 1024 * 1024,
        "probabilities-tiff": 1024 * 1024,
    }
    total = 0
    for fmt in parse_formats(formats):
        total += fixed.get(fmt, 0) + cells * per_cell[fmt]
    return total


def probability_name(class_name: str) -> str:
    """The GeoJSON measurement name holding a class's probability."""
    return f"{class_name} probability"


def geojson_dict(tmap: TissueMap) -> dict[str, Any]:
    """A GeoJSON FeatureCollection as QuPath reads it: one "tile" per classified patch.

    Each tile is the patch's cell. Each feature's properties hold ``objectType:
    "tile"``, ``classification`` ({name, color [r, g, b]}) and ``measurements``
    ({"<class> probability": p, and "uncertainty": the normalised entropy of
    :meth:`TissueMap.uncertainty`}). The collection's foreign member ``histoviewer``
    (which QuPath ignores) records the slide, its scale and source, the model and
    the grid: :func:`provenance`.
    """
    return {
        "type": "FeatureCollection",
        "histoviewer": provenance(tmap),
        "features": list(geojson_features(tmap)),
    }


def geojson_features(tmap: TissueMap) -> Iterator[dict[str, Any]]:
    """The features of :func:`geojson_dict`, one classified patch at a time."""
    labels = tmap.labels
    doubt = tmap.uncertainty()
    ex, ey = (_coordinates(edges) for edges in tmap.cell_edges())
    rows, cols = np.nonzero(tmap.state == CLASSIFIED)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        x0, x1, y0, y1 = ex[c], ex[c + 1], ey[r], ey[r + 1]
        label = int(labels[r, c])
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        measurements = {
            probability_name(name): round(float(p), 6)
            for name, p in zip(tmap.class_names, tmap.probs[r, c], strict=True)
        }
        measurements["uncertainty"] = round(float(doubt[r, c]), 6)
        if tmap.spread is not None:
            measurements["tta spread"] = round(float(tmap.spread[r, c]), 6)
        yield (
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


def _coordinates(edges: np.ndarray) -> list[int | float]:
    # Whole pixels stay integers (they nearly always are); halves where a cell edge
    # falls between pixels.
    return [int(v) if float(v).is_integer() else float(v) for v in edges.tolist()]


def provenance(tmap: TissueMap) -> dict[str, Any]:
    """What every export records about where a map came from: slide, scale, model, grid."""
    slide = tmap.slide or {}
    model = tmap.model or {}
    return {
        "slide": slide.get("path") or "",
        "scale": scale_record(tmap),
        "model": {
            "name": model.get("name", ""),
            "fingerprint": model.get("fingerprint", ""),
            "patch_size_px": model.get("patch_size"),
            "mpp": model.get("mpp"),
        },
        "grid": grid_record(tmap),
    }


def grid_record(tmap: TissueMap) -> dict[str, int]:
    """The grid's shape and spacing: rows, cols, patch size and stride (level-0 and model px)."""
    return {
        "rows": tmap.rows,
        "cols": tmap.cols,
        "patch_size_px": tmap.patch_size,
        "stride_px": tmap.stride,
        "stride_model_px": tmap.stride_model,
    }


def scale_record(tmap: TissueMap) -> dict[str, Any]:
    """The slide's scale as the map used it: ``mpp``, ``source`` and ``assumed``."""
    source = str((tmap.slide or {}).get("mpp_source") or "")
    return {"mpp": tmap.mpp, "source": source, "assumed": source == ASSUMED}


def export_geojson(tmap: TissueMap, path: str | Path) -> None:
    """Classified patches as QuPath tiles (see :func:`geojson_dict`); a path ending in
    ``.gz`` is gzip-compressed. Written feature by feature, so that a map of half a
    million patches is never held as one string."""
    atomic_write_chunks(path, _geojson_chunks(tmap))


def _geojson_chunks(tmap: TissueMap) -> Iterator[str]:
    head = json.dumps(provenance(tmap), separators=(",", ":"))
    yield f'{{"type":"FeatureCollection","histoviewer":{head},"features":['
    pieces: list[str] = []
    for i, feature in enumerate(geojson_features(tmap)):
        pieces.append(("," if i else "") + json.dumps(feature, separators=(",", ":")))
        if len(pieces) >= 2048:
            yield "".join(pieces)
            pieces.clear()
    yield "".join(pieces) + "]}"


def export_csv(tmap: TissueMap, path: str | Path) -> None:
    """``#`` header lines, then one row per patch: row, col, x, y, width, height, class,
    one column per class, then ``uncertainty`` (:meth:`TissueMap.uncertainty`) and, for
    a map made with test-time augmentation, ``tta_spread``.

    The header lines give the slide, its scale and where it came from, the model and
    the grid (read the file with ``pandas.read_csv(path, comment="#")``).
    Coordinates are the level-0 box of the patch the model saw; probability cells are
    empty for background and pending patches.
    """
    buffer = io.StringIO()
    for line in header_lines(tmap):
        buffer.write(f"# {line}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["tta_spread"] if tmap.spread is not None else []
    columns = ["row", "col", "x", "y", "width", "height", "class", *tmap.class_names]
    writer.writerow([*columns, "uncertainty", *extra])
    labels = tmap.labels
    doubt = tmap.uncertainty()
    spread = tmap.uncertainty("tta")
    empty = [""] * (tmap.num_classes + 1 + len(extra))
    for r in range(tmap.rows):
        for c in range(tmap.cols):
            x, y, w, h = tmap.patch_box(r, c)
            state = tmap.state[r, c]
            if state == CLASSIFIED:
                name = tmap.class_names[int(labels[r, c])]
                probs = [f"{p:.6f}" for p in tmap.probs[r, c].tolist()]
                probs.append(f"{float(doubt[r, c]):.6f}")
                if extra:
                    probs.append(f"{float(spread[r, c]):.6f}")
            else:
                name = "background" if state == BACKGROUND else "pending"
                probs = empty
            writer.writerow([r, c, x, y, w, h, name, *probs])
    atomic_write_text(path, buffer.getvalue())


def header_lines(tmap: TissueMap) -> list[str]:
    """What the CSV's ``#`` lines say: slide, scale and source, model, grid."""
    info = provenance(tmap)
    scale = info["scale"]
    model = info["model"]
    grid = info["grid"]
    source = scale["source"] or "unknown source"
    lines = [
        f"HistoViewer tissue map of {info['slide'] or 'an in-memory slide'}",
        f"scale: {scale['mpp']:g} µm/px ({source})"
        + (
            " - ASSUMED: no scale in the slide's metadata; areas and sizes rest on it"
            if scale["assumed"]
            else ""
        ),
        f"model: {model['name']} (fingerprint {str(model['fingerprint'])[:12]})"
        + (
            f", patches of {model['patch_size_px']} px at {model['mpp']:g} µm/px"
            if model["patch_size_px"] and model["mpp"]
            else ""
        ),
        f"grid: {grid['rows']} x {grid['cols']} patches of {grid['patch_size_px']} px, "
        f"stride {grid['stride_px']} px (level 0)",
        f"settings: {settings_text(tmap.settings)}",
        f"software: HistoViewer {__version__}",
    ]
    lines += [f"warning: {w['message']}" for w in tmap.warnings]
    lines += quantity_lines(quantities(tmap))
    return lines


def settings_text(settings: dict[str, Any]) -> str:
    """How a map was made, in one line: "stride 150 model px, background skipped (tissue
    >= 5 %), no test-time augmentation, precision auto, backend auto"."""
    if not settings:
        return "not recorded (a map made before HistoViewer recorded them)"
    parts = []
    if "stride_model_px" in settings:
        parts.append(f"stride {settings['stride_model_px']} model px")
    if "skip_background" in settings:
        if settings["skip_background"]:
            threshold = settings.get("min_tissue")
            parts.append(
                "background skipped"
                + (f" (tissue >= {100 * float(threshold):g} %)" if threshold is not None else "")
            )
        else:
            parts.append("background classified too")
    if "tta" in settings:
        parts.append("test-time augmentation" if settings["tta"] else "no test-time augmentation")
    for key in ("precision", "backend"):
        if key in settings:
            parts.append(f"{key} {settings[key]}")
    if "ran_with" in settings:
        parts.append(f"ran with {settings['ran_with']} on {settings.get('device', '?')}")
    return ", ".join(parts)


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
    """The map as a colour image, each patch a square of :func:`png_scale` pixels from
    the top-left corner, with its legend beside it (classes, shares of tissue, the
    quantities, model and scale: :func:`~histoviewer.mapping.report.map_legend_image`)."""
    from histoviewer.mapping.report import map_legend_image

    image = map_legend_image(tmap)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def export_npz(tmap: TissueMap, path: str | Path) -> None:
    """The map's arrays (readable by ``TissueMap.load``) plus self-describing extras.

    Arrays: ``probs`` (rows, cols, C) float32 NaN where not classified, ``state``
    (0 pending, 1 classified, 2 background), ``labels`` (-1 where not classified),
    ``uncertainty`` (float32, normalised entropy, NaN where not classified),
    ``class_names``, ``x`` and ``y`` (level-0 left / top edge of each column's / row's
    patches, the last ones shifted inward to end at the slide's edge),
    ``metadata`` (JSON text). No pickled objects.
    """
    x, y = tmap.patch_starts()
    extra = {
        "labels": tmap.labels,
        "uncertainty": tmap.uncertainty(),
        "class_names": np.array(tmap.class_names),
        "x": x,
        "y": y,
    }
    tmap.save(path, extra=extra)


def summarize(tmap: TissueMap, regions: Sequence[Region] = ()) -> dict[str, Any]:
    """Class counts, fractions of the classified patches and areas in mm2, the
    quantities (:mod:`~histoviewer.mapping.quantities`: tissue area, shares of tissue,
    tumour-stroma ratio, lymphocyte share) of the slide and of each region, plus
    provenance: slide, scale, model, every setting and the software version.

    ``scale`` records the slide's µm/px and where it came from (``assumed`` True when
    nothing in the slide said it: every area then rests on a guess).
    """
    counts = tmap.counts()
    fractions = tmap.fractions()
    areas = tmap.areas_mm2()
    return {
        "software": {"name": "HistoViewer", "version": __version__},
        "slide": tmap.slide,
        "scale": scale_record(tmap),
        "model": tmap.model,
        "settings": dict(tmap.settings),
        "quantities": quantities(tmap).to_dict(),
        "regions": [
            {"name": name, "quantities": quantities(tmap, mask).to_dict()} for name, mask in regions
        ],
        "patches": tmap.rows * tmap.cols,
        "grid": {**grid_record(tmap), "mpp": tmap.mpp},
        "classified": tmap.classified_count,
        "background": tmap.background_count,
        "pending": tmap.pending_count,
        "complete": tmap.complete,
        "elapsed_s": round(tmap.elapsed, 3),
        "warnings": list(tmap.warnings),
        "tissue_area_mm2": round(tmap.classified_area_mm2, 6),
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


def export_summary(tmap: TissueMap, path: str | Path, regions: Sequence[Region] = ()) -> None:
    """:func:`summarize` as an indented JSON file."""
    atomic_write_text(path, json.dumps(summarize(tmap, regions), indent=2) + "\n")


def summary_line(tmap: TissueMap, *, limit: int = 8) -> str:
    """Class fractions as one short line, largest first: "tumor 41.2 %, stroma 20.0 %, ..."."""
    fractions = sorted(tmap.fractions().items(), key=lambda kv: -kv[1])
    shown = [f"{name} {100 * f:.1f} %" for name, f in fractions[:limit] if f > 0]
    return ", ".join(shown) if shown else "no tissue classified"


__all__ = [
    "BACKGROUND_COLOR",
    "DEFAULT_FORMATS",
    "FORMATS",
    "FORMAT_DESCRIPTIONS",
    "PENDING_COLOR",
    "estimate_bytes",
    "export_all",
    "export_csv",
    "export_geojson",
    "export_name",
    "export_npz",
    "export_png",
    "export_summary",
    "geojson_dict",
    "geojson_features",
    "header_lines",
    "map_image",
    "parse_formats",
    "provenance",
    "scale_record",
    "settings_text",
    "slide_stem",
    "summarize",
    "summary_line",
    "write_export",
]
