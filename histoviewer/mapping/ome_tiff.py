"""Pyramidal OME-TIFF images of a TissueMap, at the slide's own size and scale.

Two files, each an image with exactly the slide's level-0 width and height (the
map's ``extent`` from its ``origin``; for maps saved before edges were mapped, the
area the grid covers), whose every pixel holds the value of the grid cell (see
:mod:`histoviewer.mapping.grid`) containing the pixel's centre:

- ``<stem>.classes.ome.tif``: one uint8 channel named "class": 0 where the patch was
  not classified (background or pending), ``k + 1`` for class ``k``. It is a palette
  image whose colour map shows each class in its colour (0 white), and its OME-XML
  lists the classes: the image Description ("0=not classified,1=tumor,...") and a
  MapAnnotation of namespace ``histoviewer.classes`` (value -> name), another of
  ``histoviewer.class-colors`` (value -> ``#rrggbb``).
- ``<stem>.probabilities.ome.tif``: one uint8 channel per class, named and coloured
  as the class: the probability times 255, rounded; 0 where not classified.

Both are tiled (512 x 512), deflate-compressed, BigTIFF, with the full resolution
first and SubIFD sub-resolutions each half the size of the one before, down to one
tile: the layout QuPath, Bio-Formats and tifffile read as a pyramid. The pixel size
(``PhysicalSizeX/Y`` in µm, and the TIFF resolution tags in pixels per cm) is the
slide's, and a third MapAnnotation (``histoviewer.provenance``) names the slide,
scale source and model.

In QuPath, open the file (File > Open, or drag it onto the window): it opens as an
image of its own with the slide's size, pixel size and coordinates, so objects drawn
on one can be transferred to the other (Objects > Annotations > Transfer last
annotation, or copy and paste). In napari, read the levels with tifffile and add the
slide and the map with the same ``scale=(mpp, mpp)``.

Nothing as large as the slide is ever held in memory: each tile is made from the small
per-cell array (a few cell values, each repeated over the pixels its cell covers) and
compressed by zlib on a few threads, a bounded number of tiles ahead; a tile of one
value (glass) is compressed once. Lower levels are sampled from the cells at their own
pixels' centres, not shrunk from level 0.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from histoviewer.fileio import atomic_write
from histoviewer.mapping.export import provenance
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap

TILE = 512
#: zlib level of the tiles: 1 uses deflate's fast matcher, several times faster than the
#: default 6 on these tiles of long runs, for files a few times larger.
ZLIB_LEVEL = 1
NOT_CLASSIFIED_COLOR = (255, 255, 255)
# Tiles compressed at once, on this many threads.
_CHUNK = 64
_WORKERS = max(1, min(4, os.cpu_count() or 1))

_Block = tuple[np.ndarray, np.ndarray, np.ndarray]


def export_class_tiff(tmap: TissueMap, path: str | Path) -> None:
    """Write the class of every pixel (0 not classified, ``k + 1`` class ``k``) as a
    pyramidal palette OME-TIFF (see the module's description); atomically.

    Raises StorageError (a HistoViewerError) when ``path`` cannot be written and
    ValueError for a map with no cells or more than 255 classes.
    """
    if tmap.num_classes > 255:
        raise ValueError(f"a class image holds at most 255 classes, not {tmap.num_classes}")
    values = (tmap.labels + 1).astype(np.uint8)  # labels are -1 where not classified
    colormap = np.zeros((3, 256), dtype=np.uint16)
    for index, color in enumerate([NOT_CLASSIFIED_COLOR, *tmap.class_colors]):
        colormap[:, index] = np.asarray(color, dtype=np.uint16) * 257
    legend = {"0": "not classified", **{str(k + 1): n for k, n in enumerate(tmap.class_names)}}
    colors = {str(k + 1): "#{:02x}{:02x}{:02x}".format(*c) for k, c in enumerate(tmap.class_colors)}
    metadata = {
        "Name": f"{_stem(tmap)} classes",
        "Description": "HistoViewer tissue map, class per pixel: "
        + ",".join(f"{k}={v}" for k, v in legend.items()),
        "Channel": {"Name": "class"},
        "MapAnnotation": [
            {"Namespace": "histoviewer.classes", "Value": legend},
            {"Namespace": "histoviewer.class-colors", "Value": colors},
        ],
    }
    _write(tmap, path, values[None], metadata, photometric="palette", colormap=colormap)


def export_probability_tiff(tmap: TissueMap, path: str | Path) -> None:
    """Write each class's probability (``round(p * 255)``, 0 where not classified) as
    one channel of a pyramidal OME-TIFF (see the module's description); atomically.

    Raises StorageError (a HistoViewerError) when ``path`` cannot be written and
    ValueError for a map with no cells.
    """
    done = tmap.state == CLASSIFIED
    values = np.zeros((tmap.num_classes, tmap.rows, tmap.cols), dtype=np.uint8)
    for k, plane in enumerate(values):  # one class at a time: a big grid's float64 is large
        p = np.clip(np.nan_to_num(tmap.probs[..., k].astype(np.float64)), 0.0, 1.0)
        plane[done] = np.rint(p[done] * 255)
    metadata = {
        "Name": f"{_stem(tmap)} probabilities",
        "Description": "HistoViewer tissue map, class probabilities x 255 per pixel "
        "(0 where not classified), one channel per class",
        "Channel": {
            "Name": list(tmap.class_names),
            "Color": [_ome_color(c) for c in tmap.class_colors],
        },
        "MapAnnotation": [],
    }
    _write(tmap, path, values, metadata, photometric="minisblack", colormap=None)


def tiff_levels(width: int, height: int, tile: int = TILE) -> list[tuple[int, int]]:
    """(width, height) of each pyramid level: full size, then halving (rounded up)
    until the largest side fits one tile."""
    levels = [(int(width), int(height))]
    while max(levels[-1]) > tile:
        w, h = levels[-1]
        levels.append((-(-w // 2), -(-h // 2)))
    return levels


def image_size(tmap: TissueMap) -> tuple[int, int]:
    """(width, height) of the exported images: the level-0 size of the slide the grid
    covers (``origin`` plus ``extent``, or what the grid covers for old maps)."""
    if tmap.rows == 0 or tmap.cols == 0:
        raise ValueError(
            f"cannot export a tissue map image: the map has no cells ({tmap.rows} x "
            f"{tmap.cols} grid) and so no slide area"
        )
    w, h = tmap.covered
    return tmap.origin[0] + w, tmap.origin[1] + h


# --- writing ------------------------------------------------------------------------------


def _write(
    tmap: TissueMap,
    path: str | Path,
    cells: np.ndarray,
    metadata: dict[str, Any],
    *,
    photometric: str,
    colormap: np.ndarray | None,
) -> None:
    """Write ``cells`` (planes, rows, cols) uint8 as a pyramid over the slide."""
    width, height = image_size(tmap)
    levels = tiff_levels(width, height)
    # A zero row and column past the last cell: what pixels outside the grid read.
    planes = np.zeros((cells.shape[0], tmap.rows + 1, tmap.cols + 1), dtype=np.uint8)
    planes[:, :-1, :-1] = cells
    record = provenance(tmap)
    metadata["MapAnnotation"].append(
        {
            "Namespace": "histoviewer.provenance",
            "Value": {
                key: str(value)
                for key, value in (
                    ("slide", record["slide"]),
                    ("mpp", f"{tmap.mpp:g}"),
                    ("mpp source", record["scale"]["source"]),
                    ("model", record["model"]["name"]),
                    ("model fingerprint", record["model"]["fingerprint"]),
                    ("patch size px", tmap.patch_size),
                    ("stride px", tmap.stride),
                )
                if value not in (None, "")
            },
        }
    )
    metadata.update(
        PhysicalSizeX=tmap.mpp,
        PhysicalSizeXUnit="µm",
        PhysicalSizeY=tmap.mpp,
        PhysicalSizeYUnit="µm",
    )
    squeeze = planes.shape[0] == 1
    with (
        atomic_write(path, "wb") as fh,
        # Named, because tifffile wants a name and the temporary file has only a number.
        tifffile.FileHandle(fh, mode="wb", name=Path(path).name) as handle,
        tifffile.TiffWriter(handle, bigtiff=True, ome=True) as tif,
    ):
        for level, (w, h) in enumerate(levels):
            scale = 2**level
            cols, rows = tmap.cells_at(_centres(width, w, scale), _centres(height, h, scale))
            # Outside the grid: the zero column and row past the last cell.
            cols[cols < 0], rows[rows < 0] = tmap.cols, tmap.rows
            tif.write(
                _encoded(_level_tiles(planes, rows, cols, TILE)),
                shape=(h, w) if squeeze else (planes.shape[0], h, w),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="zlib",
                photometric=photometric,
                colormap=colormap,
                resolution=(1e4 / (tmap.mpp * scale), 1e4 / (tmap.mpp * scale)),
                resolutionunit="CENTIMETER",
                metadata=metadata if level == 0 else None,
                subifds=(len(levels) - 1 or None) if level == 0 else None,
                subfiletype=1 if level else 0,
            )


def _centres(length: int, count: int, scale: int) -> np.ndarray:
    """Level-0 centres of a level's ``count`` pixels (``scale`` level-0 px each; the
    last one's part inside the slide)."""
    start = np.arange(count, dtype=np.float64) * scale
    return (start + np.minimum(start + scale, length)) / 2


def _runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal values in ``index``: (value, length) of each."""
    starts = np.flatnonzero(np.diff(index)) + 1
    bounds = np.concatenate(([0], starts, [index.size]))
    return index[bounds[:-1]], np.diff(bounds)


def _level_tiles(
    planes: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int
) -> Iterator[_Block]:
    """Each tile of each plane, in the writer's order (plane, then row-major), as
    (cell values, pixel rows per cell row, pixel columns per cell column)."""
    col_runs = [_runs(cols[x : x + tile]) for x in range(0, cols.size, tile)]
    for plane in planes:
        for y in range(0, rows.size, tile):
            row_cells, row_counts = _runs(rows[y : y + tile])
            picked = plane[row_cells]
            for col_cells, col_counts in col_runs:
                yield picked[:, col_cells], row_counts, col_counts


def _encoded(tiles: Iterator[_Block], tile: int = TILE) -> Iterator[bytes]:
    """Each tile as a zlib stream, in order: a tile of one value (glass) is compressed
    once; the others by zlib on a few threads (zlib lets go of the GIL), a bounded
    number of tiles ahead, so memory stays flat however large the slide."""
    constant: dict[tuple[int, int, int], bytes] = {}

    def encode(block: _Block) -> bytes | None:
        values, row_counts, col_counts = block
        if (values == values.flat[0]).all():
            return None  # compressed once, below, in order
        return zlib.compress(_pixels(values, row_counts, col_counts, tile).data, ZLIB_LEVEL)

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for chunk in _batched(tiles, _CHUNK):
            for block, stream in zip(chunk, pool.map(encode, chunk), strict=True):
                if stream is None:
                    values, row_counts, col_counts = block
                    key = (int(values.flat[0]), int(row_counts.sum()), int(col_counts.sum()))
                    if key not in constant:
                        pixels = _pixels(values, row_counts, col_counts, tile)
                        constant[key] = zlib.compress(pixels.data, 9)
                    stream = constant[key]
                yield stream


def _batched(items: Iterator[_Block], size: int) -> Iterator[list[_Block]]:
    chunk: list[_Block] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pixels(
    values: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray, tile: int
) -> np.ndarray:
    """The whole tile's pixels, zero past the image's edge."""
    pixels = np.zeros((tile, tile), dtype=np.uint8)
    h, w = int(row_counts.sum()), int(col_counts.sum())
    pixels[:h, :w] = np.repeat(np.repeat(values, row_counts, axis=0), col_counts, axis=1)
    return pixels


def _ome_color(color: tuple[int, int, int]) -> int:
    """An RGB colour as OME's signed 32-bit RGBA integer."""
    r, g, b = color
    value = (r << 24) | (g << 16) | (b << 8) | 255
    return value - (1 << 32) if value >= 1 << 31 else value


def _stem(tmap: TissueMap) -> str:
    path = (tmap.slide or {}).get("path") or ""
    return Path(str(path)).stem if path else "tissue map"
