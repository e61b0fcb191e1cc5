"""ModelInfo: everything a checkpoint must carry so that any slide is mapped correctly."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from histoviewer.classes import color_for, default_classes
from histoviewer.errors import ModelError

# The torchvision networks build_network() can make (names checked without importing torch).
ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")

#: Version of the metadata layout written by :meth:`ModelInfo.to_dict`.
FORMAT_VERSION = 1

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Color = tuple[int, int, int]


def _kather_names() -> list[str]:
    return [c.name for c in default_classes()]


@dataclass
class ModelInfo:
    """The metadata a model carries: classes, input scale, normalisation, provenance.

    Construction validates every field and raises ModelError naming the bad one.
    ``class_colors`` may be left empty: each class then gets its colour from
    classes.json (or a palette colour for classes not listed there). The classes
    listed in classes.json always get its colour, whatever the model records. Change a field
    with ``dataclasses.replace`` so that the result is validated again.

    ``created``: when the model was first written to a file (UTC, ISO 8601, e.g.
    ``"2025-01-03T14:05:12Z"``); "" until then. :meth:`to_dict` records the current
    time when it is empty, so every saved model and training checkpoint carries the
    date it was written, and a model loaded and saved again keeps its date. It takes
    no part in comparisons (a round trip through a file stays equal).
    """

    arch: str = "resnet50"
    class_names: list[str] = field(default_factory=_kather_names)
    class_colors: list[Color] = field(default_factory=list)
    input_size: int = 224  # network input, pixels (square)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int = 150  # side of one patch in pixels at ``mpp``
    mpp: float = 0.495  # microns per pixel of the training tiles
    name: str = "model"
    training: dict[str, Any] = field(default_factory=dict)  # training config (JSON-safe)
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluation results (JSON-safe)
    format_version: int = FORMAT_VERSION
    created: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.arch = _check_arch(self.arch)
        self.class_names = _check_names(self.class_names)
        if not self.class_colors:
            self.class_colors = [color_for(n, i) for i, n in enumerate(self.class_names)]
        self.class_colors = _check_colors(self.class_colors, len(self.class_names))
        # The Kather classes always take today's colours from classes.json (a model
        # trained before the palette changed is shown like any other); a class of the
        # user's own keeps the colour its model records.
        known = {c.name: c.color for c in default_classes()}
        self.class_colors = [
            known.get(n, c) for n, c in zip(self.class_names, self.class_colors, strict=True)
        ]
        self.input_size = _check_int("input_size", self.input_size, minimum=8)
        self.mean = _check_triple("mean", self.mean, positive=False)
        self.std = _check_triple("std", self.std, positive=True)
        self.patch_size = _check_int("patch_size", self.patch_size, minimum=1)
        self.mpp = _check_positive_float("mpp", self.mpp)
        if not isinstance(self.name, str):
            raise ModelError(f"model metadata field 'name' must be text, not {self.name!r}")
        self.training = _check_json_dict("training", self.training)
        self.metrics = _check_json_dict("metrics", self.metrics)
        self.format_version = _check_int("format_version", self.format_version, minimum=1)
        if self.format_version > FORMAT_VERSION:
            raise ModelError(
                f"model metadata has format version {self.format_version}, but this HistoViewer "
                f"reads up to version {FORMAT_VERSION}; please update HistoViewer"
            )
        if not isinstance(self.created, str):
            raise ModelError(
                f"model metadata field 'created' must be a date as text, not {self.created!r}"
            )

    @classmethod
    def recipe(cls, arch: str = "resnet50", **changes: Any) -> ModelInfo:
        """The reference recipe's settings: eight Kather classes, 150 px at 0.495 µm/px -> 224."""
        classes = default_classes()
        values: dict[str, Any] = {
            "arch": arch,
            "class_names": [c.name for c in classes],
            "class_colors": [c.color for c in classes],
            "name": f"recipe {arch}",
        }
        values.update(changes)
        return cls(**values)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def patch_microns(self) -> float:
        """Side of one patch in micrometres (150 px * 0.495 µm/px = 74.25 µm)."""
        return self.patch_size * self.mpp

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (lists, not tuples) that :meth:`from_dict` reads back."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "class_colors": [list(c) for c in self.class_colors],
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "patch_size": self.patch_size,
            "mpp": self.mpp,
            "training": json.loads(json.dumps(self.training)),
            "metrics": json.loads(json.dumps(self.metrics)),
            "created": self.created or utc_timestamp(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        """Read metadata written by :meth:`to_dict`; ModelError names a missing or bad field.

        ``arch`` and ``class_names`` are required; other missing fields take the
        recipe's defaults. Unknown fields (from a newer minor version) are ignored.
        """
        if not isinstance(data, dict):
            raise ModelError(f"model metadata must be a JSON object, not {type(data).__name__}")
        for required in ("arch", "class_names"):
            if required not in data:
                raise ModelError(f"model metadata lacks the required field '{required}'")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model metadata is not valid JSON ({exc})") from None
        return cls.from_dict(data)


def utc_timestamp() -> str:
    """The current time as ModelInfo records it in ``created``: ``2025-01-03T14:05:12Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_arch(arch: Any) -> str:
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"model metadata field 'arch' is {arch!r}, which is not a supported architecture "
            f"({', '.join(ARCHITECTURES)})"
        )
    return arch


def _check_names(names: Any) -> list[str]:
    if not isinstance(names, (list, tuple)) or len(names) < 2:
        raise ModelError("model metadata field 'class_names' must list at least two classes")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ModelError("model metadata field 'class_names' must hold non-empty class names")
    if len(set(names)) != len(names):
        raise ModelError(f"model metadata field 'class_names' repeats a name: {list(names)}")
    return list(names)


def _check_colors(colors: Any, count: int) -> list[Color]:
    if not isinstance(colors, (list, tuple)) or len(colors) != count:
        raise ModelError(
            f"model metadata field 'class_colors' must give one colour per class ({count})"
        )
    result = []
    for color in colors:
        if (
            not isinstance(color, (list, tuple))
            or len(color) != 3
            or not all(_is_int(v) and 0 <= v <= 255 for v in color)
        ):
            raise ModelError(
                f"model metadata field 'class_colors' holds {color!r}, not an (r, g, b) "
                "triple of integers 0-255"
            )
        result.append((int(color[0]), int(color[1]), int(color[2])))
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise ModelError(
            f"model metadata field '{name}' must be an integer >= {minimum}, not {value!r}"
        )
    return int(value)


def _check_positive_float(name: str, value: Any) -> float:
    if (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value > 0:
        return float(value)
    raise ModelError(f"model metadata field '{name}' must be a positive number, not {value!r}")


def _check_triple(name: str, value: Any, *, positive: bool) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all((_is_int(v) or isinstance(v, float)) and math.isfinite(v) for v in value)
    ok = ok and (not positive or all(v > 0 for v in value))
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise ModelError(
            f"model metadata field '{name}' must be three {kind} (R, G, B), not {value!r}"
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def _check_json_dict(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(f"model metadata field '{name}' must be a JSON object, not {value!r}")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model metadata field '{name}' is not JSON-safe ({exc})") from None
    return value
