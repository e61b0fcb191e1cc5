"""Scale parity: a 40x scan reaches the network as a 20x scan of the same tissue does.

The sharp slide is the synthetic H&E renderer sampled at 0.2475 um/px (twice the
model's resolution, so every detail is really there), or real tissue from the
OME-TIFF; its 2x-reduced copy at 0.495 um/px stands for a 20x scan of the same
tissue. Patches of both are read through the mapping engine's own grid and reader
and preprocessed as mapping does.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.patches import read_patches
from histoviewer.model import ModelInfo, preprocess
from histoviewer.slide import ArraySlide, open_slide
from histoviewer.slide.synthetic_he import he_region

log = logging.getLogger(__name__)

SLIDES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "slides")
INFO = ModelInfo.recipe()


def _pair(sharp: np.ndarray, reduce: Image.Resampling | None) -> tuple[ArraySlide, ArraySlide]:
    """The sharp image at 0.2475 um/px and its copy at 0.495 um/px: reduced with the
    PIL filter ``reduce``, or (None) as the mean of each 2 x 2 block."""
    h, w = sharp.shape[0] // 2 * 2, sharp.shape[1] // 2 * 2
    half = Image.fromarray(sharp[:h, :w])
    half = half.reduce(2) if reduce is None else half.resize((w // 2, h // 2), reduce)
    coarse = np.asarray(half)
    return ArraySlide(sharp[:h, :w], mpp=0.2475), ArraySlide(coarse, mpp=0.495)


def _inputs(slide, info=INFO, *, direct=False) -> torch.Tensor:
    grid = make_grid(slide, info)
    rows, cols = (v.ravel().tolist() for v in np.indices((grid.rows, grid.cols)))
    pixels = read_patches(slide, grid, rows, cols)
    if direct:  # what resizing the slide's patch straight to the input size gives
        info = dataclasses.replace(info, patch_size=grid.read_size)
    return preprocess(torch.from_numpy(pixels), info, channels_last=False)


def _sharp_sources():
    yield "synthetic", he_region(0, 0, 1500, 1200, downsample=0.5, seed=3)
    path = os.path.join(SLIDES, "qupathdemo_OS-2-ndpi.ome.tif")
    if os.path.isfile(path):
        # Real tissue scanned at 0.227 um/px, read here as 0.2475 so that patches align.
        with open_slide(path) as slide:
            yield "ome-tiff", slide.read_region(0, 0, 0, 1500, 1200)


@pytest.fixture(params=["synthetic", "ome-tiff"])
def sharp(request):
    sources = dict(_sharp_sources())
    if request.param not in sources:
        pytest.skip(f"{SLIDES} holds no qupathdemo_OS-2-ndpi.ome.tif (present in CI)")
    return request.param, sources[request.param]


def test_a_40x_slide_feeds_the_network_what_its_20x_copy_does(sharp):
    # The copy is made with another antialiasing filter than ours (PIL's triangle).
    name, image = sharp
    fine, coarse = _pair(image, Image.Resampling.BILINEAR)
    grid_fine, grid_coarse = make_grid(fine, INFO), make_grid(coarse, INFO)
    assert (grid_fine.patch_size, grid_coarse.patch_size) == (300, 150)
    assert (grid_fine.rows, grid_fine.cols) == (grid_coarse.rows, grid_coarse.cols) == (4, 5)
    target = _inputs(coarse)
    ours = (_inputs(fine) - target).abs().mean(dim=(1, 2, 3))
    straight = (_inputs(fine, direct=True) - target).abs().mean(dim=(1, 2, 3))
    log.info(
        "%s: per-patch input difference mean %.4f max %.4f; straight to 224: mean %.4f",
        name,
        ours.mean(),
        ours.max(),
        straight.mean(),
    )
    # Inputs are normalised (unit ~ one standard deviation of ImageNet pixels): a mean
    # difference of 0.02 is about 1.2 grey levels.
    assert ours.max() < 0.02
    # Straight 300 -> 224 keeps detail no training tile had: clearly farther off, and
    # for every patch.
    assert straight.mean() > 1.5 * ours.mean()
    assert bool((straight > ours).all())


def test_each_model_pixel_is_the_mean_of_the_slide_pixels_it_covers(sharp):
    # What a 20x sensor pixel records of the same tissue: the mean of four 40x pixels.
    # Up to the copy's rounding to whole grey levels, the inputs are the same.
    _, image = sharp
    fine, coarse = _pair(image, None)
    difference = (_inputs(fine) - _inputs(coarse)).abs()
    # Rounding to whole grey levels: at most half a level, 0.5 / 255 / 0.224 = 0.0088.
    assert difference.mean() < 0.005 and difference.max() < 0.009
