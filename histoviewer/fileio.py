"""Atomic file writes: a reader never sees a half-written result.

Everything the project writes (maps, exports, checkpoints, reports) goes
through :func:`atomic_write`: the data lands in a temporary file in the same
folder, is flushed to disk, and only then replaces the target with
``os.replace``. If writing fails (disk full, no permission) the previous file
is left untouched and a :class:`~histoviewer.errors.StorageError` says why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from histoviewer.errors import StorageError


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def storage_error(path: Path, exc: OSError) -> StorageError:
    """A user-facing error for a failed write to ``path``."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return StorageError(f"cannot write {path}: {why}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block succeeds."""
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports modes 'w' and 'wb' only")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise storage_error(path, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` if needed and prove a file can be written in it.

    Long jobs call this before they start, so that a wrong output folder fails in
    a second rather than after an hour of work.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise StorageError(f"cannot write to {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise storage_error(path, exc) from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
