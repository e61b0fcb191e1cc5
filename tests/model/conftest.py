"""Small models shared by the model tests (resnet18 at 32 px keeps them fast)."""

import numpy as np
import pytest
import torch

from histoviewer.model import ModelInfo, build_network


@pytest.fixture
def small_info() -> ModelInfo:
    """Recipe metadata on a resnet18 with a 32 px input, so forward passes are cheap."""
    return ModelInfo.recipe(
        "resnet18",
        input_size=32,
        name="tiny",
        training={"dataset": "kather2016", "epochs": 2, "preset": "test"},
        metrics={"accuracy": 0.5, "macro_f1": 0.25},
    )


@pytest.fixture
def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network("resnet18", 8)
    _randomise_batchnorm(net)
    return net.eval()


@pytest.fixture
def tiles() -> np.ndarray:
    """Four 150 px H&E-coloured tiles with smooth structure and fine texture."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:150, 0:150] / 150.0
    out = []
    for i in range(4):
        blobs = np.sin(2 * np.pi * (xx * (2 + i) + 0.3 * i)) * np.cos(2 * np.pi * yy * (1 + i))
        base = np.array([200, 120, 180]) + 40 * blobs[..., None] * np.array([0.5, 1.0, 0.6])
        noise = rng.normal(0, 18, (150, 150, 3))
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return np.stack(out)


def _randomise_batchnorm(net: torch.nn.Module) -> None:
    # Fresh BatchNorm layers are the identity; give them statistics so that weights
    # stored at lower precision actually change the outputs a little.
    gen = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=gen)
            module.running_var.uniform_(0.5, 1.5, generator=gen)
