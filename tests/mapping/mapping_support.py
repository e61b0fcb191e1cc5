"""Test inputs for the mapping tests: H&E-like arrays, small pyramids, a tiny classifier."""

from __future__ import annotations

import threading

import numpy as np
import torch

from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.model import Classifier, ModelInfo, build_network
from histoviewer.slide import ArraySlide, SlideReader


def he_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Pink stroma with purple nuclei, varied enough that a random network tells patches apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(xx / 23.0 + np.sin(yy / 41.0) * 3) * np.cos(yy / 17.0)
    base = np.stack([225 - 25 * wave, 140 - 40 * wave, 190 - 20 * wave], axis=-1) + rng.normal(
        0, 8, (height, width, 3)
    )
    nuclei = rng.random((height // 12 + 1, width // 12 + 1)) < 0.35
    mask = np.kron(nuclei, np.ones((12, 12), bool))[:height, :width]
    base[mask] = np.array([95, 60, 150]) + rng.normal(0, 10, (int(mask.sum()), 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def glass(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Empty slide glass: bright, nearly grey, with sensor noise."""
    rng = np.random.default_rng(seed)
    tint = np.array([238, 238, 242], np.float32)
    return np.clip(tint + rng.normal(0, 2.5, (height, width, 3)), 0, 255).astype(np.uint8)


def adipose(height: int, width: int, seed: int = 2) -> np.ndarray:
    """Fat: white cells about 100 px across separated by 3 px pink membranes."""
    out = glass(height, width, seed)
    yy, xx = np.mgrid[0:height, 0:width]
    membranes = ((xx + 7 * np.sin(yy / 19.0)).astype(int) % 100 < 3) | (
        (yy + 7 * np.sin(xx / 23.0)).astype(int) % 90 < 3
    )
    out[membranes] = (222, 150, 190)
    return out


class PyramidSlide(SlideReader):
    """An in-memory pyramid (levels halve) that records every read_region call."""

    def __init__(self, array: np.ndarray, mpp: float, levels: int = 3) -> None:
        self._levels = [np.ascontiguousarray(array)]
        for _ in range(levels - 1):
            prev = self._levels[-1]
            h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
            small = prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
            self._levels.append(small.round().astype(np.uint8))
        self.path = None
        self.format_name = "test pyramid"
        self.level_dimensions = tuple((a.shape[1], a.shape[0]) for a in self._levels)
        self.level_downsamples = tuple(2.0**i for i in range(levels))
        self.mpp = mpp
        self.mpp_source = "given"
        self.reads: list[tuple[int, int, int, int, int]] = []
        self._lock = threading.Lock()

    def read_region(self, level, x, y, w, h):
        with self._lock:
            self.reads.append((level, x, y, w, h))
        return super().read_region(level, x, y, w, h)

    def _read(self, level, x0, y0, x1, y1):
        return self._levels[level][y0:y1, x0:x1].copy()

    def identity(self) -> dict:
        return {"path": None, "dimensions": list(self.dimensions)}


class RecordingSlide(ArraySlide):
    """An ArraySlide that records every read_region call (level, x, y, w, h)."""

    def __init__(self, array: np.ndarray, mpp: float = 0.495) -> None:
        super().__init__(array, mpp=mpp)
        self.reads: list[tuple[int, int, int, int, int]] = []
        self._lock = threading.Lock()

    def read_region(self, level, x, y, w, h):
        with self._lock:
            self.reads.append((level, x, y, w, h))
        return super().read_region(level, x, y, w, h)


def tiny_classifier(seed: int = 0, input_size: int = 32) -> Classifier:
    torch.manual_seed(seed)
    info = ModelInfo.recipe("resnet18", input_size=input_size, name="tiny")
    return Classifier.from_network(build_network("resnet18", info.num_classes), info)


NAMES = ["tumor", "stroma", "empty"]
COLORS = [(200, 0, 0), (0, 200, 0), (250, 250, 250)]


def sample_map() -> TissueMap:
    """3 x 4 map: row 0 tumour, row 1 stroma (one background), row 2 pending but one."""
    grid = PatchGrid(rows=3, cols=4, patch_size=150, stride=150, stride_model=150)
    tmap = TissueMap.empty(
        grid,
        NAMES,
        COLORS,
        mpp=0.5,
        slide={"path": "/x/slide.tif", "dimensions": [600, 450], "mpp_source": "given"},
        model={"name": "m", "arch": "resnet18", "fingerprint": "ab" * 32, "input_size": 32},
    )
    tmap.probs[0] = [0.7, 0.2, 0.1]
    tmap.state[0] = CLASSIFIED
    tmap.probs[1] = [0.1, 0.8, 0.1]
    tmap.state[1] = CLASSIFIED
    tmap.probs[1, 3] = np.nan
    tmap.state[1, 3] = BACKGROUND
    tmap.probs[2, 0] = [0.2, 0.3, 0.5]
    tmap.state[2, 0] = CLASSIFIED
    tmap.elapsed = 1.25
    return tmap


def batch_map_args(slides, model, out, *more: str) -> list[str]:
    """`histoviewer map` of ``slides`` (a path or a list of them) on the CPU: NPZ and CSV,
    batches of 8 patches, then the options ``more``."""
    paths = slides if isinstance(slides, (list, tuple)) else [slides]
    return [
        "map",
        *map(str, paths),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--formats",
        "npz,csv",
        "--batch-size",
        "8",
        *more,
    ]
