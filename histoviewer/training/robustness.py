"""How a model's accuracy holds up when tiles change the way real slides do.

The shipped model must keep its accuracy "within 3 points of the clean figure under flips
and 90-degree rotations, JPEG quality 60, a mild blur and stain shifts between labs".
``histoviewer evaluate DATA --robustness`` measures this: the tiles of the scored split,
decoded once, are scored as they are (clean, the reference) and under each condition
below. Every condition is a fixed, deterministic change to the uint8 RGB tiles made before
the model's usual preprocessing, so the model sees what it would see had the slide been
scanned, stored or stained that way.

- The 7 other symmetries of the square: rotations by 90, 180 and 270 degrees
  (counter-clockwise, as ``np.rot90``), left-right and up-down flips, the transpose and
  the anti-transpose (the transpose rotated by 180 degrees). Tissue has no up or left and
  a slide goes into a scanner either way round, so any drop is orientation learnt from
  the training tiles; the worst of the seven is the one reported.
- JPEG at quality 60 (Pillow's encoder with its default 4:2:0 chroma subsampling), each
  tile re-encoded on its own: the lossy compression most slide files carry, a little
  harsher than the quality scanners usually write (Aperio SVS files often record Q=70).
- A mild Gaussian blur, sigma 1.0 px at the tile scale (about 0.5 µm on Kather 2016
  tiles): a region a little out of focus, which whole-slide scans have in places
  (separable kernel of radius 3 px, borders mirrored).
- Stain shifts between labs, made in haematoxylin-eosin-DAB stain space by the stain
  transform the training augmentation uses (:func:`~histoviewer.training.augment.
  shift_stains`, Ruifrok & Johnston colour deconvolution; Tellez et al. model stain
  variation between centres the same way). Haematoxylin and eosin amounts x1.15 and
  x0.85 each: a clearly visible but ordinary difference in staining time or dye
  strength, three times the +-5 % the ``best`` preset's stain jitter trains with, so it
  tests what the model learnt beyond its augmentation. "other-lab" combines changes of
  both stains and a cast: haematoxylin x1.10, eosin x0.85 and 0.05 optical density of
  brown (the DAB vector) over everything, glass included (white becomes about
  (251, 248, 245)), as yellowed mounting medium or another scanner's white balance gives.

For each condition: accuracy, macro F1 and the change in accuracy in percentage points
against clean; a condition passes when its accuracy is at most ``TOLERANCE_POINTS`` below
clean (a gain never fails). Headless: no Qt.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from histoviewer.errors import HistoViewerError
from histoviewer.model import Classifier
from histoviewer.tasks import CancelToken
from histoviewer.training.augment import shift_stains
from histoviewer.training.evaluation import classification_metrics, predict

#: How far, in percentage points of accuracy, a condition may fall below clean.
TOLERANCE_POINTS = 3.0
JPEG_QUALITY = 60
BLUR_SIGMA = 1.0

#: The groups conditions are reported by, after the clean reference.
GROUPS = ("symmetry", "jpeg", "blur", "stain")


@dataclass(frozen=True)
class Condition:
    """One way of changing the tiles: ``apply`` maps a uint8 (N, H, W, 3) tensor to
    another on the same device."""

    name: str
    group: str
    description: str
    apply: Callable[[torch.Tensor], torch.Tensor]


def _rotate(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.rot90(x, k, dims=(1, 2)).contiguous()


def _flip_lr(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)


def _flip_ud(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).contiguous()


def _anti_transpose(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1).flip(2).transpose(1, 2).contiguous()


def jpeg(x: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Each uint8 RGB tile of ``x`` (N, H, W, 3) encoded as a JPEG of ``quality`` by
    Pillow and decoded again."""
    tiles = x.cpu().numpy()
    out = np.empty_like(tiles)
    for i, tile in enumerate(tiles):
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out).to(x.device)


