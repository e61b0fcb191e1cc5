"""A plain-text description of a model for the GUI's Model Info and the CLI."""

from __future__ import annotations

from typing import Any

from histoviewer.classes import default_classes
from histoviewer.model.classifier import Classifier
from histoviewer.model.info import ModelInfo

_ARCH_LABELS = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
}


def model_info_summary(model: Classifier | ModelInfo) -> str:
    """Several lines: name, architecture, classes, input scale, training data, metrics.

    A Classifier adds its parameter count, device and weight fingerprint.
    """
    info = model.info if isinstance(model, Classifier) else model
    labels = {c.name: c.label for c in default_classes()}
    arch = _ARCH_LABELS.get(info.arch, info.arch)
    lines = [f"Model: {info.name}", f"Architecture: {arch}"]
    if isinstance(model, Classifier):
        params = sum(p.numel() for p in model.network.parameters())
        lines[-1] += f" ({params / 1e6:.1f} M parameters)"
        lines.append(f"Device: {model.device}")
        lines.append(f"Fingerprint: {model.fingerprint[:16]}")
    classes = ", ".join(f"{n} ({labels[n]})" if n in labels else n for n in info.class_names)
    lines.append(f"Classes ({info.num_classes}): {classes}")
    lines.append(
        f"Patch: {info.patch_size} px at {info.mpp:g} µm/px ({info.patch_microns:.1f} µm), "
        f"resized to {info.input_size} x {info.input_size} px"
    )
    lines.append("Normalisation: mean " + _triple(info.mean) + ", std " + _triple(info.std))
    lines.append("Training: " + (_mapping(info.training) or "not recorded"))
    lines.append("Metrics: " + (_mapping(info.metrics) or "not recorded"))
    return "\n".join(lines)


def _triple(values: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _mapping(data: dict[str, Any], depth: int = 0) -> str:
    parts = []
    for key, value in data.items():
        if isinstance(value, dict):
            inner = _mapping(value, depth + 1) if depth == 0 else f"{len(value)} entries"
            parts.append(f"{key} [{inner}]")
        elif isinstance(value, list):
            shown = ", ".join(_scalar(v) for v in value[:8])
            parts.append(f"{key} [{shown}{', ...' if len(value) > 8 else ''}]")
        else:
            parts.append(f"{key} {_scalar(value)}")
    return "; ".join(parts)


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"{len(value)} entries"
    return str(value)
