"""Mapping a slide: patch grid, batched inference engine, TissueMap result, exports.

Public API (see docs/architecture.md):

- :class:`PatchGrid`, :func:`make_grid` - where the patches lie, in level-0 pixels.
- :func:`map_slide` -> :class:`TissueMap`, with :class:`MapProgress` and
  :class:`BatchResult` for progress callbacks and live painting.
- :class:`TissueMap` (``save`` / ``load``), states :data:`PENDING`,
  :data:`CLASSIFIED`, :data:`BACKGROUND`; :class:`TissueMapError`.
- Exports: :func:`export_geojson`, :func:`export_csv`, :func:`export_png`,
  :func:`export_npz`, :func:`summarize`, :func:`export_all`, :func:`write_export`
  (also the PDF report and the OME-TIFFs).
- :class:`Quantities` (``histoviewer.mapping.quantities.quantities(tmap, mask)``):
  tissue area, shares of tissue, tumour-stroma ratio and lymphocyte share, of a slide
  or a region.
- :func:`tissue_fractions`, :func:`tissue_mask` - glass versus tissue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from histoviewer.lazy import lazy_exports

# Submodules load on first use (PEP 562): the command line and the viewer import
# this package without paying for torch or scikit-learn until they need them.
_EXPORTS = {
    "tissue_fractions": "histoviewer.mapping.background",
    "tissue_mask": "histoviewer.mapping.background",
    "BatchResult": "histoviewer.mapping.engine",
    "MapProgress": "histoviewer.mapping.engine",
    "map_slide": "histoviewer.mapping.engine",
    "slide_identity": "histoviewer.mapping.tissue_map",
    "DEFAULT_FORMATS": "histoviewer.mapping.export",
    "FORMATS": "histoviewer.mapping.export",
    "export_all": "histoviewer.mapping.export",
    "export_csv": "histoviewer.mapping.export",
    "export_geojson": "histoviewer.mapping.export",
    "export_npz": "histoviewer.mapping.export",
    "export_png": "histoviewer.mapping.export",
    "export_summary": "histoviewer.mapping.export",
    "summarize": "histoviewer.mapping.export",
    "write_export": "histoviewer.mapping.export",
    "Quantities": "histoviewer.mapping.quantities",
    "PatchGrid": "histoviewer.mapping.grid",
    "make_grid": "histoviewer.mapping.grid",
    "BACKGROUND": "histoviewer.mapping.tissue_map",
    "CLASSIFIED": "histoviewer.mapping.tissue_map",
    "PENDING": "histoviewer.mapping.tissue_map",
    "TissueMap": "histoviewer.mapping.tissue_map",
    "TissueMapError": "histoviewer.mapping.tissue_map",
}

if TYPE_CHECKING:
    from histoviewer.mapping.background import tissue_fractions, tissue_mask
    from histoviewer.mapping.engine import BatchResult, MapProgress, map_slide
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
        write_export,
    )
    from histoviewer.mapping.grid import PatchGrid, make_grid
    from histoviewer.mapping.quantities import Quantities
    from histoviewer.mapping.tissue_map import (
        BACKGROUND,
        CLASSIFIED,
        PENDING,
        TissueMap,
        TissueMapError,
        slide_identity,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BACKGROUND",
    "CLASSIFIED",
    "DEFAULT_FORMATS",
    "FORMATS",
    "PENDING",
    "BatchResult",
    "MapProgress",
    "PatchGrid",
    "Quantities",
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
    "write_export",
]