def gaussian_blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """uint8 RGB tiles (N, H, W, 3) blurred with a Gaussian of ``sigma`` px: a separable
    kernel of radius ceil(3 sigma), normalised, borders mirrored (``scipy.ndimage``'s
    ``mode="mirror"``); tiles must be larger than the radius."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    n, h, w, c = x.shape
    y = x.permute(0, 3, 1, 2).float().reshape(n * c, 1, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    y = F.conv2d(y, kernel.view(1, 1, -1, 1))
    y = y.reshape(n, c, h, w).round_().clamp_(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous()


def stain(
    x: torch.Tensor, scale: Sequence[float], shift: Sequence[float] = (0.0, 0.0, 0.0)
) -> torch.Tensor:
    """uint8 RGB tiles (N, H, W, 3) with their haematoxylin, eosin and DAB amounts
    multiplied by ``scale`` and shifted by ``shift`` (optical density, natural log), as
    :func:`~histoviewer.training.augment.shift_stains`; scale 1 and shift 0 give the
    tiles back unchanged."""
    y = x.permute(0, 3, 1, 2).float().div_(255.0)
    y = shift_stains(y, scale, shift)
    return y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _stain(scale: Sequence[float], shift: Sequence[float] = (0.0, 0.0, 0.0)):
    return lambda x: stain(x, scale, shift)


#: Every condition, the clean reference first.
CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "clean", "the tiles as they are (reference)", lambda x: x),
    Condition("rot90", "symmetry", "rotated 90 degrees counter-clockwise", _rotate(1)),
    Condition("rot180", "symmetry", "rotated 180 degrees", _rotate(2)),
    Condition("rot270", "symmetry", "rotated 270 degrees counter-clockwise", _rotate(3)),
    Condition("flip-lr", "symmetry", "mirrored left-right", _flip_lr),
    Condition("flip-ud", "symmetry", "mirrored top-bottom", _flip_ud),
    Condition("transpose", "symmetry", "mirrored across the main diagonal", _transpose),
    Condition("anti-transpose", "symmetry", "mirrored across the other diagonal", _anti_transpose),
    Condition(f"jpeg-q{JPEG_QUALITY}", "jpeg", f"JPEG at quality {JPEG_QUALITY}", jpeg),
    Condition(
        f"blur-sigma{BLUR_SIGMA:g}",
        "blur",
        f"Gaussian blur, sigma {BLUR_SIGMA:g} px",
        gaussian_blur,
    ),
    Condition("haematoxylin+15%", "stain", "haematoxylin x1.15", _stain((1.15, 1.0, 1.0))),
    Condition("haematoxylin-15%", "stain", "haematoxylin x0.85", _stain((0.85, 1.0, 1.0))),
    Condition("eosin+15%", "stain", "eosin x1.15", _stain((1.0, 1.15, 1.0))),
    Condition("eosin-15%", "stain", "eosin x0.85", _stain((1.0, 0.85, 1.0))),
    Condition(
        "other-lab",
        "stain",
        "haematoxylin x1.10, eosin x0.85, brown cast 0.05 OD",
        _stain((1.10, 0.85, 1.0), (0.0, 0.0, 0.05)),
    ),
)


def condition(name: str) -> Condition:
    """The condition called ``name`` (one of :data:`CONDITIONS`)."""
    for cond in CONDITIONS:
        if cond.name == name:
            return cond
    known = ", ".join(c.name for c in CONDITIONS)
    raise HistoViewerError(f"unknown robustness condition '{name}' (known: {known})")


def apply_condition(name: str, tiles: np.ndarray) -> np.ndarray:
    """uint8 RGB tiles (N, H, W, 3) under the condition called ``name``, on the CPU."""
    x = torch.from_numpy(np.ascontiguousarray(tiles))
    return condition(name).apply(x).numpy()


def robustness_report(
    classifier: Classifier,
    images: np.ndarray,
    rows: np.ndarray,
    y_true: np.ndarray,
    *,
    clean_pred: np.ndarray | None = None,
    conditions: Sequence[Condition] = CONDITIONS,
    tolerance: float = TOLERANCE_POINTS,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Scores of ``classifier`` on ``images[rows]`` (labels ``y_true``, indices into its
    classes) under each of ``conditions``, the first of which must be the clean
    reference.

    ``clean_pred``: the clean predictions, when already made (``evaluate_model`` has
    them), so they are not made twice. ``progress(done, total)`` counts the images scored
    over the conditions still to score. Returns a JSON-safe dict:

    - ``n``, ``tolerance_points``, ``seconds``;
    - ``conditions``: one entry per condition, in order: ``name``, ``group``,
      ``description``, ``accuracy``, ``macro_f1``, ``accuracy_change_points`` (against
      clean, negative for a drop) and ``within_tolerance``;
    - ``worst``: the condition (not clean) with the lowest accuracy, first in order on a
      tie; ``worst_by_group``: the same for each group present (``symmetry``, ``jpeg``,
      ``blur``, ``stain``), each as ``name``, ``accuracy``, ``accuracy_change_points``;
    - ``all_within_tolerance`` and ``failing`` (the names of the conditions that fall
      more than ``tolerance`` points below clean).
    """
    if not conditions or conditions[0].group != "clean":
        raise ValueError("the first robustness condition must be the clean reference")
    names = classifier.info.class_names
    n = len(rows)
    start = time.perf_counter()
    pending = [c for c in conditions if not (c.group == "clean" and clean_pred is not None)]
    total = n * len(pending)
    predictions: dict[str, np.ndarray] = {}
    if clean_pred is not None:
        predictions[conditions[0].name] = np.asarray(clean_pred)
    for i, cond in enumerate(pending):

        def report(done: int, _total: int, offset: int = i * n) -> None:
            if progress is not None:
                progress(offset + done, total)

        predictions[cond.name] = predict(
            classifier,
            images,
            rows,
            batch_size=batch_size,
            transform=cond.apply,
            progress=report,
            cancel=cancel,
        )
    seconds = time.perf_counter() - start

    y_true = np.asarray(y_true, dtype=np.int64)
    clean_correct = int((predictions[conditions[0].name] == y_true).sum())
    entries = []
    for cond in conditions:
        pred = predictions[cond.name]
        scores = classification_metrics(y_true, pred, names)
        # From the counts, so that a drop of exactly 3 points is 3.0, not 3.0000000000000004.
        change = (int((pred == y_true).sum()) - clean_correct) * 100.0 / n
        entries.append(
            {
                "name": cond.name,
                "group": cond.group,
                "description": cond.description,
                "accuracy": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
                "accuracy_change_points": change,
                "within_tolerance": change >= -tolerance,
            }
        )
    tested = entries[1:]
    worst_by_group = {}
    for group in GROUPS:
        members = [e for e in tested if e["group"] == group]
        if members:
            worst_by_group[group] = _summary(min(members, key=lambda e: e["accuracy"]))
    failing = [e["name"] for e in tested if not e["within_tolerance"]]
    return {
        "n": n,
        "tolerance_points": tolerance,
        "conditions": entries,
        "worst": _summary(min(tested, key=lambda e: e["accuracy"])) if tested else None,
        "worst_by_group": worst_by_group,
        "all_within_tolerance": not failing,
        "failing": failing,
        "seconds": seconds,
    }


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "accuracy", "accuracy_change_points")
    return {k: entry[k] for k in keys}


