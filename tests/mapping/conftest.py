"""Fixtures for the mapping tests."""

from __future__ import annotations

import pytest
import torch
from mapping_support import RecordingSlide, he_texture, tiny_classifier

from histoviewer.model import Classifier, ModelInfo, build_network, save_model


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return tiny_classifier()


@pytest.fixture
def tissue_slide() -> RecordingSlide:
    """600 x 450 px of tissue: a 3 x 4 grid of 150 px patches, no glass."""
    return RecordingSlide(he_texture(450, 600))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small safetensors model (ResNet-18 at 32 px) for the tests that need no ResNet-50."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    torch.manual_seed(2)
    info = ModelInfo.recipe("resnet18", input_size=32, name="tiny")
    save_model(path, build_network("resnet18", 8), info)
    return path
