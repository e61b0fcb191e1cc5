"""Live training curves: loss and accuracy per epoch, plus the running batch loss.

A matplotlib figure embedded in Qt (FigureCanvasQTAgg). The training dialog
feeds it the ``history`` of "epoch" events (:meth:`TrainingCurves.set_history`)
and the loss of "batch" events (:meth:`TrainingCurves.add_batch_loss`). Redraws
are coalesced: at most one every ``min_interval_ms``, however often data arrive,
because drawing a figure costs far more than receiving an event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QSizePolicy, QWidget

# Colour-blind-safe pair (Okabe-Ito): train blue, validation orange.
TRAIN_COLOR = "#0072B2"
VAL_COLOR = "#E69F00"


class TrainingCurves(FigureCanvasQTAgg):
    """Two panels side by side: loss (train, validation, running batch loss) and accuracy."""

    def __init__(self, parent: QWidget | None = None, *, min_interval_ms: int = 400) -> None:
        figure = Figure(figsize=(7.0, 2.6), dpi=100, layout="constrained")
        super().__init__(figure)
        self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(200)
        self.loss_ax, self.acc_ax = figure.subplots(1, 2)
        self._history: list[dict[str, Any]] = []
        self._batch_x: list[float] = []
        self._batch_loss: list[float] = []
        self._epochs = 0
        self._min_interval = min_interval_ms / 1000
        self._last_draw = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.redraw)
        self.draw_count = 0  # redraws done (tests check the throttling)
        self.redraw()

    # --- data ---------------------------------------------------------------------------

    def clear(self, epochs: int = 0) -> None:
        """Forget every point (a new run of ``epochs`` epochs starts)."""
        self._history = []
        self._batch_x, self._batch_loss = [], []
        self._epochs = epochs
        self.schedule_redraw(now=True)

    def set_history(self, history: Sequence[dict[str, Any]], epochs: int | None = None) -> None:
        """Show these epochs (the trainer's ``history``: train/val loss and accuracy)."""
        self._history = list(history)
        if epochs is not None:
            self._epochs = epochs
        done = len(self._history)
        # Batch points of finished epochs are summarised by the epoch curve: keep the
        # trace of the epoch under way only, so the chart stays light on long runs.
        keep = [i for i, x in enumerate(self._batch_x) if x > done]
        self._batch_x = [self._batch_x[i] for i in keep]
        self._batch_loss = [self._batch_loss[i] for i in keep]
        self.schedule_redraw(now=True)

    def add_batch_loss(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        """The running training loss after ``batch`` of ``batches`` in ``epoch`` (from 1)."""
        if loss is None or not math.isfinite(loss):
            return
        self._batch_x.append(epoch - 1 + batch / max(1, batches))
        self._batch_loss.append(float(loss))
        self.schedule_redraw()

    def _loss_values(self) -> list[float]:
        return [float(h[k]) for h in self._history for k in ("train_loss", "val_loss")]

    def series(self) -> dict[str, list[float]]:
        """The plotted values by name (train_loss, val_loss, train_acc, val_acc, batch_loss)."""
        out = {k: [float(h[k]) for h in self._history] for k in _KEYS}
        out["batch_loss"] = list(self._batch_loss)
        return out

    # --- drawing ------------------------------------------------------------------------

    def schedule_redraw(self, now: bool = False) -> None:
        wait = 0.0 if now else self._min_interval - (time.monotonic() - self._last_draw)
        if wait <= 0:
            self._timer.stop()
            self.redraw()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000))

    def redraw(self) -> None:
        self._last_draw = time.monotonic()
        self.draw_count += 1
        epochs_x = [h["epoch"] for h in self._history]
        last = max([self._epochs, *epochs_x, 1])
        for ax in (self.loss_ax, self.acc_ax):
            ax.clear()
            ax.set_xlim(0, last + 0.05 * last)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
        la, aa = self.loss_ax, self.acc_ax
        la.set_title("Loss", fontsize=10)
        aa.set_title("Accuracy", fontsize=10)
        if self._batch_x:
            la.plot(
                self._batch_x,
                self._batch_loss,
                color=TRAIN_COLOR,
                alpha=0.6,
                linewidth=1.2,
                label="train, this epoch",
            )
        if self._history:
            s = self.series()
            la.plot(epochs_x, s["train_loss"], "o-", color=TRAIN_COLOR, ms=3, label="train")
            la.plot(epochs_x, s["val_loss"], "o-", color=VAL_COLOR, ms=3, label="validation")
            aa.plot(epochs_x, s["train_acc"], "o-", color=TRAIN_COLOR, ms=3, label="train")
            aa.plot(epochs_x, s["val_acc"], "o-", color=VAL_COLOR, ms=3, label="validation")
        aa.set_ylim(0, 1.02)
        losses = [v for v in [*self._batch_loss, *self._loss_values()] if v > 0]
        if losses and max(losses) / min(losses) > 10:
            # A first epoch far above the rest would flatten everything after it.
            la.set_yscale("log")
            la.yaxis.set_major_formatter(_LOG_TICKS)
            la.yaxis.set_minor_formatter(_LOG_TICKS)
        else:
            la.set_yscale("linear")
        if la.lines:
            la.legend(fontsize=8, loc="upper right")
        if aa.lines:
            aa.legend(fontsize=8, loc="lower right")
        if not la.lines:
            la.text(
                0.5,
                0.5,
                "waiting for the first batch",
                transform=la.transAxes,
                ha="center",
                va="center",
                color="0.5",
                fontsize=9,
            )
        self.draw_idle()


_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc")


def _log_tick(value: float, _pos: object) -> str:
    """'0.5', '1', '2', '3' on a log axis (not 5 x 10^-1), and only 1, 2, 3, 5 per decade."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa, 6) in (1, 2, 3, 5) else ""


_LOG_TICKS = FuncFormatter(_log_tick)
