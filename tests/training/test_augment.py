"""Device augmentation: exact symmetries, seeded, colour changes bounded."""

from __future__ import annotations

import torch

from histoviewer.training import TrainConfig
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
