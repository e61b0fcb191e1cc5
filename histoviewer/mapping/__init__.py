"""Mapping a slide: patch grid, batched inference engine, TissueMap result, exports.

Public API (see docs/architecture.md):

- :class:`PatchGrid`, :func:`make_grid` - where the patches lie, in level-0 pixels.
- :func:`map_slide` -> :class:`TissueMap`, with :class:`MapProgress` and
  :class:`BatchResult` for progress callbacks and live painting.
- :class:`TissueMap` (``save`` / ``load``), states :data:`PENDING`,
  :data:`CLASSIFIED`, :data:`BACKGROUND`; :class:`TissueMapError`.
- Exports: :func:`export_geojson`, :func:`export_csv`, :func:`export_png`,
  :func:`export_npz`, :func:`summarize`, :func:`export_all`.
- :func:`tissue_fractions`, :func:`tissue_mask` - glass versus tissue.
"""

from histoviewer.mapping.background import tissue_fractions, tissue_mask
from histoviewer.mapping.engine import BatchResult, MapProgress, map_slide, slide_identity
from histoviewer.mapping.export import (
    DEFAULT_FORMATS,
    FORMATS,
    export_all,
    export_csv,
    export_geojson,
    export_npz,
    export_png,
    export_summary,
    summarize,
)
from histoviewer.mapping.grid import PatchGrid, make_grid
from histoviewer.mapping.tissue_map import (
    BACKGROUND,
    CLASSIFIED,
    PENDING,
    TissueMap,
    TissueMapError,
)

__all__ = [
    "BACKGROUND",
    "CLASSIFIED",
    "DEFAULT_FORMATS",
    "FORMATS",
    "PENDING",
    "BatchResult",
    "MapProgress",
    "PatchGrid",
    "TissueMap",
    "TissueMapError",
    "export_all",
    "export_csv",
    "export_geojson",
    "export_npz",
    "export_png",
    "export_summary",
    "make_grid",
    "map_slide",
    "slide_identity",
    "summarize",
    "tissue_fractions",
    "tissue_mask",
]
