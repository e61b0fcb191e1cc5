"""How many patches a map has classified, of how many, and how many are background:
the same totals, in the same words, wherever the viewer shows them (Qt-free).

A map's patches are *tissue* (to classify: classified or still pending) or
*background* (glass, skipped). The tissue total is what mapping will classify, and
the number the progress bar counts to (:class:`~histoviewer.mapping.engine.MapProgress`
``total``), so the legend's "412 of 981 tissue patches classified" and the progress
text's "412 / 981 tissue patches" agree.

Background is known only once the engine's tissue detection has run. Until then, and
in a map saved without it (a job that failed), pending patches include background:
such a map says "412 of 1,089 patches classified · background not detected yet". A
live map (one a running job fills in) may hold no BACKGROUND patches even after the
detection, because the engine reports only classified batches: pass the job's latest
progress report and its ``skipped`` count stands in for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from histoviewer.mapping.tissue_map import TissueMap


class ProgressCounts(Protocol):
    """What is read of a :class:`~histoviewer.mapping.engine.MapProgress`."""

    done: int
    total: int
    skipped: int


@dataclass(frozen=True)
class MapTotals:
    """A map's patch totals.

    ``classified`` patches are done; ``tissue`` is the tissue total (classified plus
    tissue still to classify), ``background`` the background patches skipped; both
    are None while the background is not known (``tissue`` then has no better bound
    than ``classified + pending``, which is ``patches``).
    """

    classified: int
    tissue: int | None
    background: int | None
    pending: int  # patches of the map not classified and not marked background
    patches: int  # all patches of the map's grid

    @property
    def tissue_left(self) -> int | None:
        """Tissue patches still to classify (None: not known)."""
        return None if self.tissue is None else self.tissue - self.classified

    @property
    def complete(self) -> bool:
        return self.pending == 0


def map_totals(
    tmap: TissueMap, progress: ProgressCounts | None = None, *, live: bool = False
) -> MapTotals:
    """The totals of ``tmap``.

    ``progress``: the latest report of the job filling ``tmap`` in; its ``skipped``
    count is the background, of which the patches not marked BACKGROUND on ``tmap``
    are taken out of its pending ones. ``live`` without ``progress``: a map being
    filled in whose background is not known yet (before the first report).
    Without either, a map with pending patches but no BACKGROUND one is taken as
    one whose background was never detected.
    """
    classified = tmap.classified_count
    pending = tmap.pending_count
    marked = tmap.background_count
    patches = tmap.rows * tmap.cols
    if progress is not None:
        background = max(int(progress.skipped), marked)
        unmarked = background - marked  # background still pending on this map
        tissue = classified + max(0, pending - unmarked)
        return MapTotals(classified, tissue, background, pending, patches)
    if pending and (live or not marked):
        return MapTotals(classified, None, None, pending, patches)
    return MapTotals(classified, classified + pending, marked, pending, patches)


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural or singular + 'es'}"


def format_area(mm2: float) -> str:
    """'0.42 mm²', '123 mm²'."""
    return f"{mm2:.2f} mm²" if mm2 < 100 else f"{mm2:.0f} mm²"


def totals_parts(
    tmap: TissueMap,
    progress: ProgressCounts | None = None,
    *,
    live: bool = False,
    area: bool = True,
) -> list[str]:
    """:func:`map_totals_text`'s pieces, for a caller that lays them out itself."""
    t = map_totals(tmap, progress, live=live)
    size = f" ({format_area(tmap.classified_area_mm2)})" if area and t.classified else ""
    if t.tissue is None:
        if live:
            return [f"{_n(t.classified, 'patch')} classified so far{size}"]
        return [
            f"{t.classified:,} of {_n(t.patches, 'patch')} classified{size}",
            "background not detected yet",
        ]
    if t.complete:
        head = f"{_n(t.classified, 'tissue patch')} classified{size}"
    else:
        head = f"{t.classified:,} of {_n(t.tissue, 'tissue patch')} classified{size}"
    parts = [head]
    if t.background:
        parts.append(f"{_n(t.background, 'background patch')} skipped")
    return parts


def map_totals_text(
    tmap: TissueMap,
    progress: ProgressCounts | None = None,
    *,
    live: bool = False,
    area: bool = True,
) -> str:
    """The legend's summary of ``tmap``'s totals, e.g.

    - "412 of 981 tissue patches classified (3.21 mm²) · 108 background patches
      skipped" (being mapped with ``progress``, or a partial map);
    - "981 tissue patches classified (7.65 mm²) · 108 background patches skipped"
      (complete);
    - "12 patches classified so far" (``live``, before the first progress report);
    - "412 of 1,089 patches classified (3.21 mm²) · background not detected yet" (a
      partial map saved before its background was known).

    ``area``: give the classified area. See :func:`map_totals` for ``progress`` and
    ``live``.
    """
    return " · ".join(totals_parts(tmap, progress, live=live, area=area))


def progress_count_text(done: int, total: int) -> str:
    """The head of the progress text, in the legend's words: '412 / 981 tissue
    patches' (``done`` and ``total`` of a MapProgress)."""
    return f"{done:,} / {_n(total, 'tissue patch')}"


def partial_map_text(tmap: TissueMap) -> str:
    """The note on a partial map: 'Partial map: 412 of 981 tissue patches classified;
    Map Tissue continues it.'"""
    head = totals_parts(tmap, area=False)[0]
    return f"Partial map: {head}; Map Tissue continues it."
