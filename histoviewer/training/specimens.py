"""Which specimen (patient, slide) each tile comes from, read from its file name.

Tiles cut from one specimen look alike (the same stain batch, scanner day, tumour), so
a test tile from a specimen that is also in training says little about a new patient.
The Kather 2016 names carry their specimen ("10009_CRC-Prim-HE-03_009.tif_Row_301_...":
specimen CRC-Prim-HE-03); TCGA names carry the patient barcode ("TCGA-A6-2671-...").
Other datasets give a regular expression whose first group (or, without a group, whole
match) is the specimen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from histoviewer.errors import DatasetError

#: Kather 2016 (CRC-Prim-HE-NN) and TCGA patient barcodes (TCGA-XX-XXXX).
DEFAULT_PATTERN = r"(CRC-Prim-HE-\d+|TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})"


def compile_pattern(pattern: str | None) -> re.Pattern[str]:
    """The regular expression ``pattern`` (None: :data:`DEFAULT_PATTERN`), or DatasetError."""
    text = DEFAULT_PATTERN if pattern is None else pattern
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise DatasetError(
            f"the specimen pattern {text!r} is not a regular expression ({exc})"
        ) from None
    return compiled


def specimen_of(stem: str, pattern: re.Pattern[str]) -> str | None:
    """The specimen named in one file name, or None when the pattern does not match it."""
    match = pattern.search(stem)
    if match is None:
        return None
    value = match.group(1) if pattern.groups else match.group(0)
    return value or None


def read_specimens(
    stems: Sequence[str], pattern: str | None = None, *, source: str = "the tiles"
) -> np.ndarray:
    """The specimen of every tile (an array of str, one per stem).

    Raises DatasetError, naming an example, when a file name carries no specimen, and
    when all tiles come from one specimen (nothing could be held out).
    """
    compiled = compile_pattern(pattern)
    found = [specimen_of(stem, compiled) for stem in stems]
    missing = [stem for stem, group in zip(stems, found, strict=True) if group is None]
    if missing:
        what = "the default pattern" if pattern is None else f"the pattern {pattern!r}"
        share = "the" if len(missing) == len(stems) else f"{len(missing)} of the {len(stems)}"
        raise DatasetError(
            f"no specimen can be read from {share} file names in {source} with {what} "
            f"(e.g. {missing[0]!r}); give --group-pattern REGEX, a regular expression whose "
            "first group is the specimen (patient or slide) in every file name"
        )
    groups = np.asarray(found, dtype=object)
    names = np.unique(groups)
    if len(names) < 2:
        raise DatasetError(
            f"every tile in {source} comes from one specimen ({names[0] if len(names) else '-'}):"
            " holding specimens out needs tiles of at least two"
        )
    return groups


def try_read_specimens(stems: Sequence[str], pattern: str | None = None) -> np.ndarray | None:
    """:func:`read_specimens`, or None when the names carry no specimen (never raises for
    that: a run on the canonical split only reports the overlap when it can read it)."""
    try:
        return read_specimens(stems, pattern)
    except DatasetError:
        return None


def specimens_by_class(
    groups: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{specimen: {class name: tiles}}`` (classes with no tile left out), sorted."""
    table: dict[str, dict[str, int]] = {}
    for specimen in sorted(set(groups.tolist())):
        rows = labels[groups == specimen]
        counts = np.bincount(rows, minlength=len(class_names))
        table[specimen] = {name: int(n) for name, n in zip(class_names, counts, strict=True) if n}
    return table
