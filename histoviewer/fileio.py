"""Atomic file writes: a reader never sees a half-written result.

Everything the project writes (maps, exports, checkpoints, reports) goes
through :func:`atomic_write`: the data lands in a temporary file in the same
folder, is flushed to disk, and only then replaces the target with
``os.replace``. If writing fails (disk full, no permission) the previous file
is left untouched and a :class:`~histoviewer.errors.StorageError` says why.

- Temporary files have short names of a fixed length (``.hv-<host>-<pid>-<random>.tmp``),
  so any target name the file system accepts can be written; a run that is killed
  leaves one behind, and the next run in that folder (:func:`ensure_writable_dir`)
  removes those whose process is gone.
- A target that is a symbolic link is written through: the link stays and the file it
  points to is replaced. A read-only target is refused, never replaced; a replaced
  file keeps its permission bits.
- :func:`ensure_free_space` lets a long job check, before it starts, that what it
  will write fits on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from histoviewer.errors import StorageError


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

# Our temporary files: ".hv-<host>-<pid>-<random>.tmp". The host tag tells a file left by
# a process on this machine (whose pid can be checked) from one on another machine
# writing to a shared folder (a torchrun job over several nodes).
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_TEMP_RE = re.compile(r"^\.hv-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.tmp$")
# Temporary files of earlier versions were named ".<target>.<8 random>.tmp".
_OLD_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: A temporary file of another machine (or an old version) is stale after this long.
STALE_AFTER_S = 24 * 3600.0


def describe_os_error(exc: OSError) -> str:
    """What went wrong, in the words a user needs ("the disk is full", ...)."""
    code = exc.errno
    if code == errno.ENOSPC:
        return "the disk is full"
    if code == getattr(errno, "EDQUOT", None):
        return "the disk quota is used up"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if code == errno.ELOOP:
        return "it is a symbolic link loop"
    if code == errno.ENOENT:
        return "it does not exist"
    if code == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    if code == errno.EISDIR:
        return "it is a folder"
    return exc.strerror or str(exc)


def missing_reason(path: str | os.PathLike) -> str:
    """Why ``path``, which cannot be found, cannot be found: "it does not exist", "it is a
    broken symbolic link (to TARGET, which does not exist)" or "it is a symbolic link loop"."""
    path = Path(path)
    if not path.is_symlink():
        return "it does not exist"
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "it is a symbolic link loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it is a symbolic link loop"
    try:
        target = os.readlink(path)
    except OSError:
        return "it is a broken symbolic link"
    return f"it is a broken symbolic link (to {target}, which does not exist)"


def storage_error(path: Path, exc: OSError) -> StorageError:
    """A user-facing error for a failed write to ``path``."""
    return StorageError(f"cannot write {path}: {describe_os_error(exc)}")


def temp_name() -> str:
    """A fresh name for one of our temporary files (the same length for any target)."""
    return f".hv-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file made by :func:`atomic_write`."""
    return _TEMP_RE.match(name) is not None


def _resolve_target(path: Path) -> Path:
    """The file to replace: ``path``, or the file a symbolic link ``path`` points to."""
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a loop: RuntimeError before Python 3.13
        raise StorageError(f"cannot write {path}: it is a symbolic link loop") from exc


def _existing(target: Path, shown: Path) -> os.stat_result | None:
    """The status of the file being replaced (None: there is none).

    Raises StorageError for a read-only file: its owner asked for it not to change.
    """
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(shown, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise StorageError(f"cannot write {shown}: it is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"cannot write {shown}: it is not a regular file")
    # The write bits, not only os.access: an administrator may write anything.
    if not st.st_mode & 0o222 or not os.access(target, os.W_OK):
        raise StorageError(
            f"cannot write {shown}: the file is read-only (make it writable, or choose "
            "another name or folder, to replace it)"
        )
    return st


def _keep_owner(tmp: Path, old: os.stat_result) -> None:
    """Give the new file the replaced file's owner and group, where we may (an
    administrator replacing a user's file, or a user keeping a shared group)."""
    if (old.st_uid, old.st_gid) == (os.geteuid(), os.getegid()) or not hasattr(os, "chown"):
        return
    with contextlib.suppress(OSError):
        os.chown(tmp, old.st_uid, old.st_gid)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block succeeds."""
    shown = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports modes 'w' and 'wb' only")
    target = _resolve_target(shown)
    old = _existing(target, shown)
    tmp = target.parent / temp_name()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise storage_error(shown, exc) from None
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # Made private (0600) while written; then the mode of the file it replaces, or the
        # one a plain open() would give.
        if old is not None:
            _keep_owner(tmp, old)
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise storage_error(shown, exc) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` if needed and prove a file can be written in it.

    Long jobs call this before they start, so that a wrong output folder fails in
    a second rather than after an hour of work. It also removes the temporary files
    that earlier, interrupted runs left there (:func:`remove_stale_temps`).
    """
    path = Path(path).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise StorageError(f"cannot write to {path}: it is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / temp_name()
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses data, not always empty files
            os.fsync(fd)
        finally:
            os.close(fd)
            _unlink_quietly(str(probe))
    except OSError as exc:
        raise storage_error(path, exc) from None
    remove_stale_temps(path)
    return path


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete our temporary files in ``folder`` whose writer is gone; returns them.

    A temporary file of a process on this machine is stale once that process has
    ended; one of another machine (or of an older version) once it is a day old.
    Files of other programs are never touched.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        match = _TEMP_RE.match(name)
        if match is None and _OLD_TEMP_RE.match(name) is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if match is not None and match.group(1) == _HOST:
            stale = not _process_alive(int(match.group(2)))
        else:
            stale = now - st.st_mtime > STALE_AFTER_S
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by someone else
        return True
    return True


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB', 2.5e9 -> '2.3 GB' (binary units, as file managers show)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def free_space(folder: str | os.PathLike) -> int:
    """Bytes free to this user in ``folder`` (which must exist)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError as exc:
        raise storage_error(Path(folder), exc) from None


def ensure_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Raise StorageError if ``folder``'s disk has less than ``need`` bytes free (plus a
    small margin), naming ``what`` would be written. Call it before long work starts."""
    margin = 16 * 1024 * 1024
    free = free_space(folder)
    if free < need + margin:
        raise StorageError(
            f"not enough free space in {folder} for {what}: about {format_bytes(need)} "
            f"needed, {format_bytes(free)} free"
        )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[str]) -> None:
    """Write text pieces as UTF-8, atomically, without joining them in memory first;
    a name ending in ``.gz`` is gzip-compressed (QuPath reads ``.geojson.gz``)."""
    with atomic_write(path, "wb") as fh:
        if str(path).lower().endswith(".gz"):
            # filename="" and mtime=0: the same map gives the same bytes, and the
            # temporary file's name is not recorded in the header.
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                for chunk in chunks:
                    gz.write(chunk.encode("utf-8"))
        else:
            for chunk in chunks:
                fh.write(chunk.encode("utf-8"))


def _unlink_quietly(path: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
