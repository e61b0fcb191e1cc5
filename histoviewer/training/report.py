"""The training report: report.json and the figures curves.png and confusion_matrix.png.

Figures are drawn with matplotlib's Agg canvas directly (never pyplot), so this
module works headless, in a worker thread, and never touches a GUI backend.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes, atomic_write_text

REPORT_FILE = "report.json"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report`` as indented UTF-8 JSON ("µm" stays readable), atomically;
    non-finite numbers become null."""
    path = Path(path)
    atomic_write_text(path, json.dumps(_finite(report), indent=2, ensure_ascii=False) + "\n")
    return path


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by :func:`write_report`; HistoViewerError when it cannot be read."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HistoViewerError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise HistoViewerError(f"cannot read {path}: it holds no report")
    return data


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, training vs validation, side by side."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, title in ((loss_ax, "loss", "Loss"), (acc_ax, "acc", "Accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="training")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if epochs:
        for ax in (loss_ax, acc_ax):
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: math.ceil(len(epochs) / 20)])
    return _save(fig, Path(path))


def plot_confusion(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """The confusion matrix with counts, rows normalised for the colour (recall)."""
    n = len(class_names)
    rows = [list(r) for r in matrix]
    shares = [[v / max(1, sum(r)) for v in r] for r in rows]
    size = max(4.0, 0.6 * n + 2.5)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(rows[i][j]),
                ha="center",
                va="center",
                color="white" if shares[i][j] > 0.5 else "black",
                fontsize=9,
            )
    return _save(fig, Path(path))
