"""A training run's folder: the files a run writes, an earlier run in it, the disk space.

A new run never writes over an earlier one: :func:`refuse_earlier_run` refuses a folder
that holds one unless the user asked to replace it (``--overwrite``), and then
:func:`remove_earlier_run` deletes the old files only once the new data has loaded.
:func:`check_free_space` refuses to start a run whose files will not fit on the disk,
before the tiles are read.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from histoviewer.errors import HistoViewerError, StorageError
from histoviewer.fileio import describe_os_error, ensure_free_space
from histoviewer.model import build_network
from histoviewer.training import report as reporting
from histoviewer.training.card import MODEL_CARD_FILE
from histoviewer.training.checkpoint import LAST_FILE
from histoviewer.training.config import TrainConfig

log = logging.getLogger(__name__)

BEST_FILE = "best.safetensors"
SPLIT_FILE = "split.csv"
#: Every file a run writes into its folder.
RUN_FILES = (
    LAST_FILE,
    BEST_FILE,
    reporting.REPORT_FILE,
    reporting.CURVES_FILE,
    reporting.CONFUSION_FILE,
    MODEL_CARD_FILE,
    SPLIT_FILE,
)
#: What a cross-validation by specimen writes beside its final run (crossval.py).
CROSSVAL_FILE = "crossval.json"
CROSSVAL_CONFUSION_FILE = "crossval_confusion.png"
# Classes assumed when the size of a run's files is estimated before the data is read:
# the final layer is a sliver of a ResNet (2048 x 16 of ResNet-50's 23.5 M weights).
_ESTIMATE_CLASSES = 16
# The report, the two figures and split.csv together, generously.
_REPORT_BYTES = 4 * 1024 * 1024


def earlier_run_files(folder: str | Path) -> list[Path]:
    """The files of an earlier run in ``folder`` (of :data:`RUN_FILES`); empty when there is
    none. A lone split.csv (what ``epochs=0`` writes) is no run: every run rewrites it."""
    folder = Path(folder).expanduser()
    found = [folder / name for name in RUN_FILES if (folder / name).is_file()]
    return found if any(path.name != SPLIT_FILE for path in found) else []


def estimate_run_bytes(config: TrainConfig) -> int:
    """About how much disk space a run of ``config`` needs in its folder at its peak.

    ``last.pt`` holds the float32 weights and buffers plus the optimiser's state (Adam
    and AdamW keep two more values per weight, SGD with momentum one); it is rewritten
    atomically, so for a moment a new copy lies beside the old one. ``best.safetensors``
    holds the float32 weights (rewritten too, but never at the same time as last.pt).
    The network is built on the meta device: its sizes without any memory or time.
    """
    if config.epochs == 0:
        return _REPORT_BYTES
    with torch.device("meta"):
        network = build_network(config.arch, _ESTIMATE_CLASSES)
    weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    # Adam and AdamW: two moments per weight; SGD: a momentum buffer, if it has momentum.
    copies = 2 if config.optimizer in ("adam", "adamw") else int(config.momentum > 0)
    last = weights + copies * params
    return 2 * last + weights + _REPORT_BYTES


def refuse_earlier_run(out: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier run in ``out``, which ``overwrite`` replaces; without
    it, an earlier run is refused (HistoViewerError naming --resume and --overwrite)."""
    files = earlier_run_files(out)
    if files and not overwrite:
        raise HistoViewerError(
            f"{out} already holds a training run "
            f"({', '.join(p.name for p in files)}); continue or extend it with --resume "
            "(in the app, Resume), train into a new folder, or replace it with --overwrite"
        )
    return files


def check_free_space(config: TrainConfig, resume: bool, earlier: list[Path]) -> None:
    """Refuse to start when the run's files will not fit on the disk (before the tiles
    are read, which can take minutes). Files the run replaces free their space."""
    out = Path(config.out).expanduser()
    replaced = earlier
    if resume:
        replaced = [out / name for name in RUN_FILES if (out / name).is_file()]
    have = 0
    for path in replaced:
        with contextlib.suppress(OSError):  # gone meanwhile: it frees nothing
            have += path.stat().st_size
    need = estimate_run_bytes(config) - have
    ensure_free_space(
        out,
        max(0, need),
        f"the training run's checkpoints and report ({LAST_FILE}, {BEST_FILE}, ...)",
    )


def remove_earlier_run(out: Path, files: list[Path]) -> None:
    """Delete the earlier run's files (``--overwrite``): none is left beside the new
    run's to be mistaken for its own."""
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot remove {path} of the earlier run: {describe_os_error(exc)}"
            ) from None
    if files:
        log.info(
            "replacing the earlier run in %s: removed %s",
            out,
            ", ".join(p.name for p in files),
        )
