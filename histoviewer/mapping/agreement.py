"""How well a tissue map agrees with the true classes of a slide (the demo slide's).

The truth (:class:`~histoviewer.slide.demo_slide.DemoTruth`) gives one class per cell
of a grid; a map can be compared with it only when its patches are those cells (same
rows, columns, patch size and stride, no overlap). A patch counts once it is decided:
classified (its most probable class) or skipped by mapping as glass. A skipped patch
counts as the empty-glass class, as the Map panel's quantities count it
(:data:`~histoviewer.mapping.quantities.NON_TISSUE`): a tissue cell wrongly skipped is
then a disagreement the figure shows, not a cell it leaves out. Pending patches are
not compared yet, so the figure grows with a map being made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoviewer.classes import class_label
from histoviewer.errors import SlideError
from histoviewer.mapping.quantities import NON_TISSUE, patches_text, percent
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.slide.demo_slide import DemoTruth

TITLE = "Agreement with the true classes"


@dataclass(frozen=True)
class ClassAgreement:
    """Of the ``compared`` decided cells whose true class is ``name``, ``agreed`` were
    given that class (the recall of the class)."""

    name: str
    agreed: int
    compared: int

    @property
    def fraction(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass(frozen=True)
class Agreement:
    """The map against the truth: ``agreed`` of ``compared`` decided cells (of
    ``total`` cells with a true class) have the true class; ``background`` of the
    compared cells were skipped as glass, ``skipped_tissue`` of them wrongly (their
    true class is tissue). ``model_agreed`` of the ``classified`` cells agree: the
    classifier alone, without the background detection. ``classes``: per true class,
    in the truth's class order."""

    agreed: int
    compared: int
    total: int
    background: int
    classes: tuple[ClassAgreement, ...]
    classified: int = 0
    model_agreed: int = 0
    skipped_tissue: int = 0

    @property
    def fraction(self) -> float | None:
        """Agreed over compared (None before any cell is decided)."""
        return self.agreed / self.compared if self.compared else None


def check_fits(tmap: TissueMap, truth: DemoTruth) -> None:
    """Raise SlideError, saying how to map so that it fits, unless ``tmap``'s patches are
    the cells of ``truth``."""
    width, height = truth.size
    extent = tuple(tmap.extent)
    problem = ""
    if extent not in ((0, 0), (width, height)):
        problem = (
            f"the slide is {extent[0]} x {extent[1]} px but the true classes describe "
            f"{width} x {height} px"
        )
    elif (tmap.patch_size, tmap.stride) != (truth.cell_size, truth.cell_size):
        problem = (
            f"the map's patches are {tmap.patch_size} px every {tmap.stride} px, the true "
            f"classes are given per {truth.cell_size} px cell"
        )
    elif (tmap.rows, tmap.cols) != (truth.rows, truth.cols) or tuple(tmap.origin) != (0, 0):
        problem = (
            f"the map has {tmap.cols} x {tmap.rows} patches, the true classes "
            f"{truth.cols} x {truth.rows} cells"
        )
    if problem:
        raise SlideError(
            f"The map cannot be compared with the true classes: {problem}. Map the slide at "
            f"its own scale with a model of {truth.cell_size} px patches at "
            f"{truth.mpp:g} µm/px and a stride of {truth.cell_size} px."
        )


def compare_with_truth(tmap: TissueMap, truth: DemoTruth) -> Agreement:
    """Overall and per-class agreement of ``tmap`` with ``truth`` (see the module's
    docstring for what counts). Raises SlideError when the grids differ."""
    check_fits(tmap, truth)
    classified = tmap.state == CLASSIFIED
    background = tmap.state == BACKGROUND
    # The true class of each cell as a column of the map's classes (-1: the map lacks it).
    to_map = np.array(
        [tmap.class_names.index(n) if n in tmap.class_names else -1 for n in truth.class_names]
    )
    expected = to_map[truth.grid]
    glass = np.array([n in NON_TISSUE for n in truth.class_names])[truth.grid]
    model_agree = classified & (tmap.labels == expected) & (expected >= 0)
    agree = model_agree | (background & glass)
    decided = classified | background
    classes = tuple(
        ClassAgreement(
            name,
            int(np.count_nonzero(agree & (truth.grid == i))),
            int(np.count_nonzero(decided & (truth.grid == i))),
        )
        for i, name in enumerate(truth.class_names)
    )
    return Agreement(
        agreed=int(np.count_nonzero(agree)),
        compared=int(np.count_nonzero(decided)),
        total=truth.grid.size,
        background=int(np.count_nonzero(background)),
        classes=classes,
        classified=int(np.count_nonzero(classified)),
        model_agreed=int(np.count_nonzero(model_agree)),
        skipped_tissue=int(np.count_nonzero(background & ~glass)),
    )


def agreement_parts(a: Agreement) -> tuple[str, str]:
    """The figure and what it rests on: ('85.5 %', '511 of 598 patches'), or
    ('–', 'no patch classified yet'); the Map panel sets the figure in bold."""
    if not a.compared:
        return "–", "no patch classified yet"
    return percent(a.fraction), f"{a.agreed:,} of {patches_text(a.compared)}"


def agreement_text(a: Agreement) -> str:
    """'Agreement with the true classes: 85.5 % (511 of 598 patches)'."""
    figure, rest = agreement_parts(a)
    return f"{TITLE}: {figure} ({rest})"


def model_agreement_text(a: Agreement) -> str:
    """The classifier alone: 'On the 476 patches the model classified: 87.0 % (414)',
    and how many tissue patches were skipped as glass, if any."""
    if not a.classified:
        return "The model has classified no patch yet."
    text = (
        f"On the {patches_text(a.classified)} the model classified: "
        f"{percent(a.model_agreed / a.classified)} ({a.model_agreed:,})."
    )
    if a.skipped_tissue:
        verb = "was" if a.skipped_tissue == 1 else "were"
        text += f" {patches_text(a.skipped_tissue, 'tissue ')} {verb} skipped as glass."
    return text


def class_agreement_rows(a: Agreement) -> list[tuple[str, str, str]]:
    """(class label, '95.0 %', '95 of 100') for each true class with cells, in order."""
    return [
        (class_label(c.name), percent(c.fraction), f"{c.agreed:,} of {c.compared:,}")
        for c in a.classes
        if c.compared
    ]
