"""The tissue classifier: network, metadata, preprocessing and checkpoint files.

Public API (see docs/architecture.md):

- :class:`ModelInfo` - what a checkpoint carries (classes, colours, input size,
  normalisation, patch scale, training config, metrics); ``ModelInfo.recipe()``.
- :func:`build_network`, :data:`ARCHITECTURES` - torchvision ResNets, never downloaded.
- :func:`preprocess` - uint8 NHWC -> normalised float32 NCHW; used by training and inference.
- :class:`Classifier` - network + info + device + weight fingerprint; ``predict_proba``.
- :func:`load_model`, :func:`save_model` - safetensors, recipe ``.pth.tar``, training ``last.pt``.
- :func:`model_info_summary` - the text shown by the GUI's Model Info and the CLI.
"""

from typing import TYPE_CHECKING

from histoviewer.lazy import lazy_exports

_EXPORTS = {
    "default_model": "histoviewer.model.shipped",
    "find_shipped_models": "histoviewer.model.shipped",
    "load_model": "histoviewer.model.checkpoint",
    "save_model": "histoviewer.model.checkpoint",
    "Classifier": "histoviewer.model.classifier",
    "weights_fingerprint": "histoviewer.model.classifier",
    "ARCHITECTURES": "histoviewer.model.info",
    "FORMAT_VERSION": "histoviewer.model.info",
    "IMAGENET_MEAN": "histoviewer.model.info",
    "IMAGENET_STD": "histoviewer.model.info",
    "ModelInfo": "histoviewer.model.info",
    "arch_from_keys": "histoviewer.model.network",
    "build_network": "histoviewer.model.network",
    "preprocess": "histoviewer.model.preprocessing",
    "model_info_summary": "histoviewer.model.summary",
}

if TYPE_CHECKING:
    from histoviewer.model.checkpoint import load_model, save_model
    from histoviewer.model.classifier import Classifier, weights_fingerprint
    from histoviewer.model.info import (
        ARCHITECTURES,
        FORMAT_VERSION,
        IMAGENET_MEAN,
        IMAGENET_STD,
        ModelInfo,
    )
    from histoviewer.model.network import arch_from_keys, build_network
    from histoviewer.model.preprocessing import preprocess
    from histoviewer.model.shipped import default_model, find_shipped_models
    from histoviewer.model.summary import model_info_summary

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ARCHITECTURES",
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Classifier",
    "ModelInfo",
    "arch_from_keys",
    "build_network",
    "default_model",
    "find_shipped_models",
    "load_model",
    "model_info_summary",
    "preprocess",
    "save_model",
    "weights_fingerprint",
]
