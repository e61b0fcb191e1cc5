"""A two-region synthetic slide and a tiny model, for the label and fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch

from histoviewer.model import ModelInfo, build_network, save_model

# Left half purple (tumour-like), right half pink (stroma-like), 0.5 µm/px.
PURPLE, PINK = (150, 40, 110), (235, 150, 190)
SLIDE_MPP = 0.5
# The model's patch: 20 px at 1.0 µm/px = 40 px of the slide.
PATCH, MODEL_MPP, SIDE = 20, 1.0, 40


def write_two_region_slide(path: Path, width: int = 240, height: int = 160) -> Path:
    rng = np.random.default_rng(0)
    img = np.empty((height, width, 3), np.uint8)
    half = width // 2
    for cols, colour in ((slice(0, half), PURPLE), (slice(half, width), PINK)):
        noise = rng.normal(0, 12, (height, img[:, cols].shape[1], 3))
        img[:, cols] = np.clip(np.array(colour) + noise, 0, 255)
    res = 1e4 / SLIDE_MPP
    tifffile.imwrite(path, img, resolution=(res, res), resolutionunit="CENTIMETER")
    return path


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """An untrained ResNet-18 at 32 px input on 20 px patches at 1 µm/px, 8 classes."""
    torch.manual_seed(seed)
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=PATCH, mpp=MODEL_MPP, name="tiny")
    save_model(path, build_network("resnet18", 8), info)
    return path
