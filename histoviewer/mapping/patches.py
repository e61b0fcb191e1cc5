"""Reading batches of patches from a slide, efficiently and in background threads.

Neighbouring patches of one grid row are read as one band and sliced, rather than
one ``read_region`` per patch: every read pays a fixed cost (locking,
finding the strips or tiles, converting colour), and a row band touches each strip
or tile once instead of once per patch. A band never spans a patch that is not
wanted (background glass is not read), nor wide gaps of a grid whose stride
exceeds the patch size. The pixels are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from histoviewer.errors import HistoViewerError, SlideError
from histoviewer.mapping.grid import PatchGrid

log = logging.getLogger(__name__)

# Read a row's patches as one band when the band is at most this many times the
# area of the patches wanted from it.
_BAND_WASTE = 2.0


def read_patches(
    slide,
    grid: PatchGrid,
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    out: np.ndarray | None = None,
    bands: bool = True,
) -> np.ndarray:
    """uint8 (N, S, S, 3) pixels of patches (rows[i], cols[i]); S = ``grid.read_size``.

    Reads from ``grid.level``. ``out`` may supply the array to fill (e.g. pinned
    memory). ``bands=False`` forces one read per patch. Reader failures become
    SlideError naming the slide.
    """
    n = len(rows)
    size = grid.read_size
    if out is None:
        out = np.empty((n, size, size, 3), dtype=np.uint8)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(int(r), []).append(i)
    try:
        for r, members in groups.items():
            _read_row(slide, grid, r, [int(cols[i]) for i in members], members, out, bands)
    except HistoViewerError:
        raise
    except Exception as exc:  # a reader failing mid-map is the slide's fault for the user
        name = getattr(slide, "path", None) or "the slide"
        raise SlideError(f"cannot read {name}: {type(exc).__name__}: {exc}") from exc
    return out


def _read_row(
    slide,
    grid: PatchGrid,
    row: int,
    cols: list[int],
    slots: list[int],
    out: np.ndarray,
    bands: bool,
) -> None:
    y = grid.read_origin(row, cols[0])[1]
    order = sorted(range(len(cols)), key=lambda i: cols[i])
    run: list[int] = []
    for i in order:
        # A run is a stretch of neighbouring grid columns: a band over it reads no
        # pixel of a patch that is not wanted (background stays unread).
        if run and cols[i] != cols[run[-1]] + 1:
            _read_run(
                slide, grid, row, y, [cols[j] for j in run], [slots[j] for j in run], out, bands
            )
            run = []
        run.append(i)
    if run:
        _read_run(slide, grid, row, y, [cols[j] for j in run], [slots[j] for j in run], out, bands)


def _read_run(slide, grid, row, y, cols, slots, out, bands) -> None:
    size = grid.read_size
    xs = [grid.read_origin(row, c)[0] for c in cols]
    first = xs[0]
    band_width = xs[-1] - first + size
    if bands and len(cols) > 1 and band_width <= _BAND_WASTE * len(cols) * size:
        band = slide.read_region(grid.level, first, y, band_width, size)
        for slot, x in zip(slots, xs, strict=True):
            out[slot] = band[:, x - first : x - first + size]
    else:
        for slot, x in zip(slots, xs, strict=True):
            out[slot] = slide.read_region(grid.level, x, y, size, size)
