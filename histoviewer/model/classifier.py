"""Classifier: a network in eval mode with its metadata, device and weight fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from histoviewer.device import resolve_device
from histoviewer.errors import ModelError
from histoviewer.model.describe import recorded_test_accuracy
from histoviewer.model.info import ModelInfo
from histoviewer.model.preprocessing import preprocess


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the sorted tensor names and their float32 bytes.

    Independent of device, storage dtype of the file and memory layout, so the same
    weights always give the same identity (used to key cached tissue maps).
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode("utf-8"))
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class Classifier:
    """A ready-to-run tissue classifier. Build it with :meth:`from_network` or ``load_model``.

    Attributes: ``network`` (eval mode, on ``device``), ``info`` (:class:`ModelInfo`),
    ``device`` (torch.device) and ``fingerprint`` (hex SHA-256 of the weights).
    """

    def __init__(
        self, network: nn.Module, info: ModelInfo, device: torch.device, fingerprint: str
    ) -> None:
        self.network = network
        self.info = info
        self.device = device
        self.fingerprint = fingerprint

    @classmethod
    def from_network(
        cls, network: nn.Module, info: ModelInfo, device: str | torch.device = "cpu"
    ) -> Classifier:
        """Wrap ``network`` (moved to ``device``, switched to eval mode) with its metadata.

        The network itself is used, not a copy: it is moved, converted to channels-last
        and left in eval mode (a trainer evaluating mid-training must call ``.train()``
        again). Raises ModelError when its final layer does not have one output per
        class in ``info``.
        """
        outputs = _head_outputs(network)
        if outputs is not None and outputs != info.num_classes:
            raise ModelError(
                f"the network has {outputs} outputs but {info.num_classes} classes are declared"
            )
        device = resolve_device(device)
        fingerprint = weights_fingerprint(network.state_dict())
        network = network.to(device=device, memory_format=torch.channels_last).eval()
        return cls(network, info, device, fingerprint)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def identity(self) -> dict[str, Any]:
        """What a tissue map records about the model that made it (JSON-safe)."""
        return {
            "name": self.info.name,
            "arch": self.info.arch,
            "fingerprint": self.fingerprint,
            "class_names": list(self.info.class_names),
            "input_size": self.info.input_size,
            "patch_size": self.info.patch_size,
            "mpp": self.info.mpp,
            "test_accuracy": recorded_test_accuracy(self.info),
        }

    @torch.inference_mode()
    def probabilities(
        self, batch: torch.Tensor, *, autocast_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Class probabilities (N, C) float32 on ``device`` for a uint8 (N, H, W, 3) tensor.

        ``batch`` may be on the CPU or already on ``device``. ``autocast_dtype``
        (e.g. from ``histoviewer.device.autocast_dtype``) runs the network in reduced
        precision; None keeps float32.
        """
        batch = batch.to(self.device, non_blocking=True)
        x = preprocess(batch, self.info)
        if autocast_dtype is None:
            logits = self.network(x)
        else:
            with torch.autocast(self.device.type, dtype=autocast_dtype):
                logits = self.network(x)
        return torch.softmax(logits.float(), dim=1)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) float32 for uint8 RGB images (N, H, W, 3).

        For small batches (it holds them whole); large jobs batch themselves.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"predict_proba expects uint8 images (N, H, W, 3), got {images.dtype} "
                f"{images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(images))
        return self.probabilities(batch).cpu().numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (
            f"Classifier({self.info.name!r}, {self.info.arch}, {self.num_classes} classes, "
            f"device={self.device}, fingerprint={self.fingerprint[:12]})"
        )


def _head_outputs(network: nn.Module) -> int | None:
    head = getattr(network, "fc", None)
    return head.out_features if isinstance(head, nn.Linear) else None
