"""Patch labels a pathologist gives on a slide, and how they flow back into training.

- :mod:`~histoviewer.labels.store`: :class:`LabelSet` (the labels of one slide, as
  level-0 patch boxes with a class name) and :class:`LabelStore` (one file per slide in
  the user's data folder, written atomically).
- :mod:`~histoviewer.labels.geojson`: QuPath GeoJSON annotations in and out.
- :mod:`~histoviewer.labels.extract`: labelled patches cut at a model's scale into a
  class-folder dataset that ``histoviewer train`` reads.

Headless: no Qt here.
"""

from histoviewer.labels.store import LabelError, LabelSet, LabelStore, PatchLabel

__all__ = ["LabelError", "LabelSet", "LabelStore", "PatchLabel"]
