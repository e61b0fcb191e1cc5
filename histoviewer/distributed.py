"""Running one job on several processes launched by ``torchrun`` (torch.distributed).

``torchrun`` starts one process per GPU and tells each who it is through environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). :func:`setup` reads
them, joins the process group (NCCL when the processes run on CUDA GPUs, gloo on the
CPU) and returns a :class:`DistContext`: this process's rank, the number of processes,
its own device (``cuda:LOCAL_RANK``), and the few collective helpers the trainer and the
batch mapper need. Without torchrun (or with a world of one) the same calls give a
single-process context whose helpers do nothing, so callers have one code path.

    with distributed.session("auto") as ctx:
        if ctx.is_main:
            ...  # only rank 0 writes files

Every process must make the same collective calls in the same order, or they wait on
each other until the group's timeout.

When one process fails, all stop within seconds, each saying which one failed and why
(``process 1 of 2 failed: cannot write ...: the disk is full``), rather than waiting in
a collective until the group's timeout. The processes share the job's key-value store
(the c10d store torchrun hosts). In it, :func:`session` records why a process failed;
a watcher thread in every process beats a heartbeat into the store and looks for such
records and for processes whose heartbeat stopped (killed, out of memory, machine
down: :data:`SILENT_AFTER_S`). The failing process leaves once the others' watchers
have read its record (at most :data:`NOTICE_WAIT_S`): its end breaks off the gloo
collectives they may wait in. Their main threads learn of it at
:meth:`DistContext.check` (between slides and patch batches, before collectives) or
from the broken collective, and a process that does not stop within
:data:`STOP_GRACE_S` (stuck in an NCCL collective, say) is ended by its watcher.
The store also serves exchanges that must not block without watching for failures:
:meth:`DistContext.claims` (work handed out as processes become free),
:meth:`DistContext.collect` and :meth:`DistContext.share`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from histoviewer.device import resolve_device
from histoviewer.errors import DeviceError, HistoViewerError, PeerError

log = logging.getLogger(__name__)

#: How long a collective may wait for the slowest process before the group gives up.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
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

_CPU = torch.device("cpu")
_GONE = "(killed, out of memory, or its machine is down)"

_current: DistContext | None = None
_generation = 0


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job. ``world_size == 1``: a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    backend: str | None = None  # "nccl" / "gloo"; None when single-process
    watch: _Watch | None = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the job's files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def check(self) -> None:
        """Raise PeerError if another process of the job has failed or stopped."""
        if self.watch is not None:
            self.watch.check()

    def barrier(self) -> None:
        """Wait until every process has arrived here."""
        if not self.is_distributed:
            return
        self.check()
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of ``values`` over all processes (float64)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        self.check()
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any of them."""
        return self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as process ``src`` has it (picklable objects; small ones)."""
        if not self.is_distributed:
            return obj
        self.check()
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, device=self._collective_device)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.is_distributed:
            return [obj]
        self.check()
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    # Exchanges through the store: they wait by polling, watching for failed processes.

    def claims(self, count: int, name: str) -> Iterator[int]:
        """The numbers 0 to ``count - 1``, each to the first process that asks for it.

        Work handed out as processes become free: a process that meets a slow item does
        not hold back the rest. Single-process: 0, 1, ... in order. ``name`` names the
        counter; every process must iterate to the end (until it yields no more).
        """
        if self.watch is None:
            yield from range(count)
            return
        while True:
            self.check()
            index = self.watch.store.add(f"claim/{name}", 1) - 1
            if index >= count:
                return
            yield index

    def collect(self, name: str, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` (picklable), in rank order, on rank 0; None on the others.

        Rank 0 waits for the slowest process, but stops with PeerError as soon as
        another process fails or stops.
        """
        if self.watch is None:
            return [obj]
        self.watch.post(f"collect/{name}/{self.rank}", obj)
        if not self.is_main:
            return None
        return self.watch.await_objects([f"collect/{name}/{r}" for r in range(self.world_size)])

    def share(self, name: str, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every process (the others pass nothing and wait for it,
        stopping with PeerError if a process fails or stops meanwhile)."""
        if self.watch is None:
            return obj
        key = f"share/{name}"
        if self.is_main:
            self.watch.post(key, obj)
            return obj
        return self.watch.await_objects([key])[0]

    @property
    def _collective_device(self) -> torch.device:
        # NCCL moves only CUDA tensors; gloo only CPU ones.
        return self.device if self.backend == "nccl" else torch.device("cpu")


class _Watch:
    """This process's view of the others through the job's store (see the module's
    docstring): heartbeats, failure records, and the exchanges built on them.

    Keys: ``beat/R`` (a counter), ``failed/R`` (the sentence saying why process R
    failed), ``failures`` (a counter), ``seen/R`` (R's watcher has seen a failure),
    ``noticed/R`` (R's main thread has acted on one), ``left/R`` (R has finished).
    """

    def __init__(self, store: dist.Store, rank: int, world: int, where: str) -> None:
        self.store = store
        self.rank = rank
        self.world = world
        self.where = where  # the store's address, for messages
        self.peers = [r for r in range(world) if r != rank]
        self.trouble: str | None = None  # why this process must stop, once known
        self.trouble_at = 0.0
        self.handling = False  # the main thread is acting on an error (or finishing)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beats: dict[int, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._run, name="histoviewer-watch", daemon=True)
        self._thread.start()

    # --- the main thread

    def check(self) -> None:
        if self.trouble is not None:
            raise PeerError(self.trouble)

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
        terminated = isinstance(exc, _Terminated)
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
            _break_collectives()
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
            if (
                self.trouble is not None
                and not self.handling
                and time.monotonic() - self.trouble_at > STOP_GRACE_S
            ):
                self._stop_by_force()

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
        self._mark("noticed")
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        print(
            f"histoviewer: error: {self.trouble} (this process did not stop by itself "
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


class _Terminated(PeerError):
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


def _break_collectives() -> None:
    """Leave the process group, so that processes waiting for this one in a gloo
    collective get an error at once instead of at the group's timeout. (NCCL does not
    notice; there the others' watchers stop them.)"""
    if _current is None or _current.backend != "gloo" or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group()
    except Exception:
        log.debug("leaving the process group failed", exc_info=True)


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set for more than one process."""
    return "RANK" in os.environ and _env_int("WORLD_SIZE", 1) > 1


def current() -> DistContext | None:
    """The context set up by :func:`setup` in this process, or None."""
    return _current


def setup(
    device: str | torch.device = "auto",
    *,
    backend: str | None = None,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> DistContext:
    """Join the torchrun process group (once per process) and return this process's context.

    ``device``: what the user asked for ("auto", "cpu", "cuda", ...). Under torchrun a
    CUDA request becomes ``cuda:LOCAL_RANK`` (one GPU per process); asking for a
    particular ``cuda:N`` there is an error, as is a LOCAL_RANK with no GPU of that number.
    ``backend``: force "gloo" or "nccl" (default: NCCL on CUDA, gloo otherwise).
    Without torchrun: a single-process context on ``resolve_device(device)``.
    A second call returns the first call's context. Raises DeviceError.
    """
    global _current, _generation
    if _current is not None:
        return _current
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device))
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = _rank_device(device, local_rank)
    backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
    if backend == "nccl" and chosen.type != "cuda":
        raise DeviceError("the NCCL backend needs CUDA GPUs; use gloo on the CPU")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        # The store torchrun provides (its agent's, or one rank 0 hosts), as
        # init_process_group would make it; kept for the failure records.
        store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        store.set_timeout(timeout)
        dist.init_process_group(
            backend=backend,
            store=dist.PrefixStore("default_pg", store),
            rank=rank,
            world_size=world,
            timeout=timeout,
        )
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(
            f"process {rank} of {world} could not join the torchrun group at {where} "
            f"({backend}): {exc}"
        ) from None
    # Keys apart from torch's, and from an earlier attempt of a restarted job.
    _generation += 1
    prefix = (
        f"histoviewer/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
        f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_generation}"
    )
    watch = _Watch(dist.PrefixStore(prefix, store), rank, world, where)
    _current = DistContext(rank, world, local_rank, chosen, backend, watch)
    atexit.register(teardown)
    log.info("process %d of %d on %s (%s)", rank, world, chosen, backend)
    return _current


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    global _current
    if _current is not None:
        if _current.watch is not None:
            _current.watch.close()
        if dist.is_initialized():
            dist.destroy_process_group()
    _current = None


@contextmanager
def session(
    device: str | torch.device = "auto",
    *,
    backend: str | None = None,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> Iterator[DistContext]:
    """:func:`setup` for the length of a ``with`` block; leaves the group at its end if it
    joined it.

    Under torchrun, an error that ends the block on one process ends it on all: the
    others raise PeerError ("process 1 of 2 failed: ..."), soon (see the module's
    docstring). SIGTERM (what torchrun sends the others when a process ends badly)
    raises PeerError too, saying why where the store knows; once the block is ending
    with an error, SIGTERM is ignored, so that the process can say why it stopped.
    """
    joined = _current is None
    ctx = setup(device, backend=backend, timeout=timeout)
    watch = ctx.watch if joined else None
    previous = _catch_sigterm() if watch is not None else None
    try:
        yield ctx
    except BaseException as exc:
        if watch is None:
            raise
        # On its way out now: torchrun's SIGTERM must not cut short the line saying why.
        _ignore_sigterm()
        previous = None
        raised = watch.on_error(exc)
        if raised is exc:
            raise
        raise raised from exc
    else:
        if watch is not None:
            _restore_sigterm(previous)
            previous = None
            watch.finish()
    finally:
        _restore_sigterm(previous)
        if joined:
            teardown()


def _catch_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated("stopped by a termination signal (SIGTERM)")

    return signal.signal(signal.SIGTERM, terminated)


def _ignore_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _rank_device(device: str | torch.device, local_rank: int) -> torch.device:
    requested = resolve_device(device)
    if requested.type == "mps":
        raise DeviceError("torchrun jobs run on CUDA GPUs or the CPU, not on Apple MPS")
    if requested.type != "cuda":
        return requested
    if requested.index is not None:
        raise DeviceError(
            f"device '{device}' names one GPU, but under torchrun each process uses the GPU "
            "of its LOCAL_RANK; pass --device cuda (or auto) instead"
        )
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(
            f"process with LOCAL_RANK {local_rank} has no GPU: only "
            f"{torch.cuda.device_count()} CUDA device(s) are visible on this machine "
            "(start at most that many processes per node with --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DeviceError(f"the torchrun variable {name}={text!r} is not a whole number") from None
