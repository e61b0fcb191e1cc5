import dataclasses
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from histoviewer.model import ModelInfo, preprocess

log = logging.getLogger(__name__)


def _recipe_pipeline(info: ModelInfo) -> transforms.Compose:
    # The tutorial's torchvision pipeline on PIL images.
    return transforms.Compose(
        [
            transforms.Resize(info.input_size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(info.mean, info.std),
        ]
    )


def _reference(images: np.ndarray, info: ModelInfo) -> torch.Tensor:
    pipeline = _recipe_pipeline(info)
    return torch.stack([pipeline(Image.fromarray(im)) for im in images])


def test_matches_the_recipe_pipeline_when_upscaling(tiles):
    info = ModelInfo.recipe()
    ours = preprocess(torch.from_numpy(tiles), info)
    ref = _reference(tiles, info)
    assert ours.shape == ref.shape == (4, 3, 224, 224)
    diff = (ours - ref).abs()
    log.info("150->224: mean abs diff %.5f, max %.5f", diff.mean(), diff.max())
    # Both are the same half-pixel bilinear interpolation (PIL in float mode agrees with
    # ours to 0.002 grey levels); PIL's uint8 path rounds to whole grey levels, which is
    # at most one level = 1/255/0.224 = 0.0175 in normalised units (measured: mean
    # 0.0052, max 0.0174).
    assert diff.mean() < 0.01
    assert diff.max() < 0.02


def test_larger_patches_are_brought_to_the_model_scale_first(tiles):
    # A 300 px patch of a 0.2475 um/px slide covers what a 150 px training tile covers:
    # it must reach the network as the tile would (300 -> 150, then the recipe's
    # 150 -> 224), not straight 300 -> 224, which keeps twice the detail of training.
    info = ModelInfo.recipe()
    big = np.stack([np.array(Image.fromarray(t).resize((300, 300), Image.LANCZOS)) for t in tiles])
    ours = preprocess(torch.from_numpy(big), info)
    # Each model pixel is the mean of the 2 x 2 slide pixels it covers.
    at_model_scale = np.stack([np.array(Image.fromarray(b).reduce(2)) for b in big])
    two_step = (ours - _reference(at_model_scale, info)).abs()
    direct = (ours - _reference(big, info)).abs()
    log.info(
        "300->150->224 vs PIL two-step: mean %.5f; vs PIL direct 300->224: mean %.5f",
        two_step.mean(),
        direct.mean(),
    )
    # PIL's block mean agrees with ours to rounding (uint8 in between).
    assert two_step.mean() < 0.01
    assert direct.mean() > 2 * two_step.mean()


def test_a_patch_and_its_half_size_copy_give_nearly_the_same_input(tiles):
    # What a 40x scan and a 20x scan of the same tissue give: the network input must
    # hardly depend on which one was read.
    info = ModelInfo.recipe()
    sharp = np.stack(
        [np.array(Image.fromarray(t).resize((300, 300), Image.LANCZOS)) for t in tiles]
    )
    rng = np.random.default_rng(0)
    # Detail finer than the model's 0.495 um/px that a 0.25 um/px scanner records.
    sharp = np.clip(sharp + rng.normal(0, 12, sharp.shape), 0, 255).astype(np.uint8)
    coarse = np.stack([np.array(Image.fromarray(s).reduce(2)) for s in sharp])
    coarse_input = preprocess(torch.from_numpy(coarse), info)
    diff = (preprocess(torch.from_numpy(sharp), info) - coarse_input).abs().mean().item()
    # What resizing the 300 px patch straight to 224 px would have given.
    direct = preprocess(torch.from_numpy(sharp), dataclasses.replace(info, patch_size=300))
    direct_diff = (direct - coarse_input).abs().mean().item()
    log.info("40x vs 20x input: mean abs diff %.4f (straight to 224: %.4f)", diff, direct_diff)
    assert diff < 0.05
    assert direct_diff > 1.5 * diff


def test_same_size_is_exact_normalisation(tiles):
    info = ModelInfo.recipe(input_size=150)
    ours = preprocess(torch.from_numpy(tiles), info, channels_last=False)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert ours.is_contiguous()


def test_layout_dtype_and_custom_normalisation(tiles):
    info = ModelInfo.recipe(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = preprocess(torch.from_numpy(tiles), info)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 64, 64)
    assert out.is_contiguous(memory_format=torch.channels_last)
    white = preprocess(torch.full((1, 10, 10, 3), 255, dtype=torch.uint8), info)
    torch.testing.assert_close(white, torch.ones_like(white))


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 150, 150, 3, dtype=torch.float32),
        torch.zeros(2, 3, 150, 150, dtype=torch.uint8),
        torch.zeros(150, 150, 3, dtype=torch.uint8),
    ],
)
def test_rejects_anything_but_uint8_nhwc(bad):
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, H, W, 3\)"):
        preprocess(bad, ModelInfo.recipe())
