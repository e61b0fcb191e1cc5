"""Helpers for the main-window tests: tiny slides, a tiny real model, a window factory.

Imported by the test modules (pytest puts this folder on sys.path); not a test file.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication
from torch import nn

from histoviewer.gui.mainwindow import MainWindow
from histoviewer.gui.settings import MappingSettings
from histoviewer.model import Classifier, ModelInfo, build_network
from histoviewer.slide import ArraySlide, synthetic

MPP = 0.495
MAP_TIMEOUT = 20_000


def on_cpu(**changes) -> MappingSettings:
    # The gated test network holds a threading.Event, which cannot be copied to a GPU.
    return MappingSettings(device="cpu", **changes)


def run_mapping(qtbot, window: MainWindow):
    """Map Tissue on ``window`` and wait for the map (a job must start)."""
    with qtbot.waitSignal(window.mapping_finished, timeout=MAP_TIMEOUT) as blocker:
        assert window.map_tissue() is not None
    return blocker.args[0]


def write_strip_tiff(path: Path, width: int, height: int, *, seed: int = 0) -> Path:
    """An uncompressed strip TIFF of H&E-like tissue at 0.495 um/px (like the CRC slides)."""
    return synthetic.write_strip_tiff(path, width=width, height=height, seed=seed)


def tiny_classifier(seed: int = 0) -> Classifier:
    """A real, small, randomly initialised ResNet-18 that sees 32 x 32 inputs."""
    torch.manual_seed(seed)
    info = ModelInfo.recipe(arch="resnet18", input_size=32, name=f"tiny-{seed}")
    return Classifier.from_network(build_network("resnet18", info.num_classes), info)


class Gate:
    """Shared by a GatedNetwork and its copies: counts forward passes, holds some back."""

    def __init__(self, free_batches: int, fail_with: BaseException | None) -> None:
        self.event = threading.Event()
        self.free = free_batches
        self.fail_with = fail_with
        self.calls = 0
        self.lock = threading.Lock()

    def set(self) -> None:
        self.event.set()

    def pass_through(self) -> None:
        with self.lock:
            self.calls += 1
            held = self.calls > self.free
        if held:
            if self.fail_with is not None:
                raise self.fail_with
            if not self.event.wait(timeout=30):
                raise TimeoutError("the test never opened the gate")


class GatedNetwork(nn.Module):
    """A real network whose forward passes after the first ``free_batches`` wait for a gate.

    Lets a test act (cancel, close the window, open another slide) while a mapping
    job is provably mid-way, without timing guesses. With ``fail_with`` the held
    passes raise that exception instead (an out-of-memory error, say). The engine
    prepares a private copy of a network (tracing it to fold batch norm, or
    deep-copying it): tracing is refused, so the gate is not traced away (nor exported
    to ONNX: the "auto" backend then maps with PyTorch), and copies share the gate.
    """

    def __init__(self, network: nn.Module, gate: Gate) -> None:
        super().__init__()
        self.network = network
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():  # fx, or ONNX export
            raise TypeError("the gated test network must not be traced")
        self.gate.pass_through()
        return self.network(x)

    def __deepcopy__(self, memo: dict) -> GatedNetwork:
        return GatedNetwork(copy.deepcopy(self.network, memo), self.gate)


def gated_classifier(
    free_batches: int, fail_with: BaseException | None = None, seed: int = 0
) -> tuple[Classifier, Gate]:
    torch.manual_seed(seed)
    info = ModelInfo.recipe(arch="resnet18", input_size=32, name="gated")
    gate = Gate(free_batches, fail_with)
    net = GatedNetwork(build_network("resnet18", info.num_classes), gate)
    return Classifier.from_network(net, info), gate


def gated_mapping(qtbot, make_window, slide_path):
    """A window mapping ``slide_path`` in batches of 2, held after its first batch:
    (window, classifier, gate, job id); ``gate.set()`` lets the job go on."""
    window = make_window()
    window.set_mapping_settings(on_cpu(batch_size=2))
    window.open_slide(slide_path)
    classifier, gate = gated_classifier(free_batches=1)
    window.set_classifier(classifier)
    job = window.map_tissue()
    qtbot.waitUntil(lambda: window.tissue_map.classified_count == 2, timeout=MAP_TIMEOUT)
    return window, classifier, gate, job


class FailingSlide(ArraySlide):
    """An in-memory slide whose reads of exactly ``fail_height`` rows raise ``error``.

    The mapper reads patch rows of ``PatchGrid.read_size`` rows; the view reads
    tiles of other heights, so only the mapping job sees the failure.
    """

    def __init__(self, array: np.ndarray, fail_height: int, error: BaseException) -> None:
        super().__init__(array, mpp=MPP)
        self._fail_height = fail_height
        self._error = error

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if h == self._fail_height:
            raise self._error
        return super().read_region(level, x, y, w, h)


def wheel(widget, steps: int = 1) -> bool:
    """Send one real wheel event (``steps`` notches up) to ``widget``; whether it took it."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(
        centre,
        QPointF(widget.mapToGlobal(centre)),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)
    return event.isAccepted()
