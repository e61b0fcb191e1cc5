"""Small synthetic slides shared by the slide tests (generated, never downloaded)."""

import numpy as np
import pytest

from histoviewer.slide.synthetic import synthetic_he


@pytest.fixture(scope="session")
def he_image() -> np.ndarray:
    """A 300 x 220 H&E-like RGB image with tissue, nuclei and background."""
    image = synthetic_he(300, 220, seed=7)
    image.flags.writeable = False
    return image


@pytest.fixture(scope="session")
def colour_blocks() -> np.ndarray:
    """Flat, saturated colour blocks (64 px) where a YCbCr/RGB mix-up shows at once."""
    colours = [(220, 40, 40), (40, 200, 60), (50, 60, 210), (240, 170, 200), (90, 50, 150)]
    image = np.full((128, 320, 3), 255, np.uint8)
    for i, colour in enumerate(colours):
        image[:64, i * 64 : (i + 1) * 64] = colour
        image[64:, i * 64 : (i + 1) * 64] = colours[(i + 2) % len(colours)]
    image.flags.writeable = False
    return image
