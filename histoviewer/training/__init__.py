"""Training the tissue classifier on labelled tiles (headless; the GUI's dialog runs ``fit``
in a worker thread).

- :func:`list_tiles`, :func:`load_tiles` - a folder or zip with one sub-folder per class;
- :func:`make_split` - the canonical stratified train / val / test split;
- :class:`TrainConfig`, :func:`preset` ("recipe", "best");
- :func:`fit` - train with progress events and cancellation, resumable; :class:`TrainEvent`;
- :func:`evaluate_model`, :func:`classification_metrics` - scores of a saved model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from histoviewer.lazy import lazy_exports

# Submodules load on first use (PEP 562): the command line and the viewer import
# this package without paying for torch or scikit-learn until they need them.
_EXPORTS = {
    "PRESETS": "histoviewer.training.config",
    "TrainConfig": "histoviewer.training.config",
    "best_config": "histoviewer.training.config",
    "preset": "histoviewer.training.config",
    "recipe_config": "histoviewer.training.config",
    "SkippedFile": "histoviewer.training.dataset",
    "TileDataset": "histoviewer.training.dataset",
    "TileIndex": "histoviewer.training.dataset",
    "dataset_from_arrays": "histoviewer.training.dataset",
    "list_tiles": "histoviewer.training.dataset",
    "load_tiles": "histoviewer.training.dataset",
    "classification_metrics": "histoviewer.training.evaluation",
    "evaluate_model": "histoviewer.training.evaluation",
    "format_metrics": "histoviewer.training.evaluation",
    "Split": "histoviewer.training.split",
    "make_split": "histoviewer.training.split",
    "write_split_csv": "histoviewer.training.split",
    "BEST_FILE": "histoviewer.training.run_folder",
    "SPLIT_FILE": "histoviewer.training.run_folder",
    "earlier_run_files": "histoviewer.training.run_folder",
    "FitResult": "histoviewer.training.trainer",
    "TrainEvent": "histoviewer.training.trainer",
    "fit": "histoviewer.training.trainer",
    "resume_config": "histoviewer.training.trainer",
}

if TYPE_CHECKING:
    from histoviewer.training.config import PRESETS, TrainConfig, best_config, preset, recipe_config
    from histoviewer.training.dataset import (
        SkippedFile,
        TileDataset,
        TileIndex,
        dataset_from_arrays,
        list_tiles,
        load_tiles,
    )
    from histoviewer.training.evaluation import (
        classification_metrics,
        evaluate_model,
        format_metrics,
    )
    from histoviewer.training.run_folder import BEST_FILE, SPLIT_FILE, earlier_run_files
    from histoviewer.training.split import Split, make_split, write_split_csv
    from histoviewer.training.trainer import (
        FitResult,
        TrainEvent,
        fit,
        resume_config,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
    "earlier_run_files",
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
