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
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from histoviewer.device import resolve_device
from histoviewer.errors import DeviceError

log = logging.getLogger(__name__)

#: How long a collective may wait for the slowest process before the group gives up.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)

_CPU = torch.device("cpu")

_current: DistContext | None = None


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job. ``world_size == 1``: a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    backend: str | None = None  # "nccl" / "gloo"; None when single-process

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the job's files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every process has arrived here."""
        if not self.is_distributed:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of ``values`` over all processes (float64)."""
        if not self.is_distributed:
            return [float(v) for v in values]
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
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, device=self._collective_device)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

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
    global _current
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
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(
            f"process {rank} of {world} could not join the torchrun group at "
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} "
            f"({backend}): {exc}"
        ) from None
    _current = DistContext(rank, world, local_rank, chosen, backend)
    atexit.register(teardown)
    log.info("process %d of %d on %s (%s)", rank, world, chosen, backend)
    return _current


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    global _current
    if _current is not None and dist.is_initialized():
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
    joined it."""
    joined = _current is None
    ctx = setup(device, backend=backend, timeout=timeout)
    try:
        yield ctx
    finally:
        if joined:
            teardown()


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
