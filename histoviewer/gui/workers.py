"""Running slow work (mapping, model loading) off the GUI thread.

A job is a plain function ``fn(ctx: JobContext) -> result`` that knows nothing of
Qt: it reports through ``ctx.progress(...)`` / ``ctx.partial(...)`` and checks
``ctx.cancel`` (a :class:`~histoviewer.tasks.CancelToken`). :class:`JobRunner`
runs each job on its own ``QThread`` through a worker object, and hands its
signals to the GUI thread as queued signals tagged with the job's id. Starting a
new job supersedes the previous one: it is asked to stop and whatever it still
sends is dropped, so a result never lands on a slide or model it was not made for.
Threads are never terminated; :meth:`JobRunner.shutdown` cancels and waits.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from histoviewer.errors import HistoViewerError
from histoviewer.tasks import Cancelled, CancelToken

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a running job may use: report progress and partial results, check cancel."""

    cancel: CancelToken
    progress: Callable[[Any], None]
    partial: Callable[[Any], None]


@dataclass
class JobFailure:
    """A job's error, made readable for the user (the traceback goes to the log)."""

    title: str
    message: str
    exception: BaseException = field(repr=False)


def describe_error(exc: BaseException, action: str) -> JobFailure:
    """A user-facing title and sentence for an exception raised while doing ``action``.

    HistoViewerError messages are written for the user and shown as they are;
    running out of memory gets advice; anything else is a bug and says so.
    """
    if isinstance(exc, HistoViewerError):
        return JobFailure(f"Cannot {action}", str(exc), exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return JobFailure(
            "Out of memory",
            f"HistoViewer ran out of memory while trying to {action}. Lower the batch size "
            "in Analysis > Mapping Settings, close other programs, or choose the CPU "
            f"as the device. ({type(exc).__name__}: {exc})",
            exc,
        )
    return JobFailure(
        "Unexpected error",
        f"An unexpected error stopped HistoViewer while trying to {action}: "
        f"{type(exc).__name__}: {exc}. This is a bug; the details are in the log.",
        exc,
    )


class _Worker(QObject):
    """Lives on the job's thread; its signals cross to the GUI thread queued."""

    progressed = Signal(int, object)
    partial = Signal(int, object)
    succeeded = Signal(int, object)
    failed = Signal(int, object)
    cancelled = Signal(int)
    done = Signal(int)

    def __init__(self, job_id: int, fn: Callable[[JobContext], Any], action: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.token = CancelToken()
        self._fn = fn
        self._action = action

    @Slot()
    def run(self) -> None:
        job_id = self.job_id
        ctx = JobContext(
            self.token,
            lambda value: self.progressed.emit(job_id, value),
            lambda value: self.partial.emit(job_id, value),
        )
        try:
            result = self._fn(ctx)
        except Cancelled:
            self.cancelled.emit(job_id)
        except BaseException as exc:  # every error must reach the user, never the void
            if not isinstance(exc, HistoViewerError):
                log.error("job '%s' failed:\n%s", self._action, traceback.format_exc())
            self.failed.emit(job_id, describe_error(exc, self._action))
        else:
            self.succeeded.emit(job_id, result)
        finally:
            # Back to the GUI thread, to be deleted there (JobRunner._on_done). Deleted on
            # this thread as it ended, the Python object's destructor could need the GIL
            # while holding one of Qt's connection locks, and deadlock with a GUI thread
            # that holds the GIL and waits for that lock (seen: a whole test run stalled).
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit(job_id)


class JobRunner(QObject):
    """Runs one current job at a time on worker threads; results carry the job's id.

    Signals (all delivered on the GUI thread, only for the current job):
    ``progress(job_id, value)``, ``partial(job_id, value)``,
    ``succeeded(job_id, result)``, ``failed(job_id, JobFailure)``,
    ``cancelled(job_id)`` (the job raised :class:`~histoviewer.tasks.Cancelled`) and
    ``finished(job_id)`` once the job's thread has ended (for any job, current or
    superseded, so owners can release what the job was using).
    """

    progress = Signal(int, object)
    partial = Signal(int, object)
    succeeded = Signal(int, object)
    failed = Signal(int, object)
    cancelled = Signal(int)
    finished = Signal(int)

    _next_id = 0

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[int, tuple[QThread, _Worker]] = {}
        self._current: int | None = None

    @property
    def current_job(self) -> int | None:
        """The id of the job whose results are delivered, None when idle."""
        return self._current

    def is_busy(self) -> bool:
        return self._current is not None

    def running_jobs(self) -> list[int]:
        """Ids of all jobs whose thread has not finished (current and superseded)."""
        return list(self._jobs)

    def start(self, fn: Callable[[JobContext], Any], action: str) -> int:
        """Run ``fn`` on a new thread and return its job id.

        ``action`` completes "Cannot ..." in error messages ("map the slide").
        A job already running is cancelled and its results are dropped.
        """
        self.cancel()
        JobRunner._next_id += 1
        job_id = JobRunner._next_id
        thread = QThread()
        thread.setObjectName(f"histoviewer-job-{job_id}")
        worker = _Worker(job_id, fn, action)
        worker.moveToThread(thread)
        # Bound methods of this GUI-thread object make the connections queued.
        worker.progressed.connect(self._on_progress)
        worker.partial.connect(self._on_partial)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.done.connect(self._on_done)
        # Direct: quit must not wait for the GUI thread's event loop (shutdown blocks it).
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.started.connect(worker.run)
        self._jobs[job_id] = (thread, worker)
        self._current = job_id
        thread.start()
        return job_id

    def cancel(self) -> None:
        """Ask the current job to stop at its next check; its results are dropped."""
        if self._current is not None:
            self._jobs[self._current][1].token.cancel()
            self._current = None

    def request_stop(self) -> None:
        """Ask the current job to stop but still deliver what it returns (a partial map)."""
        if self._current is not None:
            self._jobs[self._current][1].token.cancel()

    def shutdown(self) -> None:
        """Cancel every job and wait for its thread to end (blocks up to one batch)."""
        self.cancel()
        for _, worker in self._jobs.values():
            worker.token.cancel()
        for job_id in list(self._jobs):
            self._on_done(job_id)

    @Slot(int, object)
    def _on_progress(self, job_id: int, value: object) -> None:
        if job_id == self._current:
            self.progress.emit(job_id, value)

    @Slot(int, object)
    def _on_partial(self, job_id: int, value: object) -> None:
        if job_id == self._current:
            self.partial.emit(job_id, value)

    @Slot(int, object)
    def _on_succeeded(self, job_id: int, value: object) -> None:
        if self._take_current(job_id):
            self.succeeded.emit(job_id, value)

    @Slot(int, object)
    def _on_failed(self, job_id: int, value: object) -> None:
        if self._take_current(job_id):
            self.failed.emit(job_id, value)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if self._take_current(job_id):
            self.cancelled.emit(job_id)

    def _take_current(self, job_id: int) -> bool:
        if job_id != self._current:
            log.debug("dropping the result of superseded job %d", job_id)
            return False
        self._current = None
        return True

    @Slot(int)
    def _on_done(self, job_id: int) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is None:
            return
        thread, worker = entry
        thread.wait()  # quit() was already called from the job's thread, or is imminent
        worker.deleteLater()  # on this (GUI) thread: the worker moved back as it finished
        thread.deleteLater()
        self.finished.emit(job_id)
