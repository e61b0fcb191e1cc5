"""How well the class colours read over H&E, for everyone: a palette check.

Each class colour is blended over typical H&E tissue colours at the overlay's
default opacity (what the viewer shows), and every pair of classes is compared
with the CIEDE2000 colour difference (ΔE00; about 2 is just noticeable, above 10
is clearly different at a glance), for normal colour vision and simulated
protanopia, deuteranopia and tritanopia (Machado, Oliveira and Fernandes 2009,
severity 1). The tissue colours are the mean colours of the Kather 2016 tiles of
each class plus a brighter eosin and haematoxylin as scanners give them.

    python tools/palette_check.py            # the table for resources/classes.json

The test tests/test_palette.py holds the palette to the thresholds below.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

#: The overlay's default opacity (histoviewer.viewer_state.ViewSettings.opacity).
OPACITY = 0.45
#: Tissue under the overlay: mean colours of the Kather 2016 tiles per class (60 of
#: each), and brighter eosin and haematoxylin as whole-slide scanners show them.
TISSUE = {
    "tumour tiles": (109, 60, 101),
    "stroma tiles": (172, 94, 130),
    "complex stroma tiles": (145, 75, 116),
    "lymphocyte tiles": (100, 57, 98),
    "debris tiles": (184, 128, 155),
    "mucosa tiles": (137, 91, 132),
    "adipose tiles": (232, 225, 230),
    "bright eosin": (234, 160, 196),
    "bright haematoxylin": (150, 100, 170),
}
#: Machado et al. 2009, severity 1.0, on linear RGB.
VISION = {
    "normal": np.eye(3),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "tritanopia": np.array(
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ]
    ),
}
#: The three classes the issue asks to tell apart, and tumour against every class: the
#: pairs that must keep the larger ΔE00 below.
KEY_CLASSES = ("tumor", "stroma", "complex")
KEY_MIN = {"normal": 15.0, "colour-blind": 10.0}
#: Every other pair of tissue classes (empty glass left out: it is grey on grey).
ALL_MIN = {"normal": 8.0, "colour-blind": 5.0}


def to_linear(rgb: np.ndarray) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    c = np.clip(linear, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB 0-255 colours (..., 3)."""
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = to_linear(rgb) @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def delta_e00(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu and Dalal 2005)."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbp, cbp = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hbp = np.where(
        c1p * c2p == 0,
        hsum,
        np.where(
            np.abs(h1p - h2p) <= 180,
            hsum / 2,
            np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2),
        ),
    )
    t = (
        1
        - 0.17 * np.cos(np.radians(hbp - 30))
        + 0.24 * np.cos(np.radians(2 * hbp))
        + 0.32 * np.cos(np.radians(3 * hbp + 6))
        - 0.20 * np.cos(np.radians(4 * hbp - 63))
    )
    sl = 1 + 0.015 * (lbp - 50) ** 2 / np.sqrt(20 + (lbp - 50) ** 2)
    sc, sh = 1 + 0.045 * cbp, 1 + 0.015 * cbp * t
    rt = (
        -2
        * np.sqrt(cbp**7 / (cbp**7 + 25.0**7))
        * np.sin(np.radians(60 * np.exp(-(((hbp - 275) / 25) ** 2))))
    )
    return np.sqrt(
        (dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh)
    )


def seen(rgb, vision: str) -> np.ndarray:
    """sRGB as a viewer with ``vision`` sees it."""
    return to_srgb(to_linear(rgb) @ VISION[vision].T)


def blended(color, tissue, opacity: float = OPACITY) -> np.ndarray:
    """The overlay colour over tissue as the viewer composes it (in sRGB, as Qt does)."""
    return opacity * np.asarray(color, dtype=np.float64) + (1 - opacity) * np.asarray(
        tissue, dtype=np.float64
    )


def worst_pairs(
    names, colors, opacity: float = OPACITY
) -> dict[tuple[str, str], tuple[float, str, str]]:
    """For each pair of classes: the smallest ΔE00 between them over every tissue colour
    and vision, with the tissue and vision where it is smallest."""
    out = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        worst = (float("inf"), "", "")
        for tissue_name, tissue in TISSUE.items():
            for vision in VISION:
                d = float(
                    delta_e00(
                        lab(seen(blended(colors[i], tissue, opacity), vision)),
                        lab(seen(blended(colors[j], tissue, opacity), vision)),
                    )
                )
                if d < worst[0]:
                    worst = (d, tissue_name, vision)
        out[(a, b)] = worst
    return out


def pair_minimum(names, colors, pair, vision_kind: str, opacity: float = OPACITY) -> float:
    """The smallest ΔE00 of ``pair`` over every tissue colour, for normal vision or the
    three colour-blind simulations (``vision_kind`` "normal" or "colour-blind")."""
    visions = (
        ["normal"] if vision_kind == "normal" else ["protanopia", "deuteranopia", "tritanopia"]
    )
    i, j = names.index(pair[0]), names.index(pair[1])
    return min(
        float(
            delta_e00(
                lab(seen(blended(colors[i], t, opacity), v)),
                lab(seen(blended(colors[j], t, opacity), v)),
            )
        )
        for t in TISSUE.values()
        for v in visions
    )


def is_key_pair(a: str, b: str) -> bool:
    return (a in KEY_CLASSES and b in KEY_CLASSES) or "tumor" in (a, b)


def load(path: Path | None = None) -> tuple[list[str], list[tuple[int, int, int]]]:
    path = path or Path(__file__).resolve().parents[1] / "resources" / "classes.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return [c["name"] for c in data["classes"]], [tuple(c["color"]) for c in data["classes"]]


def main(argv: list[str]) -> int:
    names, colors = load(Path(argv[0]) if argv else None)
    tissue = [n for n in names if n != "empty"]
    print(f"ΔE00 at {OPACITY:.0%} opacity, worst over {len(TISSUE)} tissue colours")
    print(f"{'pair':<22}{'normal':>8}{'colour-blind':>14}")
    for a, b in itertools.combinations(tissue, 2):
        normal = pair_minimum(names, colors, (a, b), "normal")
        cvd = pair_minimum(names, colors, (a, b), "colour-blind")
        key = "*" if is_key_pair(a, b) else " "
        print(f"{key}{a + ' / ' + b:<21}{normal:8.1f}{cvd:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
