"""The resumable training checkpoint ``last.pt``.

A dict that ``torch.load(weights_only=True)`` reads (tensors and plain containers
only, no pickled objects): ``format``, ``version``, ``model`` (state_dict), ``info``
(ModelInfo dict, so :func:`histoviewer.model.load_model` accepts the file), ``optimizer``,
``scheduler``, ``epoch`` (completed epochs), ``config`` (TrainConfig dict), ``history``
(one dict per epoch), ``best_val_loss``, ``best_epoch``, ``data`` (class folders, split
counts and a fingerprint of the split), ``rng`` (torch, CUDA, Python and NumPy
states), ``processes`` (how many torchrun processes trained it; rank 0 writes the file, with
the bare network's weights, never DDP's "module."-prefixed ones) and ``extensions``
(each time the run was extended to more epochs: ``from_epochs``, ``to_epochs``,
``after_epoch``) and ``elapsed_s`` (wall-clock seconds of the run up to this checkpoint,
in all its parts). Of ``scheduler`` only the step count (``last_epoch``) is used on
resume: the rates are recomputed for the run's length (engine.make_scheduler).
Written atomically: an interrupted write leaves the previous file intact.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histoviewer.errors import HistoViewerError, ModelError, UnsafeFileError
from histoviewer.fileio import atomic_write_bytes

FORMAT = "histoviewer-training"
VERSION = 1
LAST_FILE = "last.pt"


def rng_state() -> dict[str, Any]:
    """Every global random state, as tensors, lists and ints."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where the GPUs match)."""
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_last(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (serialised in memory, then replaced)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_last(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_last`; HistoViewerError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise HistoViewerError(f"cannot resume: {path} does not exist (no earlier run there)")
    from histoviewer.model.checkpoint import load_pickled

    try:
        obj = load_pickled(path)
    except UnsafeFileError as exc:
        raise HistoViewerError(f"cannot resume: {exc}") from None
    except ModelError:
        raise HistoViewerError(
            f"cannot resume from {path}: the file is damaged or not a training checkpoint"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise HistoViewerError(
            f"cannot resume from {path}: it is not a HistoViewer training checkpoint"
        )
    if int(obj.get("version", 0)) > VERSION:
        raise HistoViewerError(
            f"cannot resume from {path}: it was written by a newer HistoViewer "
            f"(checkpoint version {obj['version']})"
        )
    return obj
