"""Training the tissue classifier on labelled tiles (headless; the GUI's dialog runs ``fit``
in a worker thread).

- :func:`list_tiles`, :func:`load_tiles` - a folder or zip with one sub-folder per class;
- :func:`make_split` - the canonical stratified train / val / test split;
- :class:`TrainConfig`, :func:`preset` ("recipe", "best");
- :func:`fit` - train with progress events and cancellation, resumable; :class:`TrainEvent`;
- :func:`evaluate_model`, :func:`classification_metrics` - scores of a saved model.
"""

from histoviewer.training.config import PRESETS, TrainConfig, best_config, preset, recipe_config
from histoviewer.training.dataset import (
    SkippedFile,
    TileDataset,
    TileIndex,
    dataset_from_arrays,
    list_tiles,
    load_tiles,
)
from histoviewer.training.evaluation import classification_metrics, evaluate_model, format_metrics
from histoviewer.training.split import Split, make_split, write_split_csv
from histoviewer.training.trainer import (
    BEST_FILE,
    SPLIT_FILE,
    FitResult,
    TrainEvent,
    fit,
    resume_config,
)

__all__ = [
    "BEST_FILE",
    "PRESETS",
    "SPLIT_FILE",
    "FitResult",
    "SkippedFile",
    "Split",
    "TileDataset",
    "TileIndex",
    "TrainConfig",
    "TrainEvent",
    "best_config",
    "classification_metrics",
    "dataset_from_arrays",
    "evaluate_model",
    "fit",
    "format_metrics",
    "list_tiles",
    "load_tiles",
    "make_split",
    "preset",
    "recipe_config",
    "resume_config",
    "write_split_csv",
]
