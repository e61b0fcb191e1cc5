"""Fixtures for the training tests: synthetic tiles in tmp folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_support import make_tiles


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    return make_tiles(tmp_path / "tiles")


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    """Enough tiles for the canonical scikit-learn split: 3 classes x 25 = 75 (60/3/12)."""
    return make_tiles(tmp_path_factory.mktemp("data"), per_class=25, size=32, seed=1)
