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

from histoviewer.model.checkpoint import find_shipped_models, load_model, save_model
from histoviewer.model.classifier import Classifier, weights_fingerprint
from histoviewer.model.info import FORMAT_VERSION, IMAGENET_MEAN, IMAGENET_STD, ModelInfo
from histoviewer.model.network import ARCHITECTURES, arch_from_keys, build_network
from histoviewer.model.preprocess import preprocess
from histoviewer.model.summary import model_info_summary

__all__ = [
    "ARCHITECTURES",
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Classifier",
    "ModelInfo",
    "arch_from_keys",
    "build_network",
    "find_shipped_models",
    "load_model",
    "model_info_summary",
    "preprocess",
    "save_model",
    "weights_fingerprint",
]
