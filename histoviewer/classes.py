"""The tissue classes: names and colours, read from resources/classes.json.

Every place that shows a class (overlay, legend, exports, plots) reads it from
here, so one file decides how a class is named and coloured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from histoviewer.resources import resource_path


@dataclass(frozen=True)
class TissueClass:
    name: str  # short lower-case id: "tumor"
    folder: str  # dataset folder name: "01_TUMOR"
    label: str  # what the user reads: "Tumour epithelium"
    color: tuple[int, int, int]  # sRGB 0-255

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@cache
def default_classes() -> tuple[TissueClass, ...]:
    """The eight Kather 2016 classes in model output order."""
    data = json.loads(resource_path("classes.json").read_text(encoding="utf-8"))
    return tuple(
        TissueClass(c["name"], c["folder"], c["label"], tuple(c["color"])) for c in data["classes"]
    )


def class_names() -> list[str]:
    return [c.name for c in default_classes()]


def class_colors() -> list[tuple[int, int, int]]:
    return [c.color for c in default_classes()]


def class_label(name: str) -> str:
    """What the user reads for a class id: 'tumor' -> 'Tumour epithelium' (a class
    not listed in classes.json is capitalised)."""
    for c in default_classes():
        if c.name == name:
            return c.label
    return name.capitalize()


def name_from_folder(folder: str) -> str:
    """A class id from a dataset folder name: '01_TUMOR' -> 'tumor', 'Stroma' -> 'stroma'.

    Known Kather folders map to their class; any other folder name becomes its
    lower-cased text with a leading 'NN_' ordering prefix removed.
    """
    for c in default_classes():
        if c.folder.lower() == folder.lower():
            return c.name
    head, sep, tail = folder.partition("_")
    base = tail if sep and head.isdigit() and tail else folder
    return base.strip().lower()


def color_for(name: str, index: int) -> tuple[int, int, int]:
    """The colour of a class by name; unknown names get a palette colour by index."""
    for c in default_classes():
        if c.name == name:
            return c.color
    palette = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ]
    return palette[index % len(palette)]
