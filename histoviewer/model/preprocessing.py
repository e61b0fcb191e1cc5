"""The one image preprocessing used by training and inference alike."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from histoviewer.model.info import ModelInfo


def preprocess(batch: torch.Tensor, info: ModelInfo, *, channels_last: bool = True) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> float32 (N, 3, S, S) ready for the network.

    ``S = info.input_size``. Runs on the device ``batch`` is on (move it there first:
    uint8 is a quarter of the bytes of float32).

    Images are first brought to the model's own patch scale, ``info.patch_size``
    pixels (a 297 px patch of a 0.25 µm/px slide becomes the 150 px a 0.495 µm/px
    model was trained on): larger ones by area averaging, each new pixel the mean of
    the pixels it covers (what a coarser scanner's sensor pixel records), smaller
    ones by bilinear interpolation; only then are they resized to ``S`` exactly as
    training tiles are (the recipe's PIL ``Resize`` 150 -> 224). Going straight from
    297 to 224 would hand the network finer detail than any training tile had.
    Training tiles are already at ``patch_size``, so for them the first step does
    nothing. Pixels are scaled to [0, 1] and normalised
    with ``info.mean`` / ``info.std``; non-square images are stretched. With
    ``channels_last`` the result uses the channels-last memory format (faster
    convolutions on GPUs and recent CPUs); its values and shape are the same.
    """
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(
            f"preprocess expects uint8 images of shape (N, H, W, 3), got {batch.dtype} "
            f"{tuple(batch.shape)}"
        )
    size = info.input_size
    # (x / 255 - mean) / std folded into one multiply-add; this is linear, so doing it
    # before the (linear, weights summing to one) resizes gives the same result on the
    # smallest of the images.
    mean = torch.tensor(info.mean, dtype=torch.float32, device=batch.device)
    std = torch.tensor(info.std, dtype=torch.float32, device=batch.device)
    scale, shift = 1.0 / (255.0 * std), -mean / std
    x = batch.to(torch.float32) * scale + shift  # still NHWC
    x = x.permute(0, 3, 1, 2)  # NCHW view with channels-last strides, no copy
    x = _resample(_to_patch_scale(x, info.patch_size), size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def to_patch_scale(images: np.ndarray, patch_size: int) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) of slide patches -> uint8 (N, P, P, 3), P =
    ``patch_size``: the first step of :func:`preprocess`, so that a patch cut from a
    slide for training is what the network sees of it when mapping."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).permute(0, 3, 1, 2)
    x = _to_patch_scale(x, patch_size)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _to_patch_scale(x: torch.Tensor, patch: int) -> torch.Tensor:
    if x.shape[-2] > patch or x.shape[-1] > patch:
        # Each model pixel is the mean of the slide pixels it covers, as a sensor pixel
        # of a coarser scan integrates the light falling on it.
        x = F.interpolate(x, size=(patch, patch), mode="area")
    return _resample(x, patch)


def _resample(x: torch.Tensor, side: int) -> torch.Tensor:
    if x.shape[-2:] != (side, side):
        x = F.interpolate(
            x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
    return x
