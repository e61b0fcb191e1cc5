"""What to call a model and what to tell a user about it first (no Qt, no torch).

- :func:`model_display_name` - a short name that tells models apart (the status bar):
  by the model's folder or file, not by the name training gave it ("resnet18 recipe
  (tiles)" for every run on the same tiles).
- :func:`model_summary` - the rows of Model Info, what a user asks first on top: name,
  file, architecture, test accuracy, training data, date, input scale, fingerprint,
  then the rest.
- :func:`weak_model_warning` - a sentence for a model whose recorded test accuracy is
  below :data:`WEAK_ACCURACY`; :func:`accuracy_note` - a gentler one when none is recorded.
- :func:`model_date` - when the model was made: the date recorded in it
  (``ModelInfo.created``), else its file's modification time ("file date").

Accuracies are recorded as fractions (0.875); a value above 1 is read as a percentage.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from histoviewer.model.info import ModelInfo

#: What each test figure means, one sentence each (reports, the app, model cards).
TILE_SPLIT_MEANING = (
    "Test tiles from the same specimens as the training tiles (the tutorial's random "
    "split): how well the model knows these specimens, optimistic for a new patient."
)
UNSEEN_MEANING = (
    "Tiles of specimens the model never saw (cross-validation by specimen): what to "
    "expect on a new patient's slide."
)

#: A model whose recorded test accuracy is below this (a fraction) gets a warning.
WEAK_ACCURACY = 0.80

#: Longest name :func:`model_display_name` returns; longer ones lose their middle.
MAX_NAME_LENGTH = 48

# Suffixes of model files, longest first, stripped from a file's name.
_MODEL_SUFFIXES = (".pth.tar", ".safetensors", ".ckpt", ".pth", ".pt", ".tar", ".bin")

# File stems that say nothing about which model a file holds: the folder names it.
# The value is what the name adds to the folder's ("" for the model itself).
_GENERIC_STEMS = {
    "model": "",
    "weights": "",
    "pytorch_model": "",
    "best": "best",
    "model_best": "best",
    "best_model": "best",
    "checkpoint_best": "best",
    "last": "last",
    "latest": "last",
    "model_last": "last",
    "last_model": "last",
    "checkpoint_last": "last",
    "checkpoint": "checkpoint",
    "final": "final",
    "model_final": "final",
    "final_model": "final",
}

# Folder names that say nothing either: the folder above them is named too.
_GENERIC_FOLDERS = {"checkpoints", "checkpoint", "ckpt", "ckpts", "weights", "models", "model"}

_FINGERPRINT_SHOWN = 16


@dataclass(frozen=True)
class SummaryRow:
    """One line of Model Info: ``label``, ``value``, an optional ``tooltip`` (the full
    fingerprint, a date's source) and a ``key`` that stays the same whatever the wording
    ("name", "file", "architecture", "test_accuracy", "date", "fingerprint", ...)."""

    key: str
    label: str
    value: str
    tooltip: str = ""


@dataclass(frozen=True)
class ModelDate:
    """When a model was made: ``when`` (local time, aware) and where that comes from:
    ``source`` "recorded" (``ModelInfo.created``) or "file" (the file's modification time)."""

    when: datetime
    source: str

    def text(self) -> str:
        return self.when.strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- the name


def model_display_name(info: ModelInfo | None, path: str | os.PathLike | None) -> str:
    """A short name that tells models apart, for the status bar.

    - a model folder: the folder's name (``resources/models/kather-resnet50`` ->
      ``kather-resnet50``);
    - a file named generically (``model.safetensors``, ``best.safetensors``, ``last.pt``,
      ``model_best.pth.tar``, ``checkpoint.pth.tar``...): its folder's name, with what the
      file is when that is not the model itself (``runs/run18b/best.safetensors`` ->
      ``run18b (best)``; ``run18b/model.safetensors`` -> ``run18b``); a folder named
      generically too (``checkpoints``) is named with the one above it;
    - any other file: its name without the model suffix (``kather-resnet50.safetensors``
      -> ``kather-resnet50``);
    - no path (a model in memory): the name in its metadata, else its architecture.

    Names longer than :data:`MAX_NAME_LENGTH` characters lose their middle.
    """
    if path is None or str(path) == "":
        if info is None:
            return "no model"
        return _shorten(info.name.strip() or info.arch)
    path = Path(path).expanduser()
    if path.is_dir():
        return _shorten(_folder_name(path))
    stem = _strip_model_suffix(path.name)
    role = _GENERIC_STEMS.get(stem.lower())
    if role is None or not stem:
        return _shorten(stem or path.name)
    folder = _folder_name(path.parent)
    if not folder:
        return _shorten(stem)
    return _shorten(f"{folder} ({role})" if role else folder)


def _strip_model_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in _MODEL_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _folder_name(folder: Path) -> str:
    """The folder's name, with its parent's when it is generic (``run7/checkpoints``)."""
    if not folder.name or folder.name in (".", ".."):
        folder = folder.resolve()
    name = folder.name
    if name.lower() in _GENERIC_FOLDERS and folder.parent.name:
        return f"{folder.parent.name}/{name}"
    return name


def _shorten(name: str) -> str:
    if len(name) <= MAX_NAME_LENGTH:
        return name
    keep = MAX_NAME_LENGTH - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2 :]


# --------------------------------------------------------------------------- accuracy


def recorded_test_accuracy(info: ModelInfo) -> float | None:
    """The recorded test accuracy as a fraction (0.875), None when none is recorded."""
    return _fraction(info.metrics.get("test_accuracy"))


def weak_model_warning(info: ModelInfo | None) -> str | None:
    """A sentence when the recorded test accuracy is below :data:`WEAK_ACCURACY`; None
    when it is at least that or when none is recorded (see :func:`accuracy_note`)."""
    if info is None:
        return None
    accuracy = recorded_test_accuracy(info)
    if accuracy is None or accuracy >= WEAK_ACCURACY:
        return None
    return (
        f"This model's test accuracy is {percent(accuracy)}, below "
        f"{_threshold()}: its maps will often be wrong. Train longer "
        "(Model > Train New Model...) or load a better model."
    )


def accuracy_note(info: ModelInfo | None) -> str | None:
    """A gentle sentence when the model records no test accuracy; None when it does."""
    if info is None or recorded_test_accuracy(info) is not None:
        return None
    return (
        "This model records no test accuracy, so how often its maps are right is "
        "unknown. Models trained with Model > Train New Model... record theirs."
    )


def percent(fraction: float) -> str:
    """``0.8749`` -> ``"87.4 %"``: one decimal, never rounded up (79.96 % is no 80.0 %)."""
    tenths = math.floor(fraction * 1000 + 1e-6)
    return f"{tenths / 10:.1f} %"


def _threshold() -> str:
    return f"{WEAK_ACCURACY * 100:g} %"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > 100:
        return None
    return value / 100 if value > 1 else value


def finite_number(value: Any) -> float | None:
    """A finite number, else None (None, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- the date


def model_date(info: ModelInfo | None, path: str | os.PathLike | None) -> ModelDate | None:
    """When the model was made: the date recorded in it (``ModelInfo.created``), else
    the modification time of its file (of ``model.safetensors`` in a model folder);
    None when neither is known."""
    if info is not None and info.created:
        when = _parse_date(info.created)
        if when is not None:
            return ModelDate(when, "recorded")
    if path is None or str(path) == "":
        return None
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "model.safetensors"
    try:
        mtime = file.stat().st_mtime
    except OSError:
        return None
    return ModelDate(datetime.fromtimestamp(mtime, timezone.utc).astimezone(), "file")


def _parse_date(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone()


# --------------------------------------------------------------------------- the summary


def model_summary(
    info: ModelInfo | None, fingerprint: str | None, path: str | os.PathLike | None
) -> list[SummaryRow]:
    """Model Info's rows, what a user asks first on top: name, file, architecture, test
    accuracy (macro F1, balanced accuracy when recorded), training data, date, input
    size and scale, fingerprint (16 characters, all in the tooltip); then training
    settings, classes, normalisation and the rest. Empty for no model."""
    if info is None:
        return []
    name = model_display_name(info, path)
    rows = [SummaryRow("name", "Name", name)]
    if path is not None and str(path) != "":
        rows.append(SummaryRow("file", "File", str(path)))
    else:
        rows.append(SummaryRow("file", "File", "not saved to a file (in memory)"))
    rows.append(
        SummaryRow(
            "architecture", "Architecture", f"{arch_label(info.arch)}, {info.num_classes} classes"
        )
    )
    rows.extend(_accuracy_rows(info))
    rows.append(_trained_on_row(info))
    rows.append(_date_row(info, path))
    rows.append(
        SummaryRow(
            "input",
            "Input",
            f"{info.patch_size} px patches at {info.mpp:g} µm/px "
            f"({info.patch_microns:.1f} µm), resized to {info.input_size} × "
            f"{info.input_size} px",
        )
    )
    if fingerprint:
        shown = fingerprint[:_FINGERPRINT_SHOWN]
        rows.append(
            SummaryRow(
                "fingerprint",
                "Fingerprint",
                shown + ("…" if len(fingerprint) > len(shown) else ""),
                f"SHA-256 of the weights: {fingerprint}",
            )
        )
    rows.extend(_other_rows(info, name))
    return rows


def summary_text(rows: list[SummaryRow]) -> str:
    """The rows as plain ``Label: value`` lines (a tooltip, the clipboard)."""
    return "\n".join(f"{row.label}: {row.value}" for row in rows)


def arch_label(arch: str) -> str:
    """``resnet50`` -> ``ResNet-50``."""
    if arch.startswith("resnet") and arch[6:].isdigit():
        return f"ResNet-{arch[6:]}"
    return arch


def _accuracy_rows(info: ModelInfo) -> list[SummaryRow]:
    metrics = info.metrics
    accuracy = recorded_test_accuracy(info)
    if accuracy is None:
        value = "not recorded"
        validation = _fraction(metrics.get("val_accuracy"))
        if validation is not None:
            epoch = metrics.get("epoch")
            at = f" at epoch {epoch}" if isinstance(epoch, int) else ""
            value += f" (validation accuracy {percent(validation)}{at})"
        return [SummaryRow("test_accuracy", "Test accuracy", value)]
    value = percent(accuracy)
    images = metrics.get("test_images")
    if isinstance(images, int) and not isinstance(images, bool) and images > 0:
        value += f" on {images:,} test tiles"
    specimens = metrics.get("test_specimens")
    specimens = [str(s) for s in specimens] if isinstance(specimens, list) else []
    if metrics.get("test_split") == "specimen" and specimens:
        value += f" of specimens it never saw ({', '.join(specimens)})"
    elif finite_number(metrics.get("test_tiles_from_seen_specimens")):
        value += " of specimens also in training"
    if accuracy < WEAK_ACCURACY:
        value += f" (weak: below {_threshold()})"
    rows = [SummaryRow("test_accuracy", "Test accuracy", value)]
    rows.extend(_unseen_rows(metrics))
    balanced = _fraction(metrics.get("test_balanced_accuracy", metrics.get("balanced_accuracy")))
    if balanced is not None:
        rows.append(SummaryRow("balanced_accuracy", "Balanced accuracy", percent(balanced)))
    f1 = finite_number(metrics.get("test_macro_f1", metrics.get("macro_f1")))
    if f1 is not None:
        rows.append(SummaryRow("macro_f1", "Macro F1", f"{f1:.3f}"))
    return rows


def _unseen_rows(metrics: dict[str, Any]) -> list[SummaryRow]:
    """The cross-validation by specimen recorded with the model, beside its test figure."""
    accuracy = _fraction(metrics.get("unseen_accuracy"))
    if accuracy is None:
        return []
    value = percent(accuracy)
    folds = metrics.get("unseen_folds")
    specimens = metrics.get("unseen_specimens")
    images = metrics.get("unseen_images")
    parts = []
    if isinstance(images, int) and not isinstance(images, bool) and images > 0:
        parts.append(f"{images:,} tiles")
    if isinstance(specimens, int) and not isinstance(specimens, bool) and specimens > 0:
        parts.append(f"{specimens} specimens")
    if isinstance(folds, int) and not isinstance(folds, bool):
        parts.append(f"{folds}-fold cross-validation by specimen")
    if parts:
        value += f" ({', '.join(parts)})"
    f1 = finite_number(metrics.get("unseen_macro_f1"))
    if f1 is not None:
        value += f", macro F1 {f1:.3f}"
    return [
        SummaryRow(
            "unseen_accuracy",
            "Unseen specimens",
            value,
            UNSEEN_MEANING,
        )
    ]


def _assumed(info: ModelInfo) -> bool:
    return info.training.get("metadata") == "assumed (recipe)"


def _trained_on_row(info: ModelInfo) -> SummaryRow:
    data = info.training.get("data")
    data = data if isinstance(data, dict) else {}
    config = info.training.get("config")
    config = config if isinstance(config, dict) else {}
    source = data.get("source") or config.get("data")
    parts = []
    if isinstance(source, str) and source:
        parts.append(source)
    images = data.get("images")
    if isinstance(images, int) and not isinstance(images, bool):
        tiles = f"{images:,} tiles"
        counts = data.get("split_counts")
        if isinstance(counts, dict) and counts:
            order = [k for k in ("train", "val", "test") if k in counts]
            order += [k for k in counts if k not in order]
            shown = [f"{k} {counts[k]:,}" for k in order if _is_count(counts[k])]
            if shown:
                tiles += " (" + " · ".join(shown) + ")"
        parts.append(tiles)
    if parts:
        value = ", ".join(parts)
    elif _assumed(info):
        value = "not recorded (the file carries no metadata)"
    else:
        value = "not recorded"
    return SummaryRow("trained_on", "Trained on", value)


def _date_row(info: ModelInfo, path: str | os.PathLike | None) -> SummaryRow:
    date = model_date(info, path)
    if date is None:
        return SummaryRow("date", "Date", "not recorded")
    if date.source == "file":
        return SummaryRow(
            "date",
            "Date",
            f"{date.text()} (file date)",
            "The model records no date: this is when its file was last modified.",
        )
    trained = isinstance(info.training.get("config"), dict)
    return SummaryRow(
        "date",
        "Date",
        date.text() if trained else f"{date.text()} (saved)",
        "When training saved this model (recorded in it)."
        if trained
        else "When this model was first saved (recorded in it).",
    )


def _other_rows(info: ModelInfo, name: str) -> list[SummaryRow]:
    rows = []
    config = info.training.get("config")
    if isinstance(config, dict):
        parts = []
        if isinstance(config.get("epochs"), int):
            parts.append(f"{config['epochs']} epochs")
        best = info.metrics.get("epoch")
        if isinstance(best, int) and not isinstance(best, bool):
            parts.append(f"best at epoch {best}")
        if isinstance(config.get("preset"), str) and config["preset"]:
            parts.append(f"{config['preset']} preset")
        if parts:
            rows.append(SummaryRow("training", "Training", ", ".join(parts)))
    if info.name and info.name != name and not _assumed(info):
        rows.append(SummaryRow("recorded_name", "Recorded name", info.name))
    rows.append(
        SummaryRow(
            "classes",
            "Classes",
            f"{info.num_classes}: " + ", ".join(info.class_names),
        )
    )
    per_class = info.metrics.get("per_class_f1")
    if isinstance(per_class, dict) and per_class:
        order = [n for n in info.class_names if n in per_class]
        order += [n for n in per_class if n not in order]
        shown = ", ".join(
            f"{n} {per_class[n]:.2f}" for n in order if finite_number(per_class[n]) is not None
        )
        if shown:
            rows.append(SummaryRow("per_class_f1", "F1 per class", shown))
    rows.append(
        SummaryRow(
            "normalisation",
            "Normalisation",
            "mean " + _triple(info.mean) + ", std " + _triple(info.std),
        )
    )
    if _assumed(info):
        rows.append(
            SummaryRow(
                "metadata",
                "Metadata",
                "none in the file: the recipe's classes and preprocessing are assumed",
            )
        )
    return rows


def _triple(values: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
