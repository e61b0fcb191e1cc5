"""Network construction and recognising a ResNet from its weights alone."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torchvision
from torch import nn

from histoviewer.errors import ModelError
from histoviewer.model.info import ARCHITECTURES

#: Supported architectures, all torchvision ResNets with a replaced final layer.

# Residual blocks per stage and block type of every torchvision ResNet; used to tell
# which network a state_dict belongs to (resnet152 is listed so that it can be named
# in an error message even though it is not supported).
_RESNET_LAYOUTS: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def build_network(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised torchvision ``arch`` whose final layer has ``num_classes`` outputs.

    Never downloads anything (``weights=None``). Raises ModelError for an
    architecture not in :data:`ARCHITECTURES`.
    """
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"unknown model architecture '{arch}' (supported: {', '.join(ARCHITECTURES)})"
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, not {num_classes!r}")
    constructor = getattr(torchvision.models, arch)
    # num_classes builds the head as Linear(in_features, num_classes) directly, which is
    # the recipe's "replace fc" without first allocating the 1000-class ImageNet layer.
    return constructor(weights=None, num_classes=num_classes)


def arch_from_keys(keys: Iterable[str]) -> str | None:
    """The torchvision ResNet whose state_dict has these keys, or None if it is not one.

    Bottleneck blocks (ResNet-50 and deeper) have a ``conv3``; the number of blocks per
    stage tells the depth. May return "resnet152", which is recognised but not supported.
    """
    keys = list(keys)
    if "conv1.weight" not in keys or "fc.weight" not in keys:
        return None
    blocks: dict[int, set[int]] = {1: set(), 2: set(), 3: set(), 4: set()}
    bottleneck = False
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks[int(match.group(1))].add(int(match.group(2)))
            bottleneck = bottleneck or ".conv3." in key
    counts = tuple(len(blocks[stage]) for stage in (1, 2, 3, 4))
    return _RESNET_LAYOUTS.get((bottleneck, counts))
