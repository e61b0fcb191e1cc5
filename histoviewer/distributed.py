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
a watcher thread in every process (:class:`~histoviewer.jobwatch.JobWatch`) beats a
heartbeat into the store and looks for such records and for processes whose heartbeat
stopped (killed, out of memory, machine down: ``jobwatch.SILENT_AFTER_S``). The failing
process leaves once the others' watchers have read its record (at most
``jobwatch.NOTICE_WAIT_S``): its end breaks off the gloo collectives they may wait in.
Their main threads learn of it at :meth:`DistContext.check` (between slides and patch
batches, before collectives) or from the broken collective, and a process that does not
stop within ``jobwatch.STOP_GRACE_S`` (stuck in an NCCL collective, say) is ended by its
watcher. The store also serves exchanges that must not block without watching for
failures:
:meth:`DistContext.claims` (work handed out as processes become free),
:meth:`DistContext.collect` and :meth:`DistContext.share`.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from histoviewer.device import resolve_device
from histoviewer.errors import DeviceError
from histoviewer.jobwatch import TERMINATED, JobWatch, Terminated

log = logging.getLogger(__name__)

#: How long a collective may wait for the slowest process before the group gives up.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_CPU = torch.device("cpu")

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
    watch: JobWatch | None = field(default=None, compare=False, repr=False)

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
    watch = JobWatch(dist.PrefixStore(prefix, store), rank, world, where, backend)
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
    previous = _catch_sigterm(watch) if watch is not None else None
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


def _catch_sigterm(watch: JobWatch) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum: int, frame: Any) -> None:
        watch.terminate()  # remembered, in case the exception below is swallowed
        raise Terminated(TERMINATED)

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
