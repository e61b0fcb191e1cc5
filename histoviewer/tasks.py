"""Cancellation and progress for long-running work, shared by mapping and training.

Long jobs are plain functions that take a :class:`CancelToken` and a progress
callback; they know nothing of threads or Qt. The GUI's workers call
:meth:`CancelToken.cancel` from another thread, and the job stops at its next
check point (usually the next batch) by raising :class:`Cancelled`.
:func:`count_bar` is the command line's progress bar.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class Cancelled(Exception):
    """Raised inside a job when its token was cancelled."""


class CancelToken:
    """A thread-safe flag a job checks between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def format_duration(seconds: float | None) -> str:
    """A job's elapsed or remaining time as '0:19' or '1:02:03'; '–' when unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def elapsed_duration(seconds: float) -> str:
    """A measured length of time in words: '45 s', '1 min 5 s', '2 h 10 min'."""
    secs = max(0, round(seconds))
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min {secs % 60} s"
    hours, minutes = divmod(secs // 60, 60)
    return f"{hours} h {minutes} min"


def count_bar(
    total: int,
    desc: str,
    noun: str,
    *,
    initial: int = 0,
    leave: bool = True,
    remaining: bool = False,
    file: TextIO | None = None,
) -> Any | None:
    """A tqdm bar on stderr counting whole ``noun`` ("tiles", "batches", "patches").

    It reads "loading:  40%|####      | 2048/5000 tiles [00:03<00:04]". tqdm's own rate
    is left out: the callers set the count (``bar.n``) after the work is done, so tqdm
    divides work it did not see by a few microseconds ("6411674.90img/s"), and a rate in
    batches per second means little next to the images per second the callers put in
    the postfix. ``initial``: the count when the bar starts (work done before it, which
    the remaining-time estimate must not count as done in no time); ``remaining``: show
    tqdm's estimate of the time left. None when tqdm is not installed (it is optional).
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    times = "{elapsed}<{remaining}" if remaining else "{elapsed}"
    return tqdm(
        total=int(total),
        initial=int(initial),
        desc=desc,
        unit=f" {noun}",
        bar_format=f"{{desc}}: {{percentage:3.0f}}%|{{bar}}| {{n_fmt}}/{{total_fmt}} {noun} "
        f"[{times}{{postfix}}]",
        file=file if file is not None else sys.stderr,
        leave=leave,
        dynamic_ncols=True,
    )