def format_robustness(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`robustness_report` output for the terminal."""
    tolerance = report["tolerance_points"]
    entries = report["conditions"]
    width = max(9, *(len(e["name"]) for e in entries))
    lines = [
        f"robustness ({report['n']} images; a condition passes within {tolerance:g} "
        "points of clean)",
        "",
        f"{'condition':<{width}}  accuracy  macro F1   change  what",
    ]
    for e in entries:
        if e["group"] == "clean":
            change = f"{'-':>7}"
        else:
            change = f"{e['accuracy_change_points']:+7.2f}"
            change += "" if e["within_tolerance"] else " !"
        lines.append(
            f"{e['name']:<{width}}  {e['accuracy']:8.4f}  {e['macro_f1']:8.4f}  {change:<9}"
            f"  {e['description']}"
        )
    lines.append("")
    for group, worst in report["worst_by_group"].items():
        lines.append(
            f"worst {group}: {worst['name']} {worst['accuracy']:.4f} "
            f"({worst['accuracy_change_points']:+.2f} points)"
        )
    if report["worst"] is not None:
        worst = report["worst"]
        lines.append(
            f"worst of all: {worst['name']} ({worst['accuracy_change_points']:+.2f} points)"
        )
    if report["all_within_tolerance"]:
        lines.append(f"all conditions within {tolerance:g} points of clean: yes")
    else:
        lines.append(
            f"all conditions within {tolerance:g} points of clean: no "
            f"(more than {tolerance:g} points lower: {', '.join(report['failing'])})"
        )
    return "\n".join(lines)
