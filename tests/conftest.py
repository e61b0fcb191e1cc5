"""Project-wide test settings: offscreen Qt, few threads, deterministic torch."""

import logging
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "kather2016")


def _folder_in_tmp(name: str, tmp_path_factory, prefix: str):
    """Point the environment variable ``name`` at a new temporary folder, then restore it."""
    saved = os.environ.get(name)
    os.environ[name] = str(tmp_path_factory.mktemp(prefix))
    yield
    if saved is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = saved


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_in_tmp(tmp_path_factory):
    """Models exported for the onnxruntime backend go to a temporary folder, never to the
    user's cache (on CPUs without native bf16 every CPU map uses that backend)."""
    # histoviewer.mapping.onnx_backend.ONNX_CACHE_ENV
    yield from _folder_in_tmp("HISTOVIEWER_ONNX_CACHE_DIR", tmp_path_factory, "onnx-cache")


@pytest.fixture(scope="session", autouse=True)
def labels_in_tmp(tmp_path_factory):
    """Patch labels the tests make go to a temporary folder, never the user's."""
    # histoviewer.labels.store.LABELS_ENV
    yield from _folder_in_tmp("HISTOVIEWER_LABELS_DIR", tmp_path_factory, "labels")


@pytest.fixture(autouse=True)
def restore_logging():
    """cli.main installs its own handler on the "histoviewer" logger; put it back."""
    logger = logging.getLogger("histoviewer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = usefixtures(...)``): on a busy
    shared CPU, two threads that wait on each other at every barrier are several times
    slower than one (and far less predictable)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def kather_dir():
    """The lossless Kather 2016 tiles in ../shared, or skip where they are absent."""
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(os.path.join(path, "tiles")):
        pytest.skip(f"Kather 2016 data not found at {path} (present in CI and dev checkouts)")
    return path
