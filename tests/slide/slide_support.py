"""Helpers shared by the slide tests."""

import numpy as np


def box_reduce(image: np.ndarray, ds: int) -> np.ndarray:
    """Reference downsampling (mean of ds x ds blocks, edges repeated)."""
    h, w = image.shape[:2]
    ph, pw = -(-h // ds) * ds, -(-w // ds) * ds
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge").astype(float)
    return padded.reshape(ph // ds, ds, pw // ds, ds, 3).mean(axis=(1, 3))


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())
