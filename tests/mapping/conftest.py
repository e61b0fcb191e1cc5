"""Fixtures for the mapping tests."""

from __future__ import annotations

import pytest
from mapping_support import RecordingSlide, he_texture, tiny_classifier

from histoviewer.model import Classifier


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return tiny_classifier()


@pytest.fixture
def tissue_slide() -> RecordingSlide:
    """600 x 450 px of tissue: a 3 x 4 grid of 150 px patches, no glass."""
    return RecordingSlide(he_texture(450, 600))
