"""A torchrun job's processes watching each other through the job's key-value store.

:mod:`histoviewer.distributed` gives each process of a torchrun job a :class:`JobWatch`:
a thread that beats this process's heartbeat into the store and reads the others'
heartbeats and failure records, so that when one process fails or dies every process
stops within seconds with one sentence saying which and why, instead of waiting in a
collective until the group's timeout (see that module's docstring for the protocol).
The store also carries the exchanges that must not block without watching for
failures (:meth:`JobWatch.post`, :meth:`JobWatch.await_objects`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import threading
import time
from typing import Any

import torch.distributed as dist

from histoviewer.errors import HistoViewerError, PeerError

log = logging.getLogger(__name__)

#: How often each process's watcher beats its heartbeat and looks for trouble.
POLL_S = 0.5
#: A process whose heartbeat has not moved for this long is taken to have died. Long
#: enough for a process busy in code that holds the GIL; torch's operators release it.
SILENT_AFTER_S = 30.0
#: How long the main thread may take to act on another process's failure before the
#: watcher stops this process by force (it may be stuck in a collective or a long read).
STOP_GRACE_S = 10.0
#: How long a failing process waits at most for the others to read its failure record.
NOTICE_WAIT_S = 20.0
#: How long rank 0 (which may host the store) waits at the end for the others to leave.
FINISH_WAIT_S = 60.0
#: What a process stopped by SIGTERM says when the store does not tell why.
TERMINATED = "stopped by a termination signal (SIGTERM)"

_GONE = "(killed, out of memory, or its machine is down)"


class JobWatch:
    """This process's view of the others through the job's store (see the module's
    docstring): heartbeats, failure records, and the exchanges built on them.

    Keys: ``beat/R`` (a counter), ``failed/R`` (the sentence saying why process R
    failed), ``failures`` (a counter), ``seen/R`` (R's watcher has seen a failure),
    ``noticed/R`` (R's main thread has acted on one), ``left/R`` (R has finished).
    """

    def __init__(
        self, store: dist.Store, rank: int, world: int, where: str, backend: str | None = None
    ) -> None:
        self.store = store
        self.backend = backend  # "gloo": leaving the group breaks the others' collectives
        self.rank = rank
        self.world = world
        self.where = where  # the store's address, for messages
        self.peers = [r for r in range(world) if r != rank]
        self.trouble: str | None = None  # why this process must stop, once known
        self.trouble_at = 0.0
        self.terminated_at: float | None = None  # when SIGTERM came (see terminate())
        self.handling = False  # the main thread is acting on an error (or finishing)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beats: dict[int, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._run, name="histoviewer-watch", daemon=True)
        self._thread.start()

    # --- the main thread

    def check(self) -> None:
        if self.terminated_at is not None:
            raise Terminated(TERMINATED)
        if self.trouble is not None:
            raise PeerError(self.trouble)

    def terminate(self) -> None:
        """SIGTERM came (torchrun stops the others this way when a process ends badly).

        Called by the signal handler, which then raises Terminated wherever the main
        thread is. A library's broad ``except`` may swallow that exception (SIGTERM during
        an import that is allowed to fail, say), so it is remembered: every later
        :meth:`check` raises Terminated again, and if the main thread does not act on it
        within STOP_GRACE_S the watcher ends this process, saying why, before torchrun's
        own grace period runs out and it is killed without a word.
        """
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()

    def post(self, key: str, obj: Any) -> None:
        self.store.set(key, pickle.dumps(obj))

    def await_objects(self, keys: list[str]) -> list[Any]:
        """The objects posted under ``keys``, once all are there (polling the store)."""
        pause = 0.01
        while True:
            self.check()
            try:
                ready = self.store.check(keys)
            except Exception as exc:  # the store is gone: whoever hosted it has stopped
                self._flag(self._lost_store(exc))
                self.check()
            if ready:
                return [pickle.loads(self.store.get(key)) for key in keys]
            time.sleep(pause)
            pause = min(0.5, pause * 2)

    def on_error(self, exc: BaseException) -> BaseException:
        """What to raise for ``exc``, which is ending this process's part of the job.

        Another process's failure (PeerError, or a broken connection explained by a
        failure record or a silent heartbeat) is noted and raised as PeerError. Any other
        error is this process's own: it is recorded for the others, and this process
        waits (at most NOTICE_WAIT_S) until their watchers have read the record.
        """
        self.handling = True
        # Whatever ends the block after a SIGTERM (maybe one swallowed: see terminate()).
        terminated = isinstance(exc, Terminated) or self.terminated_at is not None
        if isinstance(exc, PeerError) and not terminated:
            self._mark("noticed")
            return exc
        if terminated or _is_connection_error(exc):
            cause = self.trouble or self._find_cause(3.0)
            self._mark("noticed")
            if cause is not None:
                return PeerError(f"stopped by torchrun: {cause}" if terminated else cause)
            if terminated:
                return exc
            message = f"lost the connection to another process of the job ({_first_line(exc)})"
            self._publish(self.rank, f"process {self.rank} of {self.world} {message}")
            return PeerError(message)
        self._publish(self.rank, f"process {self.rank} of {self.world} failed: {_reason(exc)}")
        if isinstance(exc, Exception):  # not on Ctrl-C: every process has it
            _break_collectives(self.backend)
            # Until the others have read why: this process's end may take the store with
            # it (torchrun's agent on its node hosts it), and ends their collectives.
            self._await_others(("seen", "noticed", "failed", "left"), NOTICE_WAIT_S)
        return exc

    def finish(self) -> None:
        """This process has done its part; rank 0, which may host the store, waits
        (a while) for the others to be done with it."""
        self.handling = True
        self._mark("left")
        if self.rank == 0:
            self._await_others(("left", "failed", "noticed"), FINISH_WAIT_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- the watcher thread

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.store.add(f"beat/{self.rank}", 1)
                if self.trouble is None:
                    found = self._failure_record() or self._silent_peer()
                    if found is not None:
                        self._flag(found)
            except Exception as exc:  # the store is gone: whoever hosted it has stopped
                if not self.handling:
                    self._flag(self._lost_store(exc))
            if not self.handling and self._overdue():
                self._stop_by_force()

    def _overdue(self) -> bool:
        """The main thread has had STOP_GRACE_S to act on SIGTERM or on trouble."""
        since = [t for t in (self.terminated_at, self.trouble and self.trouble_at) if t]
        return bool(since) and time.monotonic() - min(since) > STOP_GRACE_S

    def _flag(self, sentence: str) -> None:
        with self._lock:
            if self.trouble is not None:
                return
            self.trouble, self.trouble_at = sentence, time.monotonic()
        log.debug("stopping: %s", sentence)
        self._mark("seen")

    def _failure_record(self) -> str | None:
        if self.store.add("failures", 0) == 0:
            return None
        for r in self.peers:
            if self.store.check([f"failed/{r}"]):
                return self.store.get(f"failed/{r}").decode("utf-8", "replace")
        return None

    def _silent_peer(self) -> str | None:
        """A process whose heartbeat stopped: rank 0 watches all, the others rank 0 (and
        whoever finds one records it, so that all stop)."""
        now = time.monotonic()
        for r in self.peers if self.rank == 0 else [0]:
            if self.store.check([f"left/{r}"]):
                continue
            count = self.store.add(f"beat/{r}", 0)
            seen = self._beats.get(r)
            if seen is None or seen[0] != count:
                self._beats[r] = (count, now)
            elif now - seen[1] > SILENT_AFTER_S:
                sentence = (
                    f"process {r} of {self.world} has not answered for "
                    f"{SILENT_AFTER_S:.0f} s {_GONE}"
                )
                self._publish(r, sentence)
                return sentence
        return None

    def _stop_by_force(self) -> None:
        with self._lock:
            self.handling = True
        reason = self.trouble
        if self.terminated_at is not None:
            cause = reason or self._find_cause(3.0)
            reason = f"stopped by torchrun: {cause}" if cause else TERMINATED
        self._mark("noticed")
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        print(
            f"histoviewer: error: {reason} (this process did not stop by itself "
            f"within {STOP_GRACE_S:.0f} s and was ended)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    # --- both

    def _publish(self, rank: int, sentence: str) -> None:
        try:
            self.store.set(f"failed/{rank}", sentence.encode("utf-8", "backslashreplace"))
            self.store.add("failures", 1)
        except Exception:  # the store is gone; the others learn of it from their own
            log.debug("could not record a failure in the job's store", exc_info=True)

    def _mark(self, kind: str) -> None:
        try:
            self.store.set(f"{kind}/{self.rank}", b"1")
        except Exception:
            log.debug("could not mark %s in the job's store", kind, exc_info=True)

    def _find_cause(self, seconds: float) -> str | None:
        """Why the connection to another process broke: its failure record (written
        before it broke off), or a process whose heartbeat stopped in ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            first = {r: self.store.add(f"beat/{r}", 0) for r in self.peers}
            while True:
                found = self._failure_record()
                if found is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if found is not None:
                return found
            for r in self.peers:
                if self.store.check([f"left/{r}"]):
                    continue
                if self.store.add(f"beat/{r}", 0) == first[r]:
                    sentence = f"process {r} of {self.world} stopped unexpectedly {_GONE}"
                    self._publish(r, sentence)
                    return sentence
        except Exception as exc:
            return self._lost_store(exc)
        return None

    def _await_others(self, kinds: tuple[str, ...], seconds: float) -> None:
        """Wait until every other process has one of the marks ``kinds``, has stopped
        beating, or ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        pending = set(self.peers)
        beats: dict[int, tuple[int, float]] = {}
        try:
            while pending and time.monotonic() < deadline:
                now = time.monotonic()
                for r in list(pending):
                    if any(self.store.check([f"{kind}/{r}"]) for kind in kinds):
                        pending.discard(r)
                        continue
                    count = self.store.add(f"beat/{r}", 0)
                    if r not in beats or beats[r][0] != count:
                        beats[r] = (count, now)
                    elif now - beats[r][1] > 5 * POLL_S:
                        pending.discard(r)  # gone
                time.sleep(0.05)
        except Exception:
            log.debug("the job's store is gone", exc_info=True)

    def _lost_store(self, exc: BaseException) -> str:
        return (
            f"lost contact with the job's store at {self.where} ({_first_line(exc)}); the "
            "process or torchrun agent that hosts it has stopped"
        )


class Terminated(PeerError):
    """SIGTERM, as torchrun sends to every process when one of them has ended badly."""


def _is_connection_error(exc: BaseException) -> bool:
    """True for an error of a collective whose peer went away (gloo: 'Connection closed
    by peer'; NCCL: a remote error)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset")
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, HistoViewerError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"unexpected error: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _break_collectives(backend: str | None) -> None:
    """Leave the process group, so that processes waiting for this one in a gloo
    collective get an error at once instead of at the group's timeout. (NCCL does not
    notice; there the others' watchers stop them.)"""
    if backend != "gloo" or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group()
    except Exception:
        log.debug("leaving the process group failed", exc_info=True)
