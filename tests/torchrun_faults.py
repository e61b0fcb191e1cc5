"""Torchrun jobs with a fault planted in one process, for the tests of failing, killed
and slow processes (tests/mapping/test_batch_faults.py, tests/training/
test_distributed_training.py).

Imported, this module gives the launchers: :func:`one_node` (``torchrun --standalone``,
two processes) and :func:`two_nodes` (two torchrun agents of one process each, as on
two machines: an agent stops only its own process when it fails, and node 0's agent
hosts the job's store). Run by torchrun, it is ``histoviewer`` with the fault that
these environment variables choose, read in every process:

- ``HV_FAULT``: ``disk-full`` (the first slide this process maps raises the StorageError
  of a full disk), ``kill`` (this process kills itself with SIGKILL there),
  ``disk-full-last`` (writing ``last.pt`` after the first epoch raises that error), or
  ``slow-slide`` (mapping the slide named ``HV_SLOW_SLIDE`` waits until every other
  slide in its folder has its sidecar, or 60 s);
- ``HV_FAULT_RANK``: the process the fault strikes (default 1; any for slow-slide);
- ``HV_LONG_SLIDE_S``: the other processes' first slide takes this long, reporting
  progress every 0.1 s (a long slide, stoppable between batches as a real one is), and
  a disk-full or kill fault waits until one of them is in it (``HV_SYNC_DIR``);
- ``HV_SWALLOW``: in that long slide, a broad ``except Exception`` (as a library's
  check that an optional import works has) swallows the ``first`` exception raised,
  or ``all`` of them: the Terminated that SIGTERM raises lands there.

A struck process prints ``fault-test: fault at T`` as the fault strikes, and every
process ``fault-test: exit N at T`` when the command returns (T: time.time()).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
TIMEOUT_S = 150  # a hung job fails its test instead of blocking CI


@dataclass
class Node:
    """What one torchrun agent (and its processes) printed, and its exit status."""

    returncode: int
    stdout: str
    stderr: str

    def times(self, what: str) -> list[float]:
        """The T of this node's ``fault-test: <what> ... at T`` lines."""
        return [float(t) for t in re.findall(rf"fault-test: {what}.* at ([0-9.]+)", self.stderr)]


def one_node(args: list[str], **faults: str) -> Node:
    """``torchrun --standalone --nproc_per_node 2`` of this script with ``args``."""
    command = ["--standalone", "--nproc_per_node", "2"]
    return _run([_torchrun(command, args)], faults)[0]


def two_nodes(args: list[str], **faults: str) -> list[Node]:
    """Two torchrun agents on this machine, one process each (ranks 0 and 1)."""
    port = _free_port()
    commands = [
        _torchrun(
            [
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "static",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            args,
        )
        for node in (0, 1)
    ]
    return _run(commands, faults)


def _torchrun(options: list[str], args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *options, str(SCRIPT), *args]


def _run(commands: list[list[str]], faults: dict[str, str]) -> list[Node]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sync = tempfile.mkdtemp(prefix="histoviewer-faults-")  # for HV_LONG_SLIDE_S
    env["HV_SYNC_DIR"] = sync
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(faults)
    # This checkout's histoviewer, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Each agent in a session of its own, so that a hung job can be ended whole.
    procs = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for command in commands
    ]
    deadline = time.monotonic() + TIMEOUT_S
    nodes = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            nodes.append(Node(proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        outputs = [proc.communicate() for proc in procs]
        raise AssertionError(
            f"the job did not end within {TIMEOUT_S} s; its output:\n"
            + "\n".join(err[-3000:] for _, err in outputs)
        ) from None
    finally:
        shutil.rmtree(sync, ignore_errors=True)
    return nodes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the faults


def _strike() -> None:
    print(f"fault-test: fault at {time.time():.3f}", file=sys.stderr, flush=True)


def _install_faults() -> None:
    from histoviewer.errors import StorageError
    from histoviewer.mapping import batch
    from histoviewer.mapping.engine import MapProgress

    fault = os.environ.get("HV_FAULT", "")
    struck = int(os.environ.get("RANK", "0")) == int(os.environ.get("HV_FAULT_RANK", "1"))
    long_slide_s = float(os.environ.get("HV_LONG_SLIDE_S", "0"))
    slow_slide = os.environ.get("HV_SLOW_SLIDE", "")
    swallow = os.environ.get("HV_SWALLOW", "")
    # Made by the first process to begin its long slide; the struck process waits for it.
    begun = Path(os.environ.get("HV_SYNC_DIR", ".")) / "long-slide-begun"
    map_one = batch.map_one
    first = [True]

    def faulty_map_one(slide: Path, classifier, options, out_dir: Path, **kwargs):
        is_first, first[0] = first[0], False
        if struck and is_first and fault in ("disk-full", "kill"):
            if long_slide_s:  # strike while the others are in their long slide
                deadline = time.monotonic() + 60
                while not begun.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            _strike()
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise StorageError(f"cannot write {out_dir / slide.stem}.npz: the disk is full")
        if not struck and is_first and long_slide_s:
            progress = kwargs.get("progress")
            swallowed = 0

            def call(fn, *args) -> None:
                nonlocal swallowed
                try:
                    fn(*args)
                except Exception as exc:
                    if not swallow or (swallow == "first" and swallowed):
                        raise
                    swallowed += 1
                    if swallowed == 1:
                        print(f"fault-test: swallowed {exc!r}", file=sys.stderr, flush=True)

            begun.touch()
            for i in range(int(long_slide_s * 10)):
                if progress is not None:
                    call(progress, MapProgress(i, 10**6, 0, 10.0, None, i / 10))
                call(time.sleep, 0.1)
        if fault == "slow-slide" and slide.name == slow_slide:
            others = [p for p in slide.parent.iterdir() if p.name != slow_slide]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                batch.sidecar_path(out_dir, p).exists() for p in others
            ):
                time.sleep(0.1)
        return map_one(slide, classifier, options, out_dir, **kwargs)

    batch.map_one = faulty_map_one

    if fault == "disk-full-last" and struck:
        from histoviewer.training import trainer

        save_last = trainer.save_last

        def faulty_save_last(path, state, *args, **kwargs):
            if state.get("epoch", 0) >= 1:
                _strike()
                raise StorageError(f"cannot write {path}: the disk is full")
            return save_last(path, state, *args, **kwargs)

        trainer.save_last = faulty_save_last


if __name__ == "__main__":
    from histoviewer import cli

    _install_faults()
    code = cli.main(sys.argv[1:])
    print(f"fault-test: exit {code} at {time.time():.3f}", file=sys.stderr, flush=True)
    sys.exit(code)
