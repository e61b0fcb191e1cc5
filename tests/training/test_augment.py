"""Device augmentation: exact symmetries, seeded, colour changes bounded."""

from __future__ import annotations

import numpy as np
import torch

from histoviewer.training import TrainConfig, augment
from histoviewer.training.augment import Augmenter


def _batch(n: int = 16, size: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def _symmetries(tile: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in (tile, tile.transpose(0, 1)):
        out += [t, t.flip(0), t.flip(1), t.flip(0).flip(1)]
    return out


def test_recipe_does_not_augment():
    x = _batch()
    assert Augmenter(TrainConfig())(x, torch.Generator().manual_seed(1)) is x


def test_flips_and_rot90_are_exact_symmetries_and_use_all_eight():
    x = _batch(64)
    aug = Augmenter(TrainConfig(flips=True, rot90=True))
    y = aug(x, torch.Generator().manual_seed(1))
    seen = set()
    for src, out in zip(x, y, strict=True):
        matches = [i for i, s in enumerate(_symmetries(src)) if torch.equal(s, out)]
        assert matches, "output is not a symmetry of its input"
        seen.add(matches[0])
    assert len(seen) == 8


def test_rot90_alone_gives_rotations_only():
    x = _batch(32)
    y = Augmenter(TrainConfig(rot90=True))(x, torch.Generator().manual_seed(2))
    for src, out in zip(x, y, strict=True):
        assert any(torch.equal(torch.rot90(src, k, (0, 1)), out) for k in range(4))


def test_same_seed_same_result_other_seed_differs():
    cfg = TrainConfig(flips=True, rot90=True, scale_jitter=0.8, stain_jitter=0.05, color_jitter=0.1)
    x = _batch()
    aug = Augmenter(cfg)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stain_and_colour_jitter_change_colour_but_not_grossly():
    flat = torch.full((8, 10, 10, 3), 0, dtype=torch.uint8)
    flat[..., 0], flat[..., 1], flat[..., 2] = 180, 90, 160  # an eosin-pink H&E tone
    y = Augmenter(TrainConfig(stain_jitter=0.05, color_jitter=0.1))(
        flat, torch.Generator().manual_seed(3)
    )
    diff = (y.float() - flat.float()).abs()
    assert diff.max() > 1  # something changed
    assert diff.mean() < 40  # but still the same kind of colour
    # Within an image the change is uniform: jitter is per image, not per pixel.
    assert (y.float().std(dim=(1, 2)) < 1.0).all()


# skimage's stain space is optical density divided by ln(10^6) (rgb2hed's log_adjust);
# the jitter's shift is in optical density units (natural log), this many of skimage's.
SKIMAGE_OD_UNIT = float(np.log(1e6))


def _stained_tiles(n: int = 6, size: int = 8) -> torch.Tensor:
    """uint8 RGB tiles whose colours are mixtures of haematoxylin, eosin and DAB with
    positive amounts (inside the stain cone, where rgb2hed does not clip)."""
    from skimage.color import hed2rgb

    rng = np.random.default_rng(4)
    stains = rng.uniform(0.005, 0.05, (n, size, size, 3))
    rgb = hed2rgb(stains)
    return torch.from_numpy(np.round(rgb * 255).astype(np.uint8))


def _fixed_draws(monkeypatch, *draws: list[float]) -> None:
    """The stain jitter's uniform draws (scales first, then shifts), one value per stain
    channel and the same for every image."""
    calls = iter(draws)

    def uniform(n, generator, device):
        per_channel = torch.tensor(next(calls), dtype=torch.float32, device=device)
        return per_channel.repeat(n // 3)

    monkeypatch.setattr(augment, "_uniform", uniform)


def test_stain_jitter_is_skimage_colour_deconvolution_scaled_and_shifted(monkeypatch):
    from skimage.color import hed2rgb, rgb2hed

    s = 0.2
    u_scale, u_shift = [0.9, 0.2, 0.6], [0.1, 0.75, 0.5]
    _fixed_draws(monkeypatch, u_scale, u_shift)
    x = _stained_tiles()
    y = Augmenter(TrainConfig(stain_jitter=s))(x, torch.Generator().manual_seed(0))

    scale = 1 + s * (2 * np.array(u_scale) - 1)  # U(1 - s, 1 + s) per stain
    shift = s * (2 * np.array(u_shift) - 1)  # U(-s, s) optical density per stain
    hed = rgb2hed(x.numpy())
    assert hed.min() > 0  # no clipping in rgb2hed: the reference is exact
    expected = hed2rgb(hed * scale + shift / SKIMAGE_OD_UNIT) * 255
    diff = np.abs(y.numpy().astype(float) - expected)
    assert diff.max() <= 1.0  # rounding to uint8
    # A real change, stain by stain: with the scales and shifts swapped it would differ.
    assert np.abs(y.numpy().astype(float) - x.numpy()).mean() > 3
    swapped = hed2rgb(hed * scale[::-1] + shift[::-1] / SKIMAGE_OD_UNIT) * 255
    assert np.abs(y.numpy() - swapped).max() > 8


def test_stain_jitter_at_zero_strength_and_neutral_draws_is_the_identity(monkeypatch):
    x = _stained_tiles()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(Augmenter(TrainConfig(stain_jitter=0.0))(x, g), x)
    # Draws of the middle of each range: scale 1, shift 0, at any strength.
    _fixed_draws(monkeypatch, [0.5] * 3, [0.5] * 3)
    black_and_white = torch.tensor([[[[0, 0, 0], [255, 255, 255]]]], dtype=torch.uint8)
    for tiles in (x, _batch(), black_and_white):
        _fixed_draws(monkeypatch, [0.5] * 3, [0.5] * 3)
        assert torch.equal(Augmenter(TrainConfig(stain_jitter=0.3))(tiles, g), tiles)
