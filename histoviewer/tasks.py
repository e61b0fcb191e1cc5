"""Cancellation for long-running work, shared by mapping and training.

Long jobs are plain functions that take a :class:`CancelToken` and a progress
callback; they know nothing of threads or Qt. The GUI's workers call
:meth:`CancelToken.cancel` from another thread, and the job stops at its next
check point (usually the next batch) by raising :class:`Cancelled`.
"""

from __future__ import annotations

import threading


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
