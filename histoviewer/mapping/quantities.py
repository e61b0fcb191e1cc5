"""What a pathologist reads off a tissue map: tissue area, each class's share of the
tissue, the tumour-stroma ratio and the lymphocyte share (Qt-free).

*Tissue* is every classified patch whose class is tissue: empty glass is left out
twice over, once as the background patches mapping skipped and once as the patches
the model itself called glass (the Kather ``empty`` class, :data:`NON_TISSUE`).
Shares are of the tissue's *area* (the summed cells of :mod:`~histoviewer.mapping.grid`,
so edge cells count only what lies on the slide); every figure comes with the number
of patches it rests on, because 40 % of 5 patches says much less than 40 % of 5,000.

- **Tumour-stroma ratio** (TSR): stroma / (tumour + stroma), stroma being simple and
  complex stroma together. Stroma-high above 50 %, the cut-off of the prognostic
  studies in colorectal cancer (Mesker et al. 2007; van Pelt et al. 2018). Those score
  the most stroma-rich field at the invasive front by eye; a whole-slide or region
  figure is a measure of the same tissue, not that protocol.
- **Lymphocyte share**: lymphocyte area / tissue area.

A region (a drawn selection, a QuPath annotation) is a boolean mask over the map's
grid: :func:`quantities` then counts only its cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from histoviewer.mapping.summary_text import format_area
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, PENDING, TissueMap

#: Classes that are not tissue (the model's own "no tissue" class).
NON_TISSUE = frozenset({"empty", "background", "glass"})
#: The classes each quantity adds up, by class name (a model without them gets None).
TUMOUR = ("tumor",)
STROMA = ("stroma", "complex")
LYMPHOCYTES = ("lympho",)
#: Above this stroma share of tumour + stroma a tumour is stroma-high.
STROMA_HIGH = 0.5

TSR_DEFINITION = (
    "stroma / (tumour + stroma) by area, stroma = simple + complex stroma; stroma-high above 50 %"
)
LYMPHOCYTE_DEFINITION = "lymphocyte area / tissue area"


@dataclass(frozen=True)
class ClassShare:
    """One class in a scope: its patches, their area and its share of the tissue area
    (None for a class that is not tissue, or when there is no tissue)."""

    name: str
    color: tuple[int, int, int]
    patches: int
    area_mm2: float
    share: float | None
    tissue: bool


@dataclass(frozen=True)
class Ratio:
    """A ratio and the patches it rests on (its denominator's). ``value`` None: not
    measurable, ``note`` says why."""

    value: float | None
    patches: int
    note: str = ""


@dataclass(frozen=True)
class Quantities:
    """The quantities of a map, or of a region of it (see the module docstring).

    ``patches`` counts the cells in scope; of them ``classified`` were classified
    (``tissue_patches`` as tissue, ``glass_patches`` as a non-tissue class),
    ``background_patches`` skipped as glass and ``pending_patches`` not mapped yet.
    """

    patches: int
    classified: int
    tissue_patches: int
    tissue_area_mm2: float
    glass_patches: int
    background_patches: int
    pending_patches: int
    classes: tuple[ClassShare, ...]
    tumour_stroma_ratio: Ratio
    lymphocyte_share: Ratio

    @property
    def complete(self) -> bool:
        """Every patch in scope is classified or background."""
        return self.pending_patches == 0

    @property
    def stroma_category(self) -> str | None:
        """ "stroma-high" or "stroma-low" (None: no tumour-stroma ratio)."""
        value = self.tumour_stroma_ratio.value
        if value is None:
            return None
        return "stroma-high" if value > STROMA_HIGH else "stroma-low"

    def share(self, name: str) -> ClassShare | None:
        return next((c for c in self.classes if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, rounded, with the definitions (what ``summary.json`` holds)."""
        tsr, lym = self.tumour_stroma_ratio, self.lymphocyte_share
        return {
            "patches": self.patches,
            "classified": self.classified,
            "tissue_patches": self.tissue_patches,
            "tissue_area_mm2": round(self.tissue_area_mm2, 6),
            "glass_patches": self.glass_patches,
            "background_patches": self.background_patches,
            "pending_patches": self.pending_patches,
            "complete": self.complete,
            "classes": [
                {
                    "name": c.name,
                    "color": list(c.color),
                    "tissue": c.tissue,
                    "patches": c.patches,
                    "area_mm2": round(c.area_mm2, 6),
                    "share_of_tissue": _round(c.share),
                }
                for c in self.classes
            ],
            "tumour_stroma_ratio": {
                "value": _round(tsr.value),
                "category": self.stroma_category,
                "patches": tsr.patches,
                "definition": TSR_DEFINITION,
                **({"note": tsr.note} if tsr.note else {}),
            },
            "lymphocyte_share": {
                "value": _round(lym.value),
                "patches": lym.patches,
                "definition": LYMPHOCYTE_DEFINITION,
                **({"note": lym.note} if lym.note else {}),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def is_tissue_class(name: str) -> bool:
    return name.lower() not in NON_TISSUE


def quantities(tmap: TissueMap, mask: np.ndarray | None = None) -> Quantities:
    """The quantities of ``tmap``, or of the cells where ``mask`` (bool (rows, cols)) is
    True. Raises ValueError for a mask of another shape."""
    if mask is None:
        scope = np.ones(tmap.state.shape, dtype=bool)
    else:
        scope = np.asarray(mask, dtype=bool)
        if scope.shape != tmap.state.shape:
            raise ValueError(
                f"a region mask of shape {scope.shape} does not fit a map of "
                f"{tmap.rows} x {tmap.cols} patches"
            )
    n = tmap.num_classes
    labels = tmap.labels
    done = scope & (tmap.state == CLASSIFIED)
    counts = np.bincount(labels[done].ravel(), minlength=n)[:n]
    areas = np.bincount(labels[done].ravel(), weights=tmap.cell_areas_mm2()[done], minlength=n)
    tissue = np.array([is_tissue_class(name) for name in tmap.class_names], dtype=bool)
    tissue_area = float(areas[tissue].sum())
    tissue_patches = int(counts[tissue].sum())
    classes = tuple(
        ClassShare(
            name=name,
            color=tuple(tmap.class_colors[i]),
            patches=int(counts[i]),
            area_mm2=float(areas[i]),
            share=(float(areas[i] / tissue_area) if tissue[i] and tissue_area > 0 else None),
            tissue=bool(tissue[i]),
        )
        for i, name in enumerate(tmap.class_names)
    )
    by_name = {c.name: c for c in classes}
    return Quantities(
        patches=int(scope.sum()),
        classified=int(done.sum()),
        tissue_patches=tissue_patches,
        tissue_area_mm2=tissue_area,
        glass_patches=int(counts[~tissue].sum()),
        background_patches=int(np.count_nonzero(scope & (tmap.state == BACKGROUND))),
        pending_patches=int(np.count_nonzero(scope & (tmap.state == PENDING))),
        classes=classes,
        tumour_stroma_ratio=_ratio(by_name, STROMA, TUMOUR + STROMA, "tumour or stroma"),
        lymphocyte_share=_lymphocytes(by_name, tissue_area, tissue_patches),
    )


def _ratio(
    by_name: dict[str, ClassShare], top: tuple[str, ...], bottom: tuple[str, ...], what: str
) -> Ratio:
    missing = [name for name in bottom if name not in by_name]
    if missing:
        return Ratio(None, 0, f"the model has no {' or '.join(missing)} class")
    area = sum(by_name[name].area_mm2 for name in bottom)
    patches = sum(by_name[name].patches for name in bottom)
    if patches == 0 or area <= 0:
        return Ratio(None, 0, f"no {what} patches")
    return Ratio(sum(by_name[name].area_mm2 for name in top) / area, patches)


def _lymphocytes(by_name: dict[str, ClassShare], tissue_area: float, tissue_patches: int) -> Ratio:
    missing = [name for name in LYMPHOCYTES if name not in by_name]
    if missing:
        return Ratio(None, 0, f"the model has no {' or '.join(missing)} class")
    if tissue_patches == 0 or tissue_area <= 0:
        return Ratio(None, 0, "no tissue patches")
    area = sum(by_name[name].area_mm2 for name in LYMPHOCYTES)
    return Ratio(area / tissue_area, tissue_patches)


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def quantity_lines(q: Quantities) -> list[str]:
    """The quantities in a few lines of text, as the Map panel, the CSV's header and
    the report give them:

    - "tissue: 7.65 mm² (981 patches)"
    - "tumour-stroma ratio: 38.2 % stroma, stroma-low (420 tumour and stroma patches)"
    - "lymphocytes: 12.3 % of tissue (of 981 tissue patches)"
    """
    tsr, lym = q.tumour_stroma_ratio, q.lymphocyte_share
    lines = [f"tissue: {format_area(q.tissue_area_mm2)} ({patches_text(q.tissue_patches)})"]
    if tsr.value is None:
        lines.append(f"tumour-stroma ratio: not measurable ({tsr.note})")
    else:
        lines.append(
            f"tumour-stroma ratio: {percent(tsr.value)} stroma, {q.stroma_category} "
            f"({tsr.patches:,} tumour and stroma patches)"
        )
    if lym.value is None:
        lines.append(f"lymphocytes: not measurable ({lym.note})")
    else:
        of = patches_text(lym.patches, "tissue ")
        lines.append(f"lymphocytes: {percent(lym.value)} of tissue (of {of})")
    if q.pending_patches:
        lines.append(f"partial: {patches_text(q.pending_patches)} not classified yet")
    return lines


def patches_text(count: int, kind: str = "") -> str:
    """'1 patch', '1,273 tissue patches' (``kind`` "tissue ")."""
    return f"{count:,} {kind}{'patch' if count == 1 else 'patches'}"


__all__ = [
    "LYMPHOCYTE_DEFINITION",
    "NON_TISSUE",
    "STROMA_HIGH",
    "TSR_DEFINITION",
    "ClassShare",
    "Quantities",
    "Ratio",
    "is_tissue_class",
    "patches_text",
    "percent",
    "quantities",
    "quantity_lines",
]
